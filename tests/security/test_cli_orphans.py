"""Issue 10, item 14: a SIGKILLed ``sequence up`` takes its runner and strategies with it.

Before, the runner child kept running (and heartbeating, and its strategies
trading) as an orphan until a later ``sequence up`` cleaned up.  The real
binary is started, a long-running strategy (examples/daemon) deployed and
seen running, ``sequence up`` is SIGKILLed, and every process it had started
must be gone within a bounded time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.acceptance.harness import EXAMPLES, Platform, events, stage
from tests.cli.test_cli import SEQ

GONE_WITHIN_S = 15.0


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    plat = Platform(tmp_path)
    yield plat
    plat.close()


def _alive(p: psutil.Process) -> bool:
    try:
        return bool(p.is_running() and p.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _describe(p: psutil.Process) -> str:
    try:
        return f"{p.pid} {' '.join(p.cmdline())[:120]}"
    except psutil.Error:
        return str(p.pid)


def test_sigkilled_up_takes_its_runner_and_strategies_with_it(platform: Platform) -> None:
    platform.start()
    folder = stage(EXAMPLES / "daemon", platform.root / "daemon")
    platform.deploy(folder)
    platform.wait_for_records("daemon", lambda recs: events(recs, "heartbeat"), "a heartbeat")
    assert platform.proc is not None
    descendants = psutil.Process(platform.proc.pid).children(recursive=True)
    cmdlines = [" ".join(p.cmdline()) for p in descendants]
    assert any(" runner " in c for c in cmdlines), cmdlines
    assert any(c.endswith("main.py") for c in cmdlines), cmdlines  # the strategy itself
    try:
        platform.proc.send_signal(signal.SIGKILL)
        platform.proc.wait(timeout=10)
        deadline = time.monotonic() + GONE_WITHIN_S
        while (left := [p for p in descendants if _alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert left == [], "outlived a SIGKILLed `sequence up`:\n" + "\n".join(map(_describe, left))
        assert platform.leftover_processes() == []
    finally:
        for p in descendants:  # never leave a failed test's orphans behind
            if _alive(p):
                p.kill()


def test_runner_whose_parent_died_before_it_armed_the_signal_does_not_start(tmp_path: Path) -> None:
    """The race: `sequence up` dies between forking the runner and the runner's prctl."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEQUENCE_")}
    env.update(HOME=str(tmp_path), SEQUENCE_RUNNER_TOKEN="seq_runner_x", SEQUENCE_RUNNER_PARENT_PID="1")
    p = subprocess.run([SEQ, "runner", "--api-url", "http://127.0.0.1:9", "--data-dir", str(tmp_path / "r")],
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "parent process 1 is gone" in p.stderr, p.stderr
    assert not (tmp_path / "r").exists()  # it stopped before doing anything
