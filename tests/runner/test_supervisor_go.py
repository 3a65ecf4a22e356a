"""The supervisor's --go: nothing of the strategy starts until the runner says the run is confined."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sequence.runner.sandbox import SUPERVISOR_SOURCE


def _supervise(go: bytes | None, tmp: str) -> tuple[int, str, bool]:
    """Run the supervisor (unsandboxed) with a --go pipe fed *go* (None: closed at once);
    returns (exit code, status lines, whether the command ran)."""
    marker = os.path.join(tmp, "ran")
    go_r, go_w = os.pipe()
    st_r, st_w = os.pipe()
    if go is not None:
        os.write(go_w, go)
    os.close(go_w)
    p = subprocess.run(
        [sys.executable, "-I", "-S", "-c", SUPERVISOR_SOURCE, "--status", str(st_w), "--go", str(go_r),
         "--workspace", tmp, "--", "/bin/sh", "-c", f"touch {marker}"],
        pass_fds=(go_r, st_w), capture_output=True, timeout=60)
    os.close(go_r)
    os.close(st_w)
    with os.fdopen(st_r) as f:
        status = f.read()
    return p.returncode, status, os.path.exists(marker)


def test_go_starts_the_strategy(tmp_path: object) -> None:
    code, status, ran = _supervise(b"g", str(tmp_path))
    assert (code, status, ran) == (0, "exit 0\n", True)


@pytest.mark.parametrize("go", [None, b"x"])
def test_eof_or_anything_else_never_starts_it(tmp_path: object, go: bytes | None) -> None:
    """The runner died, or could not move the sandbox into its cgroup: EOF (or a wrong byte)."""
    code, status, ran = _supervise(go, str(tmp_path))
    assert code == 127 and not ran
    assert status.startswith("error the runner could not confine the run")
