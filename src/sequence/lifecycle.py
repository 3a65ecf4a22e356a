"""Lifecycles as state machines: ``(state, event) → state`` tables.

An event not in a table is illegal and raises :class:`IllegalTransition`.
Repeating an idempotent request (``start`` on a queued strategy, ``stop`` on a
stopped one) is a legal self-transition, listed explicitly.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class IllegalTransition(Exception):
    def __init__(self, machine: str, state: str, event: str) -> None:
        super().__init__(f"{machine}: cannot {event} when {state}")
        self.machine, self.state, self.event = machine, state, event


class StateMachine:
    def __init__(self, name: str, table: Mapping[tuple[str, str], str]) -> None:
        self.name = name
        self.table = dict(table)
        self.states = sorted({s for s, _ in table} | set(table.values()))
        self.events = sorted({e for _, e in table})

    def next(self, state: str, event: str) -> str:
        try:
            return self.table[(state, event)]
        except KeyError:
            raise IllegalTransition(self.name, state, event) from None

    def allows(self, state: str, event: str) -> bool:
        return (state, event) in self.table


class S(StrEnum):
    """Strategy status (API.md)."""

    queued = "queued"
    running = "running"
    stopping = "stopping"
    stopped = "stopped"
    failed = "failed"


# Events:
#   start      user asks to run it (also deploy --start)
#   stop       user asks it to stop
#   claim      a runner claimed a run
#   exit_ok    the run exited 0
#   exit_fail  the run exited non-zero, by signal, OOM, setup failure or runner loss
#   retry      the restart backoff elapsed (claim of a failed strategy)
#   redeploy   a new artifact/config replaced a live one: the run is stopped and
#              the strategy comes back queued
#   stopped    a run that was asked to stop has ended (whatever its exit code)
#   requeue    a run that was stopped for a redeploy has ended
STRATEGY = StateMachine(
    "strategy",
    {
        (S.stopped, "start"): S.queued,
        (S.failed, "start"): S.queued,
        (S.queued, "start"): S.queued,
        (S.running, "start"): S.running,
        (S.stopping, "start"): S.stopping,
        (S.queued, "stop"): S.stopped,
        (S.running, "stop"): S.stopping,
        (S.stopping, "stop"): S.stopping,
        (S.stopped, "stop"): S.stopped,
        (S.failed, "stop"): S.stopped,
        (S.queued, "claim"): S.running,
        (S.failed, "retry"): S.running,
        (S.running, "exit_ok"): S.stopped,
        (S.running, "exit_fail"): S.failed,
        (S.stopping, "stopped"): S.stopped,
        (S.stopping, "requeue"): S.queued,
        (S.running, "redeploy"): S.stopping,
        (S.stopping, "redeploy"): S.stopping,
        (S.queued, "redeploy"): S.queued,
        (S.stopped, "redeploy"): S.stopped,
        (S.failed, "redeploy"): S.failed,
    },
)


class R(StrEnum):
    """Run status."""

    starting = "starting"  # claimed; the runner is preparing the workspace
    running = "running"  # the process is up
    stopping = "stopping"  # stop requested; the runner has been told
    exited = "exited"  # ended with code 0
    failed = "failed"  # non-zero, signal, OOM, or setup failure
    stopped = "stopped"  # ended after a stop request
    lost = "lost"  # lease expired: the runner vanished


RUN = StateMachine(
    "run",
    {
        (R.starting, "started"): R.running,
        (R.starting, "stop"): R.stopping,
        (R.running, "stop"): R.stopping,
        (R.stopping, "stop"): R.stopping,
        (R.starting, "exit_ok"): R.exited,
        (R.running, "exit_ok"): R.exited,
        (R.starting, "exit_fail"): R.failed,
        (R.running, "exit_fail"): R.failed,
        (R.stopping, "exit_ok"): R.stopped,
        (R.stopping, "exit_fail"): R.stopped,
        (R.stopping, "started"): R.stopping,
        (R.starting, "lease_expired"): R.lost,
        (R.running, "lease_expired"): R.lost,
        (R.stopping, "lease_expired"): R.lost,
    },
)

RUN_ACTIVE = frozenset({R.starting.value, R.running.value, R.stopping.value})


def restart_delay(consecutive_failures: int, *, base: float = 1.0, cap: float = 60.0) -> float:
    """Exponential backoff: 1 s, 2 s, 4 s … capped at 60 s."""
    if consecutive_failures <= 0:
        return 0.0
    return float(min(cap, base * 2 ** (consecutive_failures - 1)))


HEALTHY_RESET_SECONDS = 600.0
