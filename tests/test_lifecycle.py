"""Every legal and illegal move of the strategy and run state machines; the restart policy."""

from __future__ import annotations

import itertools

import pytest

from sequence.lifecycle import (
    HEALTHY_RESET_SECONDS,
    RUN,
    STRATEGY,
    IllegalTransition,
    Restart,
    RunStatus,
    StrategyStatus,
    restart_after_failure,
    restart_delay,
)

STRATEGY_LEGAL = {
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
}

RUN_LEGAL = {
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
}


def test_strategy_table_is_exactly_the_documented_one() -> None:
    assert STRATEGY.table == STRATEGY_LEGAL


def test_run_table_is_exactly_the_documented_one() -> None:
    assert RUN.table == RUN_LEGAL


@pytest.mark.parametrize(("machine", "legal", "states"), [
    (STRATEGY, STRATEGY_LEGAL, list(StrategyStatus)),
    (RUN, RUN_LEGAL, list(RunStatus)),
])
def test_every_pair_is_either_legal_or_raises(machine, legal, states) -> None:
    events = sorted({e for _, e in legal})
    for state, event in itertools.product(states, events):
        if (state, event) in legal:
            assert machine.next(state, event) == legal[(state, event)]
        else:
            with pytest.raises(IllegalTransition) as info:
                machine.next(state, event)
            assert info.value.state == state and info.value.event == event


def test_stopped_and_failed_cannot_be_claimed_directly() -> None:
    for state in (StrategyStatus.stopped, StrategyStatus.stopping, StrategyStatus.running):
        assert not STRATEGY.allows(state, "claim")


def test_terminal_run_states_accept_nothing() -> None:
    for state in (RunStatus.exited, RunStatus.failed, RunStatus.stopped, RunStatus.lost):
        for event in RUN.events:
            assert not RUN.allows(state, event)


def test_restart_backoff_doubles_from_one_second_and_caps_at_sixty() -> None:
    assert [restart_delay(n) for n in range(0, 9)] == [0, 1, 2, 4, 8, 16, 32, 60, 60]


def test_a_failure_grows_the_backoff_unless_the_run_was_healthy_or_its_runner_lost() -> None:
    now = 10_000.0
    short = restart_after_failure(2, ran_since=now - 5, now=now)
    assert short == Restart(3, now + restart_delay(3))
    healthy = restart_after_failure(6, ran_since=now - HEALTHY_RESET_SECONDS, now=now)
    assert healthy == Restart(1, now + 1.0)
    assert restart_after_failure(4, ran_since=now - 5, now=now, runner_lost=True) == Restart(4, now)
