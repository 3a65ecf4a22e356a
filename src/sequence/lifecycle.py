"""Lifecycles as state machines: ``(state, event) → state`` tables.

An event not in a table is illegal and raises :class:`IllegalTransition`.
Repeating an idempotent request (``start`` on a queued strategy, ``stop`` on a
stopped one) is a legal self-transition, listed explicitly.

Also the restart policy of a failed strategy (:func:`restart_after_failure`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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


class StrategyStatus(StrEnum):
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
        (StrategyStatus.stopped, "start"): StrategyStatus.queued,
        (StrategyStatus.failed, "start"): StrategyStatus.queued,
        (StrategyStatus.queued, "start"): StrategyStatus.queued,
        (StrategyStatus.running, "start"): StrategyStatus.running,
        (StrategyStatus.stopping, "start"): StrategyStatus.stopping,
        (StrategyStatus.queued, "stop"): StrategyStatus.stopped,
        (StrategyStatus.running, "stop"): StrategyStatus.stopping,
        (StrategyStatus.stopping, "stop"): StrategyStatus.stopping,
        (StrategyStatus.stopped, "stop"): StrategyStatus.stopped,
        (StrategyStatus.failed, "stop"): StrategyStatus.stopped,
        (StrategyStatus.queued, "claim"): StrategyStatus.running,
        (StrategyStatus.failed, "retry"): StrategyStatus.running,
        (StrategyStatus.running, "exit_ok"): StrategyStatus.stopped,
        (StrategyStatus.running, "exit_fail"): StrategyStatus.failed,
        (StrategyStatus.stopping, "stopped"): StrategyStatus.stopped,
        (StrategyStatus.stopping, "requeue"): StrategyStatus.queued,
        (StrategyStatus.running, "redeploy"): StrategyStatus.stopping,
        (StrategyStatus.stopping, "redeploy"): StrategyStatus.stopping,
        (StrategyStatus.queued, "redeploy"): StrategyStatus.queued,
        (StrategyStatus.stopped, "redeploy"): StrategyStatus.stopped,
        (StrategyStatus.failed, "redeploy"): StrategyStatus.failed,
    },
)


class RunStatus(StrEnum):
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
        (RunStatus.starting, "started"): RunStatus.running,
        (RunStatus.starting, "stop"): RunStatus.stopping,
        (RunStatus.running, "stop"): RunStatus.stopping,
        (RunStatus.stopping, "stop"): RunStatus.stopping,
        (RunStatus.starting, "exit_ok"): RunStatus.exited,
        (RunStatus.running, "exit_ok"): RunStatus.exited,
        (RunStatus.starting, "exit_fail"): RunStatus.failed,
        (RunStatus.running, "exit_fail"): RunStatus.failed,
        (RunStatus.stopping, "exit_ok"): RunStatus.stopped,
        (RunStatus.stopping, "exit_fail"): RunStatus.stopped,
        (RunStatus.stopping, "started"): RunStatus.stopping,
        (RunStatus.starting, "lease_expired"): RunStatus.lost,
        (RunStatus.running, "lease_expired"): RunStatus.lost,
        (RunStatus.stopping, "lease_expired"): RunStatus.lost,
    },
)

RUN_ACTIVE = frozenset({RunStatus.starting.value, RunStatus.running.value, RunStatus.stopping.value})


# -- the restart policy: when a failed strategy runs again ------------------------------
# A strategy whose run failed is ``failed`` with ``next_restart_at``; a claim takes it
# again once that time has passed (while its desired state is still ``running``). A
# user's start, a redeploy, or a stop-and-requeue clears the count of failures.

#: A run that lasted this long was healthy: its failure starts the backoff over.
HEALTHY_RESET_SECONDS = 600.0


def restart_delay(consecutive_failures: int, *, base: float = 1.0, cap: float = 60.0) -> float:
    """Exponential backoff: 1 s, 2 s, 4 s … capped at 60 s."""
    if consecutive_failures <= 0:
        return 0.0
    return float(min(cap, base * 2 ** (consecutive_failures - 1)))


@dataclass(frozen=True)
class Restart:
    """When a failed strategy runs again, and its failures in a row counting this one."""

    consecutive_failures: int
    at: float


def restart_after_failure(consecutive_failures: int, *, ran_since: float, now: float,
                          runner_lost: bool = False) -> Restart:
    """The restart of a strategy whose run failed at ``now``, having run since ``ran_since``
    after ``consecutive_failures`` failures in a row.

    A lost runner is not the strategy's fault: it restarts at once and its count stays.
    A run that lasted :data:`HEALTHY_RESET_SECONDS` counts as the first failure of a new
    series; otherwise the count grows and the delay with it (:func:`restart_delay`).
    """
    if runner_lost:
        return Restart(consecutive_failures, now)
    failures = 1 if now - ran_since >= HEALTHY_RESET_SECONDS else consecutive_failures + 1
    return Restart(failures, now + restart_delay(failures))
