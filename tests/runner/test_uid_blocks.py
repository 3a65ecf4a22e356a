"""Root runners on one host never share sandbox uids.

Each root runner's strategies run as host uids from a block of 4,096 picked by
hashing its data dir: two runners whose dirs hashed to one block (1 pair in
4,096) gave their strategies the same uids, so the kernel's per-user counts
(inotify, keys, message queues, user namespaces) were shared. Each runner now holds its block with an flock in
/run/sequence/uid-blocks and takes the next free one if another holds it.
"""

from __future__ import annotations

import gc
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sequence.runner import sandbox as sandbox_mod
from sequence.runner.sandbox import UID_BLOCKS, Sandbox, SandboxConfig, claim_uid_block

HOLD = """
import sys, time
from pathlib import Path
from sequence.runner.sandbox import claim_uid_block
block, fd = claim_uid_block(int(sys.argv[1]), Path(sys.argv[2]))
print(block, fd is not None, flush=True)
time.sleep(60)
"""


def _block_of(data_dir: Path) -> int:
    return int(hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12], 16) % UID_BLOCKS


def test_a_block_held_by_another_process_is_skipped_and_freed_when_it_ends(tmp_path: Path) -> None:
    locks = tmp_path / "locks"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, "4095", str(locks)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().split() == ["4095", "True"]
        block, fd = claim_uid_block(4095, locks)
        assert (block, fd is not None) == (0, True)  # the next one, wrapping around
        assert fd is not None
        again, fd2 = claim_uid_block(0, locks)  # this process's own claim counts too
        assert again == 1 and fd2 is not None
        os.close(fd2)
    finally:
        holder.kill()
        holder.communicate()
    mine, fd3 = claim_uid_block(4095, locks)  # its holder is gone: free again
    assert mine == 4095 and fd3 is not None
    os.close(fd3)
    os.close(fd)


def test_without_a_usable_lock_dir_the_preferred_block_is_used(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    assert claim_uid_block(12, not_a_dir / "locks") == (12, None)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runners give runs their own host uids")
def test_two_root_runners_whose_data_dirs_collide_get_different_uids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox_mod, "UID_LOCK_DIR", tmp_path / "locks")
    first_dir = tmp_path / "runner-0"
    want = _block_of(first_dir)
    other = next(d for i in range(1, 1_000_000) if _block_of(d := tmp_path / f"runner-{i}") == want)
    a = Sandbox(SandboxConfig(data_dir=first_dir))
    b = Sandbox(SandboxConfig(data_dir=other))
    assert a.uid_block == want and b.uid_block == (want + 1) % UID_BLOCKS
    assert a._uid_first != b._uid_first
    del a
    gc.collect()  # its lock is released with it
    c = Sandbox(SandboxConfig(data_dir=other))
    assert c.uid_block == want
