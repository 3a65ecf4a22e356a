"""The runner's process-level internals: workspace, environment, sandbox, logs.

The daemon (claim loop, heartbeats, coordinator client) builds on these::

    Sandbox(SandboxConfig(...)).check() -> IsolationReport
    await Sandbox.start(RunSpec, sink) -> RunHandle
    await RunHandle.stop(grace_s) / .wait() -> ExitInfo
    await RunHandle.flush_logs(timeout) / .close()

See ``docs/sandbox.md`` for the isolation model and the log record contract.
"""

from sequence.runner.errors import (
    CgroupError,
    InterpreterNotFound,
    RunEnvironmentError,
    RunnerError,
    SandboxError,
    WorkspaceError,
)
from sequence.runner.isolation import IsolationReport, Protection
from sequence.runner.logs import (
    LogPump,
    LogPumpConfig,
    LogPumpStats,
    LogRecord,
    LogSink,
    replay_spool,
)
from sequence.runner.process import ExitInfo, ExitKind, RunHandle
from sequence.runner.runtime import Runtime, discover_runtime
from sequence.runner.sandbox import RunSpec, Sandbox, SandboxConfig
from sequence.runner.workspace import ArchiveLimits

__all__ = [
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
]
