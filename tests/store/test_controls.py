"""Risk limits and kill switches in the store (SQLite and PostgreSQL)."""

from __future__ import annotations

from sequence.store.controls import CLIENT, ControlsStore
from sequence.store.store import Store


def test_risk_limits_per_client_and_per_strategy_round_trip(store: Store, client_id: str) -> None:
    controls = ControlsStore(store.db)
    assert controls.risk_limits() == {}
    controls.put_risk_limits(client_id, None, {"max_open_orders": 5, "max_daily_loss": None})
    controls.put_risk_limits(client_id, "strat_1", {"max_order_notional": 10.5})
    controls.put_risk_limits(client_id, None, {"max_open_orders": 6})  # replaces the client's row
    assert controls.risk_limits(client_id) == {(client_id, CLIENT): {"max_open_orders": 6},
                                               (client_id, "strat_1"): {"max_order_notional": 10.5}}
    other = store.create_client("other")
    assert controls.risk_limits(other) == {}
    controls.delete_risk_limits(client_id, "strat_1")
    assert list(controls.risk_limits()) == [(client_id, CLIENT)]


def test_kill_switches_engage_once_and_release_by_scope(store: Store, client_id: str) -> None:
    controls = ControlsStore(store.db)
    first = controls.engage_kill(client_id, None)
    assert controls.engage_kill(client_id, None) == first  # idempotent: the first time stands
    controls.engage_kill(client_id, "strat_1")
    assert set(controls.kill_switches()) == {(client_id, CLIENT), (client_id, "strat_1")}
    assert controls.release_kill(client_id, None) is True
    assert controls.release_kill(client_id, None) is False
    assert set(controls.kill_switches()) == {(client_id, "strat_1")}  # a strategy's stays engaged
