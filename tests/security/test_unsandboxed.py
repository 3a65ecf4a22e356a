"""Secure by default: no bubblewrap, no strategies — unless the operator says --unsandboxed,
and then every deploy, inspect and run log says the run is not isolated."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.acceptance.harness import SEQUENCE, clean_env, free_port

pytestmark = pytest.mark.slow

NO_BWRAP = {"SEQUENCE_RUNNER_BWRAP": "/nonexistent/bwrap"}


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SEQUENCE), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_without_bubblewrap_up_refuses_and_says_how_to_fix(tmp_path: Path) -> None:
    env = clean_env(tmp_path, NO_BWRAP)
    out = subprocess.run([str(SEQUENCE), "up", "--port", str(free_port())], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Sequence is up" not in out.stdout
    assert "bubblewrap" in out.stderr and "apt-get install bubblewrap" in out.stderr
    assert "--unsandboxed" in out.stderr and "sequence doctor" in out.stderr
    assert "Traceback" not in out.stderr


def test_without_bubblewrap_the_runner_refuses(tmp_path: Path) -> None:
    out = _cli(["runner", "--check"], clean_env(tmp_path, NO_BWRAP), tmp_path)
    assert out.returncode == 2 and "bubblewrap is required but unusable" in out.stdout + out.stderr
    out = _cli(["runner", "--check", "--unsandboxed"], clean_env(tmp_path, NO_BWRAP), tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr


def test_unsandboxed_runs_say_so_everywhere(tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(tmp_path / "home", NO_BWRAP)
    (tmp_path / "home").mkdir()
    log = (tmp_path / "up.log").open("wb")
    up = subprocess.Popen([str(SEQUENCE), "up", "--port", str(port), "--unsandboxed"], env=env, cwd=tmp_path,
                          stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        # The banner's last line ("next: …"): the runner's UNSANDBOXED mark is printed after "Sequence is up".
        while "next: sequence strategy deploy" not in (tmp_path / "up.log").read_text():
            assert up.poll() is None, (tmp_path / "up.log").read_text()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        banner = (tmp_path / "up.log").read_text()
        # the degraded block comes before the banner
        assert banner.index("MISSING  filesystem") < banner.index("Sequence is up") and "UNSANDBOXED" in banner
        folder = tmp_path / "s"
        folder.mkdir()
        (folder / "main.py").write_text("print('hello', flush=True)\n")
        (folder / "Sequence.toml").write_text('[strategy]\nname = "bare"\n')
        # wait until the runner registered, so the deploy can say where it will run
        deadline = time.monotonic() + 30
        while _cli(["strategy", "list", "--json"], env, folder).returncode != 0:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        deadline = time.monotonic() + 30
        while True:
            dep = _cli(["strategy", "deploy", ".", "--start"], env, folder)
            if "NOT isolated" in dep.stdout or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert dep.returncode == 0 and "warning:" in dep.stdout and "NOT isolated" in dep.stdout, dep.stdout
        logs = _cli(["strategy", "logs", "bare", "--follow", "--json"], env, folder)
        recs = [json.loads(x) for x in logs.stdout.splitlines() if x.strip()]
        assert recs[0]["stream"] == "system" and "NOT isolated" in recs[0]["line"], recs
        assert any(r["line"] == "hello" for r in recs)
        inspect = json.loads(_cli(["strategy", "inspect", "bare", "--json"], env, folder).stdout)
        assert inspect["isolation"]["level"] in ("none", "partial")
        assert "NOT isolated" in inspect["isolation"]["warning"]
        human = _cli(["strategy", "inspect", "bare"], env, folder).stdout
        assert "NOT isolated" in human
        assert httpx.get(f"http://127.0.0.1:{port}/v1/health").status_code == 200
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            up.kill()
        log.close()
