"""Fixtures for the runner's process-level tests: real sandboxes, real processes.

Tests that need bubblewrap and cgroups FAIL when the host lacks them, unless
``SEQUENCE_TEST_ALLOW_NO_SANDBOX=1`` is set (then they are skipped with the
reason).  CI installs bubblewrap and runs as root, so they really run there.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from sequence.runner import Sandbox, SandboxConfig

ALLOW_NO_SANDBOX = os.environ.get("SEQUENCE_TEST_ALLOW_NO_SANDBOX") == "1"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def _full_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox | str]:
    data = tmp_path_factory.mktemp("runner-full")
    sb = Sandbox(SandboxConfig(data_dir=data))
    report = sb.check()
    if report.level != "full" or not report.can_run:
        yield "bubblewrap + cgroups (memory, pids) are not usable here:\n" + report.render()
        return
    yield sb


@pytest.fixture
def sandbox(_full_sandbox: Sandbox | str) -> Sandbox:
    """A runner sandbox with full isolation (bubblewrap + cgroups), shared by tests."""
    if isinstance(_full_sandbox, str):
        if ALLOW_NO_SANDBOX:
            pytest.skip(f"SEQUENCE_TEST_ALLOW_NO_SANDBOX=1: {_full_sandbox}")
        pytest.fail(
            f"{_full_sandbox}\n(install bubblewrap and run as root, or set "
            "SEQUENCE_TEST_ALLOW_NO_SANDBOX=1 to skip these tests knowingly)"
        )
    return _full_sandbox


@pytest.fixture(scope="session")
def _no_bwrap_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Sandbox:
    sb = Sandbox(
        SandboxConfig(data_dir=tmp_path_factory.mktemp("runner-nobwrap"), bubblewrap=False)
    )
    sb.check()
    return sb


@pytest.fixture
def no_bwrap_sandbox(_no_bwrap_sandbox: Sandbox) -> Sandbox:
    """Degraded: bubblewrap disabled by configuration (cgroups still used when present)."""
    return _no_bwrap_sandbox


@pytest.fixture(scope="session")
def _bare_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Sandbox:
    sb = Sandbox(
        SandboxConfig(
            data_dir=tmp_path_factory.mktemp("runner-bare"), bubblewrap=False, cgroups=False
        )
    )
    sb.check()
    return sb


@pytest.fixture
def bare_sandbox(_bare_sandbox: Sandbox) -> Sandbox:
    """Degraded to the floor: no bubblewrap, no cgroups."""
    return _bare_sandbox
