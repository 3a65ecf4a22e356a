"""``sequence up`` — the whole platform on one machine.

Coordinator (SQLite under --data-dir), the simulated venues, and one local
runner, with a local client bootstrapped on first start and the CLI config
written so the next ``sequence strategy …`` needs no flags.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import uvicorn

from sequence.api.app import build_core, create_app
from sequence.api.server import CoordinatorServer
from sequence.api.state import Core
from sequence.cli import config as cfgmod
from sequence.cli import datadir, lifeline
from sequence.cli.output import console, fail
from sequence.secrets import SealingError
from sequence.settings import Settings, SettingsError, parse_venues, redacted_url

log = logging.getLogger("sequence.up")

LOCAL_CLIENT = "local"


def bootstrap(core: Core, environ: dict[str, str] | None = None, *, write_config: bool = True) -> dict[str, Any]:
    """Create the local client and its keys on first start; keep the CLI config pointing here."""
    store = core.store
    info: dict[str, Any] = {"created": False}
    if store.get_client(LOCAL_CLIENT) is None:
        store.create_client("local", client_id=LOCAL_CLIENT)
        _r, live = store.create_api_key(LOCAL_CLIENT, "live", "sequence up (live)")
        _r, test = store.create_api_key(LOCAL_CLIENT, "test", "sequence up (test)")
        info.update(created=True, live_key=live, test_key=test)
    if write_config:
        cfg = cfgmod.load(environ if environ is not None else dict(os.environ))
        api_url = core.settings.api_url
        existing = cfgmod.read_file(cfgmod.config_path(environ))
        ok = existing.get("api_key") and store.authenticate(existing["api_key"]) is not None
        # The test key too: after `up` in another folder (another store), the live key was renewed
        # here but the test key stayed the other platform's, and was refused (401).
        test_ok = existing.get("test_api_key") and store.authenticate(existing["test_api_key"]) is not None
        if info["created"]:
            cfgmod.save({"api_url": api_url, "api_key": info["live_key"], "test_api_key": info["test_key"]}, environ)
            info["config_written"] = True
        elif not ok or not test_ok:
            fresh: dict[str, Any] = {"api_url": api_url}
            if not ok:
                _r, fresh["api_key"] = store.create_api_key(LOCAL_CLIENT, "live", "sequence up (config refresh)")
            if not test_ok:
                _r, fresh["test_api_key"] = store.create_api_key(LOCAL_CLIENT, "test", "sequence up (config refresh)")
            cfgmod.save(fresh, environ)
            info["config_written"] = True
        elif existing.get("api_url") != api_url:
            cfgmod.save({"api_url": api_url}, environ)
            info["config_written"] = True
        info["config_path"] = str(cfg.path)
    return info


def runner_token(core: Core, data_dir: Path) -> str:
    """The local runner's token, kept in the data dir (mode 0600) across restarts."""
    path = data_dir / "runner.token"
    if path.exists():
        tok = path.read_text().strip()
        if core.store.authenticate_runner(tok):
            return tok
    _tid, tok = core.store.create_runner_token("local runner")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(tok + "\n")
    return tok


def start_runner(settings: Settings, token: str, region: str, capacity: int, *,
                 unsandboxed: bool = False) -> subprocess.Popen[bytes]:
    """Start the local runner; it dies with this process (see :mod:`sequence.cli.lifeline`),
    so call this from a thread that lives as long as the runner should."""
    env = dict(os.environ)
    env["SEQUENCE_RUNNER_TOKEN"] = token
    lifeline.child_environ(env)
    cmd = [sys.executable, "-m", "sequence.cli.main", "runner", "--api-url", settings.api_url,
           "--region", region, "--capacity", str(capacity), "--data-dir", str(settings.data_dir / "runner")]
    if unsandboxed:
        cmd.append("--unsandboxed")
    return subprocess.Popen(cmd, env=env, start_new_session=True)


