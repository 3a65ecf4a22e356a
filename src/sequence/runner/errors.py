"""The runner's process-level errors, one root.

::

    RunnerError                  anything below; str(exc) is the run's exit reason
     ├── WorkspaceError          artifact rejected: hash, archive rules, entrypoint
     ├── RunEnvironmentError     env / secrets that cannot become an environment
     └── SandboxError            the sandbox could not be prepared or started
          ├── InterpreterNotFound   no usable runtime interpreter on this host
          └── CgroupError           a per-run cgroup could not be created / joined

Foreign errors (``OSError``, ``tarfile.TarError``, ``zlib.error`` …) are
translated at the boundary with the cause kept (``raise … from exc``).
"""

from __future__ import annotations

__all__ = [
    "CgroupError",
    "InterpreterNotFound",
    "RunEnvironmentError",
    "RunnerError",
    "SandboxError",
    "WorkspaceError",
]


class RunnerError(Exception):
    """Root of the runner's process-level errors."""


class WorkspaceError(RunnerError):
    """The artifact cannot become a workspace (bad hash, unsafe archive, no entrypoint)."""


class RunEnvironmentError(RunnerError):
    """``env`` / ``secrets`` contain something that cannot be an environment variable."""


class SandboxError(RunnerError):
    """The sandbox could not be prepared or the strategy could not be started."""


class InterpreterNotFound(SandboxError):
    """No usable runtime interpreter was found (strategies cannot run on this host)."""


class CgroupError(SandboxError):
    """A per-run cgroup could not be created, limited, joined or removed."""
