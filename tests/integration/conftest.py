"""A coordinator plus real runner daemons (the `sequence runner` binary)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import LiveServer, create_body, start_server

SEQ = str(Path(sys.executable).parent / "sequence")


class Runner:
    def __init__(self, server: LiveServer, data_dir: Path, region: str = "us-east-1,eu-west-1",
                 capacity: int = 20, env: dict[str, str] | None = None, token: str | None = None) -> None:
        if token is None:
            _tid, token = server.core.store.create_runner_token("test")
        self.token = token
        e = {k: v for k, v in os.environ.items() if not k.startswith("SEQUENCE_")}
        e.update(env or {})
        e["SEQUENCE_RUNNER_TOKEN"] = token
        self.log_path = data_dir / "runner.log"
        data_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [SEQ, "runner", "--api-url", server.url, "--region", region, "--capacity", str(capacity),
             "--data-dir", str(data_dir)], env=e, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig) if sig == signal.SIGKILL else self.proc.send_signal(sig)

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Factory: platform(**settings) -> (server, runner-factory)."""
    servers: list[LiveServer] = []
    runners: list[Runner] = []

    def make(**settings: Any) -> LiveServer:
        srv = start_server(tmp_path / "data", environ={}, **settings)
        servers.append(srv)
        return srv

    def runner(srv: LiveServer, name: str = "r1", **kw: Any) -> Runner:
        r = Runner(srv, tmp_path / name, **kw)
        runners.append(r)
        return r

    make.runner = runner  # type: ignore[attr-defined]
    yield make
    for r in runners:
        r.stop()
    for s in servers:
        s.stop()


def deploy(c: httpx.Client, name: str, main: str, **extra: Any) -> dict[str, Any]:
    r = c.post("/v1/strategies", json=create_body(name=name, files={"main.py": main}, start=True, **extra))
    assert r.status_code in (200, 201), r.text
    out: dict[str, Any] = r.json()
    return out


def wait_for(pred: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def strategy(c: httpx.Client, sid: str) -> dict[str, Any]:
    out: dict[str, Any] = c.get(f"/v1/strategies/{sid}").json()
    return out


def all_lines(c: httpx.Client, sid: str, run_id: str | None = None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after = 0
    while True:
        params: dict[str, Any] = {"after_seq": after, "limit": 10000}
        if run_id:
            params["run_id"] = run_id
        r = c.get(f"/v1/strategies/{sid}/logs", params=params).json()
        out.extend(r["lines"])
        if len(r["lines"]) < 10000:
            return out
        after = r["next_seq"]
        run_id = r["run_id"]