def _listen(host: str, port: int) -> socket.socket:
    """Bind the coordinator's port up front: a busy port is a clear message, not a traceback."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(fam, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            fail(f"port {port} on {host} is already in use",
                 "is Sequence already running? (`sequence strategy list` talks to it) — or start this one "
                 "on another port: --port N, or SEQUENCE_PORT=N (e.g. `SEQUENCE_PORT=8701 make run`)")
        fail(f"cannot listen on {host}:{port}: {exc.strerror}", "pick another address with --host / --port")
    sock.listen(2048)
    return sock


def _check_isolation(settings: Settings, unsandboxed: bool) -> None:
    """Before anything starts: refuse to run strategies unsandboxed unless asked;
    print what is missing (above the banner) when isolation is not full."""
    from sequence.cli.runner import NO_BWRAP_HINT, _sandbox

    # A level below full is logged by the check itself, with every missing protection.
    report = _sandbox(settings.data_dir / "runner", None, unsandboxed).check()
    if not report.can_run:
        fail("strategies cannot run on this host:\n" + "\n".join(report.errors), NO_BWRAP_HINT, code=2)


def run_up(data_dir: Path, host: str, port: int, *, runner: bool, runner_region: str, runner_capacity: int,
           replay: Path | None, seed: int | None, unsandboxed: bool = False, venues: str | None = None) -> None:
    datadir.private_umask()  # before anything is created: the store, the key, the runner's files
    try:
        settings = Settings.from_env(data_dir=data_dir, host=host, port=port, market_replay=replay, market_seed=seed,
                                     venues=parse_venues(venues) if venues else None)
    except SettingsError as exc:
        fail(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # migrations are not news
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per venue request otherwise
    sock = _listen(host, port)
    datadir.prepare(settings.data_dir)
    if runner:
        _check_isolation(settings, unsandboxed)
    try:
        core = build_core(settings)
    except SealingError as exc:  # the credential key: missing, unreadable, or not the store's
        fail(str(exc), "see docs/operations.md (backups and the credential key)")
    except Exception as exc:
        fail(f"cannot open the store at {redacted_url(settings.effective_database_url)}: {exc}")
    datadir.write_store_marker(settings.data_dir, redacted_url(settings.effective_database_url))
    info = bootstrap(core)
    try:
        app = create_app(settings, core=core)
    except SettingsError as exc:  # e.g. an unreadable SEQUENCE_KALSHI_PRIVATE_KEY_FILE
        fail(str(exc), "see docs/configuration.md")
    proc: subprocess.Popen[bytes] | None = None

    class _Server(CoordinatorServer):
        """Ctrl-C stops the runner first (its strategies get SIGTERM and their last
        logs and exits still reach the coordinator), then the coordinator."""

        stopping = False

        def handle_exit(self, sig: int, frame: Any) -> None:
            if self.stopping or proc is None or proc.poll() is not None:
                super().handle_exit(sig, frame)
                return
            self.stopping = True
            console.print("stopping the runner and its strategies …")
            runner_proc = proc

            def _stop_runner() -> None:
                _terminate(runner_proc)
                super(_Server, self).handle_exit(sig, None)

            threading.Thread(target=_stop_runner, daemon=True).start()

    server = _Server(core=core, config=uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on",
                                    ws_ping_interval=10, ws_ping_timeout=20, timeout_graceful_shutdown=5,
                                    ws_max_size=1 << 20))  # a subscribe needs kilobytes; 16 MiB frames held the loop

    def _after_start() -> None:
        nonlocal proc
        while not server.started and not server.should_exit:
            threading.Event().wait(0.05)
        if server.should_exit:
            return
        if runner:
            proc = start_runner(settings, runner_token(core, settings.data_dir), runner_region, runner_capacity,
                                unsandboxed=unsandboxed)
        console.print(f"[bold green]Sequence is up[/] at [bold]{settings.api_url}[/]  (data in {settings.data_dir})")
        console.print(f"  dashboard: [bold]{settings.api_url}/dashboard[/]  (sign in with an API key)")
        if "live" in settings.venues.values():
            modes = ", ".join(f"{v} {m}" for v, m in settings.venues.items())
            console.print(f"market data: {modes} (each venue's connection: GET /v1/venues)")
        if info.get("created"):
            console.print(f"  local client '{LOCAL_CLIENT}' created; live key and test key saved to {info['config_path']}")
        if runner:
            console.print(f"  local runner: region {runner_region}, capacity {runner_capacity}"
                          + ("  [bold red](UNSANDBOXED)[/]" if unsandboxed else ""))
        console.print("  next: [bold]sequence strategy deploy ./my-strategy --start[/]   (Ctrl-C stops everything)")
        if proc is not None:
            # The runner's parent-death signal fires when the thread that forked it
            # exits, not the process: park this (daemon) thread until the process ends.
            threading.Event().wait()

    threading.Thread(target=_after_start, daemon=True).start()
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass  # uvicorn re-raises Ctrl-C after its graceful shutdown; that is our clean stop
    finally:
        if proc is not None:
            _terminate(proc)
        core.store.db.dispose()
        console.print("stopped")


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()

