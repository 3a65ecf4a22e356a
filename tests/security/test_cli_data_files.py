"""Issue 10, item 12: the data dir and its files are private to the user running Sequence.

``sequence up`` made its data dir 0755 and ``sequence.db`` 0644, so any local
user could read every log line, env and manifest.  The real binary is started
on a relative data dir with a strategy running, and every path in it is
checked; then an old world-readable data dir is tightened on start.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.harness import Platform, events

PLATFORM_FILES = ("sequence.db", "sequence.db-wal", "sequence.db-shm", "credential.key", "runner.token")
SLEEPER = "import time\nprint('{\"event\": \"up\"}', flush=True)\nwhile True:\n    time.sleep(1)\n"


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    plat = Platform(tmp_path)
    plat.data_dir = Path(".sequence")  # relative, as `sequence up` defaults to (run from plat.root)
    yield plat
    plat.close()


def _mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def _open_to_others(data_dir: Path) -> list[str]:
    """Paths in *data_dir* that group or other may access, as "mode path".

    A run's workspace is the runner's exception by design: the sandboxed
    strategy may run as another uid and must read it; its run directory,
    which encloses it, must be 0700, so no other user can reach it."""
    bad = []
    for root, dirs, files in os.walk(data_dir):
        for name in [*dirs, *files]:
            p = Path(root, name)
            rel = p.relative_to(data_dir).parts
            if os.path.islink(p):
                continue
            if rel[:2] == ("runner", "runs") and len(rel) >= 4 and rel[3] == "workspace":
                assert _mode(data_dir.joinpath(*rel[:3])) == 0o700, p
                continue
            if _mode(p) & 0o077:
                bad.append(f"{_mode(p):o} {p}")
    return bad


def _start_a_strategy(plat: Platform) -> None:
    folder = plat.root / "sleeper"
    folder.mkdir()
    (folder / "main.py").write_text(SLEEPER)
    plat.deploy(folder, "--name", "sleeper")
    plat.wait_for_records("sleeper", lambda recs: events(recs, "up"), "its first line")


def test_up_creates_a_private_data_dir_and_private_files(platform: Platform) -> None:
    platform.start()
    data = platform.root / ".sequence"
    assert _mode(data) == 0o700
    assert _mode(data / "sequence.db") == 0o600
    _start_a_strategy(platform)
    assert (data / "runner").is_dir()
    assert any((data / "runner" / "runs").iterdir()), "no run directory to check"
    for name in PLATFORM_FILES:
        if (data / name).exists():
            assert _mode(data / name) == 0o600, name
    assert _open_to_others(data) == []
    assert platform.interrupt() == 0


def test_up_tightens_an_old_world_readable_data_dir(platform: Platform) -> None:
    platform.start()
    assert platform.interrupt() == 0
    data = platform.root / ".sequence"
    # What an older version left: 0755 directories, 0644 files (a spool of a dead runner too).
    spool = data / "runner" / "runs" / "old-run" / "logs" / "stdout.spool"
    spool.parent.mkdir(parents=True, exist_ok=True)
    spool.write_text("an old line\n")
    for root, dirs, files in os.walk(data):
        for d in dirs:
            os.chmod(Path(root, d), 0o755)
        for f in files:
            os.chmod(Path(root, f), 0o644)
    os.chmod(data, 0o755)
    assert _open_to_others(data)

    platform.start()
    deadline = time.monotonic() + 30  # the local runner's token is written once the server is up
    while not (data / "runner.token").exists():
        assert time.monotonic() < deadline, platform.up_log(tail=50)
        time.sleep(0.05)
    assert _mode(data) == 0o700
    for name in ("sequence.db", "credential.key", "runner.token"):
        assert _mode(data / name) == 0o600, name
    assert _open_to_others(data) == []
    assert platform.interrupt() == 0
    assert "tightened the permissions of" in platform.up_log(tail=400)
