"""The runner reads bubblewrap's ``--info-fd`` with poll(), not select().

Before: ``_confine`` used ``select.select``, which refuses a descriptor numbered
1,024 or more; a runner with a few hundred runs holds that many, so every start
past ~170 runs on one runner failed ("runner error: ValueError") and the
density benchmark never had its strategies running.
"""

from __future__ import annotations

import json
import os
import resource
from collections.abc import Iterator

import pytest

from sequence.runner.process import _confine


class _Cgroup:
    def __init__(self) -> None:
        self.pids: list[int] = []

    def attach(self, pid: int) -> None:
        self.pids.append(pid)


@pytest.fixture
def high_fd() -> Iterator[int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 1500
    if hard != resource.RLIM_INFINITY and hard <= want:
        pytest.fail(f"RLIMIT_NOFILE hard limit {hard} is too low for this test")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want + 1), hard))
    yield want
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_sandbox_pid_is_read_from_a_descriptor_above_1024(high_fd: int) -> None:
    r, w = os.pipe()
    os.dup2(r, high_fd)
    os.close(r)
    try:
        os.write(w, json.dumps({"child-pid": 4242}).encode())
        os.close(w)
        cg, out = _Cgroup(), []
        _confine(cg, 4241, high_fd, out)  # type: ignore[arg-type]
        assert cg.pids == [4241, 4242] and out == [4242]
    finally:
        os.close(high_fd)
