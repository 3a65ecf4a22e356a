"""Unit: the data dir is made private, and an old one tightened (sequence.cli.datadir)."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from sequence.cli.datadir import prepare


def _mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def test_a_new_data_dir_is_0700_and_nothing_is_said(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    old = os.umask(0o022)
    try:
        assert prepare(tmp_path / "a" / "data") == []
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a" / "data") == 0o700
    assert caplog.records == []


def test_an_old_data_dir_is_tightened_keeping_owner_bits_and_links(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    (data / "runner" / "runs").mkdir(parents=True)
    (data / "sequence.db").write_text("db")
    (data / "tool").write_text("#!/bin/sh\n")
    outside = tmp_path / "outside.txt"
    outside.write_text("not ours")
    (data / "link").symlink_to(outside)
    for p, m in [(data, 0o755), (data / "runner", 0o755), (data / "runner" / "runs", 0o775),
                 (data / "sequence.db", 0o644), (data / "tool", 0o755), (outside, 0o644)]:
        os.chmod(p, m)
    with caplog.at_level(logging.WARNING):
        changed = prepare(data)
    assert len(changed) == 5
    assert [_mode(p) for p in (data, data / "runner", data / "runner" / "runs", data / "sequence.db",
                               data / "tool")] == [0o700, 0o700, 0o700, 0o600, 0o700]
    assert _mode(outside) == 0o644  # a symlink is not followed
    assert "tightened the permissions of 5 path(s)" in caplog.text
    assert prepare(data) == []  # idempotent
