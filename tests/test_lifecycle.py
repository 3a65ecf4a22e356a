"""Every legal and illegal move of the strategy and run state machines."""

from __future__ import annotations

import itertools

import pytest

from sequence.lifecycle import RUN, STRATEGY, IllegalTransition, R, S, restart_delay

STRATEGY_LEGAL = {
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
}

RUN_LEGAL = {
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
}


def test_strategy_table_is_exactly_the_documented_one() -> None:
    assert STRATEGY.table == STRATEGY_LEGAL


def test_run_table_is_exactly_the_documented_one() -> None:
    assert RUN.table == RUN_LEGAL


@pytest.mark.parametrize(("machine", "legal", "states"), [
    (STRATEGY, STRATEGY_LEGAL, list(S)),
    (RUN, RUN_LEGAL, list(R)),
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
    for state in (S.stopped, S.stopping, S.running):
        assert not STRATEGY.allows(state, "claim")


def test_terminal_run_states_accept_nothing() -> None:
    for state in (R.exited, R.failed, R.stopped, R.lost):
        for event in RUN.events:
            assert not RUN.allows(state, event)


def test_restart_backoff_doubles_from_one_second_and_caps_at_sixty() -> None:
    assert [restart_delay(n) for n in range(0, 9)] == [0, 1, 2, 4, 8, 16, 32, 60, 60]
