"""The runner package's public surface is exactly its sorted ``__all__``."""

from __future__ import annotations

import sequence.runner as runner

PUBLIC = {
    "ArchiveLimits",
    "CgroupError",
    "ExitInfo",
    "ExitKind",
    "InterpreterNotFound",
    "IsolationReport",
    "LogPump",
    "LogPumpConfig",
    "LogPumpStats",
    "LogRecord",
    "LogSink",
    "Protection",
    "RunEnvironmentError",
    "RunHandle",
    "RunSpec",
    "RunnerError",
    "Runtime",
    "Sandbox",
    "SandboxConfig",
    "SandboxError",
    "WorkspaceError",
    "discover_runtime",
    "replay_spool",
}


def test_all_is_sorted_and_complete() -> None:
    assert runner.__all__ == sorted(runner.__all__)
    assert set(runner.__all__) == PUBLIC
    for name in runner.__all__:
        assert getattr(runner, name) is not None


def test_every_runner_error_shares_one_root() -> None:
    for exc in (
        runner.WorkspaceError,
        runner.RunEnvironmentError,
        runner.SandboxError,
        runner.InterpreterNotFound,
        runner.CgroupError,
    ):
        assert issubclass(exc, runner.RunnerError)


def test_exit_info_serialises_for_last_exit() -> None:
    info = runner.ExitInfo(
        code=3,
        signal=None,
        oom=False,
        kind=runner.ExitKind.FAILED,
        reason="exited with code 3",
        peak_rss_bytes=1,
        cpu_seconds=0.1,
        duration_s=1.0,
    )
    d = info.to_dict()
    assert {"code", "signal", "oom", "reason"} <= set(d)
    assert d["kind"] == "failed" and d["run_status"] == "failed"
