"""The README, as written: its run command, then its quick start, in a fresh copy.

A green suite once hid a README that ran no strategy: every test passed an
absolute data dir, while ``make run`` uses the relative ``.sequence``. This
test copies the repository to a temporary folder, runs the README's run
command there (so the data dir is relative, as a user's is), then runs the
README's quick-start block verbatim with bash and checks the strategy's first
lines arrive. It reads the README's code blocks, so README and reality cannot
drift apart: change one and this test follows it (or fails).

Only the environment differs from a user's terminal: a private HOME (the CLI
config ``sequence up`` writes goes there), a free port in SEQUENCE_PORT (a
platform the developer runs on 8700 is left alone), and the virtualenv is the
one this suite runs in (linked, not rebuilt).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.acceptance.harness import ROOT, clean_env, free_port

pytestmark = pytest.mark.slow

README = ROOT / "README.md"


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"```(?:bash|sh|shell)\n(.*?)```", text, flags=re.S)


def run_command(blocks: list[str]) -> str:
    """The README's command that runs the platform (`make run …`), without its comment."""
    for block in blocks:
        for line in block.splitlines():
            cmd = line.split("#", 1)[0].strip()
            if cmd.startswith("make run"):
                return cmd
    raise AssertionError("the README has no `make run` command in a bash block")


def quick_start(blocks: list[str]) -> str:
    """The README's first block that deploys a strategy and reads its logs."""
    for block in blocks:
        if "sequence strategy deploy" in block and "sequence strategy logs" in block:
            return block
    raise AssertionError("the README has no quick-start block (deploy, then logs)")


def copy_repository(dest: Path) -> None:
    """The tracked files (as a fresh clone has them), times kept; the virtualenv linked."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        src = ROOT / rel
        if not src.is_file():
            continue  # deleted in the working tree
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel, follow_symlinks=False)
    (dest / ".venv").symlink_to(ROOT / ".venv")
    # make must not reinstall into the linked virtualenv (it would point it at this copy).
    stamp = (ROOT / ".venv" / ".installed").stat().st_mtime
    os.utime(dest / "pyproject.toml", (stamp - 60, stamp - 60))


def test_the_readme_quick_start_runs_as_written(tmp_path: Path) -> None:
    blocks = bash_blocks(README.read_text())
    run, start = run_command(blocks), quick_start(blocks)
    repo, home = tmp_path / "sequence", tmp_path / "home"
    repo.mkdir()
    home.mkdir()
    copy_repository(repo)
    env = clean_env(home, {"SEQUENCE_PORT": str(free_port())})
    log_path = tmp_path / "run.log"
    with log_path.open("wb") as log:
        platform = subprocess.Popen(["bash", "-c", run], cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while "Sequence is up" not in log_path.read_text(errors="replace"):
            assert platform.poll() is None, f"`{run}` exited {platform.returncode}:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, f"`{run}` did not come up:\n{log_path.read_text()}"
            time.sleep(0.2)
        # The quick start, verbatim; bounded as a whole (its `logs --follow` ends when the
        # strategy does, which this bound only guards).
        try:
            out = subprocess.run(["bash", "-e", "-c", start], cwd=repo, env=env, capture_output=True, text=True,
                                 timeout=120)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"the quick start did not finish:\n{exc.stdout}\n{exc.stderr}\n"
                                 f"{log_path.read_text()}") from None
        assert out.returncode == 0, f"{out.stdout}\n{out.stderr}\n{log_path.read_text()}"
        assert '{"event": "boot", "healthy": true}' in out.stdout, out.stdout + out.stderr
        assert '{"event": "btc", "quote": {"bid":' in out.stdout, out.stdout + out.stderr
        assert (repo / ".sequence" / "sequence.db").exists(), "the data dir is the relative .sequence"
        assert "Traceback" not in log_path.read_text(errors="replace")
    finally:
        if platform.poll() is None:
            os.killpg(platform.pid, signal.SIGINT)
            try:
                platform.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(platform.pid, signal.SIGKILL)
                platform.wait()
    leftovers = subprocess.run(["pgrep", "-f", str(repo)], capture_output=True, text=True).stdout.split()
    assert leftovers == [], f"processes left running: {leftovers}"
