"""``/v1/risk`` and ``/v1/kill`` over HTTP (simulated venues: the kill switch still cancels
every working order and stops strategies; real-order routing is tests/execution and
tests/acceptance/test_live_orders.py)."""

from __future__ import annotations

from typing import Any

from tests.api.test_trading_seed_e2e import sdk, two_sided_kalshi


def test_risk_limits_read_change_and_reset(coord: Any) -> None:
    with coord.client() as http:
        r = http.get("/v1/risk").json()
        assert r["scope"] == "client" and r["limits"] == r["defaults"]
        assert r["limits"]["max_order_notional"] == 100.0 and r["exposure"]["open_orders"] == 0
        r = http.put("/v1/risk", json={"max_order_notional": 250, "max_daily_loss": None}).json()
        assert r["limits"]["max_order_notional"] == 250 and r["limits"]["max_daily_loss"] is None
        assert r["limits"]["max_open_orders"] == 20  # untouched: still the default
        assert http.get("/v1/risk").json()["limits"]["max_order_notional"] == 250
        assert r["cancel_on_stop"] is True
        r = http.put("/v1/risk", json={"cancel_on_stop": False}).json()
        assert r["cancel_on_stop"] is False and r["limits"]["max_order_notional"] == 250
        assert http.put("/v1/risk", json={"cancel_on_stop": "no"}).json()["error"]["details"]["field"] == "cancel_on_stop"
        r = http.delete("/v1/risk").json()
        assert r["limits"] == r["defaults"] and r["cancel_on_stop"] is True


def test_bad_risk_input_names_the_field(coord: Any) -> None:
    with coord.client() as http:
        for body, field in [({"max_orders": 1}, "max_orders"), ({"max_daily_loss": -5}, "max_daily_loss"),
                            ({"max_open_orders": 2.5}, "max_open_orders"), ({}, "body"), ([1], "body")]:
            r = http.put("/v1/risk", json=body)
            assert r.status_code == 400, (body, r.text)
            assert r.json()["error"]["details"]["field"] == field, r.text
        r = http.get("/v1/risk", params={"strategy": "no-such-strategy"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        r = http.post("/v1/kill", json={"strategy": 5})
        assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "strategy"
        r = http.post("/v1/kill", json={"everything": True})
        assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "everything"


def test_the_kill_switch_cancels_working_orders_and_is_released(coord: Any) -> None:
    seq = sdk(coord)
    m = two_sided_kalshi(seq)
    sym = m["_chosen_symbol"]
    node = seq.node(node_id="leg", symbol=sym, side="buy", qty=1.0, venue="kalshi",
                    instrument_type="prediction", limit_price=0.01)
    gids = [seq.graph([node])["graph_id"] for _ in range(3)]
    with coord.client() as http:
        r = http.post("/v1/kill")
        assert r.status_code == 200, r.text
        report = r.json()
        assert report["orders_cancelled"] == 3 and report["not_cancelled"] == [] and report["strategy_id"] is None
        for gid in gids:
            assert http.get(f"/v1/graphs/{gid}").json()["status"] == "cancelled"
        (engaged,) = http.get("/v1/kill").json()["engaged"]
        assert engaged["strategy_id"] is None and engaged["engaged_at"]
        assert http.delete("/v1/kill").json() == {"released": True, "strategy_id": None}
        assert http.get("/v1/kill").json()["engaged"] == []
        assert http.delete("/v1/kill").json()["released"] is False


def test_another_client_can_neither_kill_nor_read_the_limits_of_my_strategies(coord: Any, tmp_path: Any) -> None:
    from tests.helpers import create_body

    with coord.client() as mine:
        sid = mine.post("/v1/strategies", json=create_body(name="mine", start=True)).json()["strategy_id"]
        mine.put("/v1/risk", params={"strategy": "mine"}, json={"max_order_notional": 7})
    _cid, other_key = coord.new_client("intruder")
    with coord.client(other_key) as other:
        for ident in ("mine", sid):
            r = other.post("/v1/kill", json={"strategy": ident})
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", r.text
            assert other.get("/v1/risk", params={"strategy": ident}).status_code == 404
            assert other.put("/v1/risk", params={"strategy": ident}, json={"max_order_notional": 1e9}).status_code == 404
        # Its own kill switch touches only its own (no) strategies.
        assert other.post("/v1/kill").json()["strategies_stopped"] == []
        other.delete("/v1/kill")
    with coord.client() as mine:
        s = mine.get(f"/v1/strategies/{sid}").json()
        assert s["desired_state"] == "running", s
        r = mine.get("/v1/risk", params={"strategy": "mine"}).json()
        assert r["limits"]["max_order_notional"] == 7 and mine.get("/v1/kill").json()["engaged"] == []


def test_a_test_key_cannot_loosen_live_limits_or_release_the_kill_switch(coord: Any) -> None:
    """A seq_test_ key trades on paper only, yet it could raise the client's live risk limits
    and release the kill switch a live key had engaged."""
    with coord.client() as live, coord.client(coord.test_key) as test:
        for r in (test.put("/v1/risk", json={"max_order_notional": 1e9}), test.delete("/v1/risk")):
            assert r.status_code == 403 and "paper only" in r.json()["error"]["message"], r.text
        assert live.get("/v1/risk").json()["limits"]["max_order_notional"] == 100.0  # unchanged
        assert live.post("/v1/kill").status_code == 200
        r = test.delete("/v1/kill")
        assert r.status_code == 403 and "release the kill switch" in r.json()["error"]["message"], r.text
        assert live.get("/v1/kill").json()["engaged"] != []  # still engaged
        assert test.get("/v1/risk").status_code == 200  # reading is fine
        assert test.post("/v1/kill").status_code == 200  # and so is stopping everything
        assert live.delete("/v1/kill").json()["released"] is True


def test_an_empty_strategy_is_refused_not_taken_for_the_whole_client(coord: Any) -> None:
    """`DELETE /v1/kill?strategy=$NAME` with NAME unset released the client-wide switch."""
    with coord.client() as live:
        assert live.post("/v1/kill").status_code == 200
        for r in (live.delete("/v1/kill", params={"strategy": ""}), live.put("/v1/risk", params={"strategy": ""},
                                                                              json={"max_order_notional": 5})):
            assert r.status_code in (400, 422) and "strategy" in r.text, r.text
        assert live.get("/v1/kill").json()["engaged"] != []  # still engaged
        assert live.get("/v1/risk").json()["limits"]["max_order_notional"] == 100.0
        assert live.delete("/v1/kill").json()["released"] is True
