"""Drive the real ``sequence`` binary as a user would: ``sequence up`` in a
subprocess on a fresh data dir, then ``sequence strategy …`` commands.

The user's own configuration is never touched: every subprocess gets a
private ``HOME`` and ``XDG_CONFIG_HOME`` and an environment with every
``SEQUENCE_*`` variable (and the credential key variables) removed, so only
what ``sequence up`` writes is used.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SEQUENCE = Path(sys.executable).parent / "sequence"

#: The product document's Sequence.toml for the end-to-end example, verbatim.
SEED_TOML = """\
[strategy]
name = "e2e-pred-test"
runtime = "python"

[hosted]
entrypoint = "main.py"

[hosted.placement]
latency_target = ["coinbase"]
"""

Record = dict[str, Any]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without SEQUENCE_* and credential keys, in a private home."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SEQUENCE_") and not k.startswith("CREDENTIAL_ENCRYPTION_KEY")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), NO_COLOR="1", COLUMNS="200",
               PYTHONUNBUFFERED="1")
    env.update(extra or {})
    return env


def parse_records(text: str) -> list[Record]:
    """The JSON object lines of a log; anything else (a traceback, say) is skipped."""
    out: list[Record] = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def events(records: Iterable[Record], name: str) -> list[Record]:
    return [r for r in records if r.get("event") == name]


def stage(src: Path, dest: Path) -> Path:
    """Copy an example folder (or single file as main.py) into a fresh folder."""
    if src.is_dir():
        shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    else:
        dest.mkdir(parents=True)
        shutil.copy(src, dest / "main.py")
    return dest


class CommandFailed(AssertionError):
    pass


class Platform:
    """``sequence up --data-dir D --port P`` in a subprocess, and a CLI bound to it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.data_dir = root / "data"
        self.home.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = clean_env(self.home)
        self.log_path = root / "sequence-up.log"
        self.proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> Platform:
        assert SEQUENCE.exists(), f"{SEQUENCE} is missing: install the package (make venv)"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [str(SEQUENCE), "up", "--data-dir", str(self.data_dir), "--port", str(self.port)],
            cwd=self.root, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"`sequence up` exited with {self.proc.returncode}:\n{self.up_log()}")
            try:
                r = httpx.get(f"{self.url}/v1/health", timeout=2.0)
                if r.status_code == 200 and r.json().get("ok") is True:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"`sequence up` not healthy after {timeout:.0f} s:\n{self.up_log()}")
            time.sleep(0.1)
        # `sequence up` writes the CLI config once it has bootstrapped the local client.
        cfg = self.home / ".config" / "sequence" / "config.toml"
        while not cfg.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"`sequence up` wrote no CLI config at {cfg}:\n{self.up_log()}")
            time.sleep(0.05)
        return self

    def interrupt(self, timeout: float = 60.0) -> int:
        """Ctrl-C: SIGINT to `sequence up`; returns its exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"`sequence up` did not exit {timeout:.0f} s after SIGINT:\n"
                                     f"{self.up_log()}") from None
        self._log.close()
        return self.proc.returncode

    def close(self) -> None:
        """Best-effort teardown for fixtures (a test that passed already interrupted it)."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.interrupt(timeout=30)
            except AssertionError:
                pass
        if self.proc is not None and not self._log.closed:
            self._log.close()

    def leftover_processes(self) -> list[str]:
        """Processes still using the data dir (the runner, strategies), as "pid cmdline"."""
        import psutil

        marker = str(self.data_dir)
        out = []
        for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
            try:
                cmd = " ".join(proc.info["cmdline"] or [])
                if marker in cmd or (proc.info["cwd"] or "").startswith(marker):
                    out.append(f"{proc.info['pid']} {cmd}")
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return out

    def up_log(self, tail: int = 80) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-tail:])

    @property
    def api_key(self) -> str:
        """The live key `sequence up` saved in the (private) CLI config."""
        cfg = tomllib.loads((self.home / ".config" / "sequence" / "config.toml").read_text())
        return str(cfg["api_key"])

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.api_key}"}, timeout=30)

    # -- the CLI --------------------------------------------------------------------------
    def cli(self, *args: str, timeout: float = 60.0, check: bool = True,
            cwd: Path | None = None, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        cmd = [str(SEQUENCE), *args]
        try:
            res = subprocess.run(cmd, cwd=cwd or self.root, env={**self.env, **(env or {})},
                                 capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise CommandFailed(f"`sequence {' '.join(args)}` did not finish in {timeout:.0f} s\n"
                                f"--- stdout ---\n{_text(exc.stdout)}\n--- stderr ---\n{_text(exc.stderr)}\n"
                                f"--- sequence up ---\n{self.up_log()}") from None
        if check and res.returncode != 0:
            raise CommandFailed(f"`sequence {' '.join(args)}` exited {res.returncode}\n"
                                f"--- stdout ---\n{res.stdout}\n--- stderr ---\n{res.stderr}\n"
                                f"--- sequence up ---\n{self.up_log()}")
        return res

    def cli_json(self, *args: str, **kw: Any) -> Any:
        return json.loads(self.cli(*args, "--json", **kw).stdout)

    def deploy(self, folder: Path, *extra: str, start: bool = True) -> Record:
        args = ["strategy", "deploy", str(folder), *extra]
        if start:
            args.append("--start")
        return dict(self.cli_json(*args))

    def follow(self, name: str, timeout: float = 120.0) -> tuple[str, list[Record]]:
        """`sequence strategy logs NAME --follow` until it ends by itself."""
        res = self.cli("strategy", "logs", name, "--follow", timeout=timeout)
        return res.stdout, parse_records(res.stdout)

    def logs(self, name: str) -> list[Record]:
        return parse_records(self.cli("strategy", "logs", name).stdout)

    def inspect(self, name: str) -> Record:
        return dict(self.cli_json("strategy", "inspect", name))

    def wait_for(self, name: str, predicate: Any, what: str, timeout: float = 60.0) -> Record:
        """Poll `inspect` until ``predicate(strategy)`` holds."""
        deadline = time.monotonic() + timeout
        while True:
            s = self.inspect(name)
            if predicate(s):
                return s
            if time.monotonic() > deadline:
                raise AssertionError(f"{name}: {what} not reached in {timeout:.0f} s; last state: "
                                     f"{json.dumps(s, indent=1)}\n--- sequence up ---\n{self.up_log()}")
            time.sleep(0.25)

    def wait_for_records(self, name: str, predicate: Any, what: str, timeout: float = 60.0) -> list[Record]:
        """Poll `logs` (not following) until ``predicate(records)`` holds."""
        deadline = time.monotonic() + timeout
        while True:
            recs = self.logs(name)
            if predicate(recs):
                return recs
            if time.monotonic() > deadline:
                raise AssertionError(f"{name}: {what} not seen in {timeout:.0f} s; records: {recs}\n"
                                     f"--- sequence up ---\n{self.up_log()}")
            time.sleep(0.25)


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def only(records: Sequence[Record], name: str) -> Record:
    found = events(records, name)
    assert len(found) == 1, f"expected one {name!r} record, got {len(found)}: {records}"
    return found[0]
