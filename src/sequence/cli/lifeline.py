"""A child daemon that dies with the process that started it.

``sequence up`` starts the local runner as a child.  If ``sequence up`` is
SIGKILLed it cannot stop the runner, so the kernel does: the runner asks for
a parent-death signal (``PR_SET_PDEATHSIG``) first thing at startup, then
checks that its parent is still the process that started it — if that one
died before the ``prctl``, the signal will never come, so it exits at once.

The signal is SIGKILL, not SIGTERM.  The parent that died is the coordinator:
the strategies' market API and the only place logs and exit reports go, so a
graceful stop could deliver nothing, and it would keep the runner (and its
strategies) alive for the length of its timeouts.  SIGKILL cannot be caught
or delayed by a wedged runner, and it takes the strategies with it: a
sandboxed run's bubblewrap has ``--die-with-parent`` (and is the init of its
PID namespace, whose processes die with it), an unsandboxed run's supervisor
and strategy have their own parent-death SIGKILL.  The next runner start
removes what is left (run cgroups, run directories).

The kernel sends the signal when the *thread* that forked the child exits,
so the parent must start the runner from a thread that outlives it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from collections.abc import MutableMapping

log = logging.getLogger("sequence.lifeline")

#: The pid of the process the runner must not outlive, set by ``sequence up``.
PARENT_PID_ENV = "SEQUENCE_RUNNER_PARENT_PID"
PR_SET_PDEATHSIG = 1


class ParentGone(Exception):
    """The expected parent died before the parent-death signal was armed."""


def child_environ(environ: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """*environ* telling the child to die with this process."""
    environ[PARENT_PID_ENV] = str(os.getpid())
    return environ


def die_with_parent(environ: MutableMapping[str, str]) -> bool:
    """Arm SIGKILL on parent death when *environ* names a parent (and forget it,
    so the runner's own children do not inherit it); return whether armed.

    Raises :class:`ParentGone` if the parent is already gone.
    """
    value = environ.pop(PARENT_PID_ENV, None)
    if not value:
        return False
    try:
        parent = int(value)
    except ValueError:
        log.warning("ignoring %s=%r: not a pid", PARENT_PID_ENV, value)
        return False
    if not sys.platform.startswith("linux"):
        log.warning("cannot tie this process to its parent on %s: it may outlive it", sys.platform)
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        log.warning("prctl(PR_SET_PDEATHSIG) failed (%s): this process may outlive its parent", os.strerror(err))
        return False
    if os.getppid() != parent:
        raise ParentGone(f"parent process {parent} is gone")
    return True
