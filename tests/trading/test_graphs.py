"""Graph validation (precise 400s), the graph and node model, lifecycles and triggers — pure, no I/O."""

from __future__ import annotations

from itertools import product
from typing import Any

import pytest

from sequence.lifecycle import IllegalTransition
from sequence.market.book import Side
from sequence.trading.graphs import (
    GRAPH,
    NODE,
    Edge,
    Graph,
    GraphStatus,
    Node,
    NodeStatus,
)
from sequence.trading.validation import GraphError, GraphRequest, find_cycle, parse_graph
from tests.trading.fakes import CLOSED, KALSHI_NO, POLY, SPOT, FakeMarket, node

M = FakeMarket()
Q = 100_000_000


def parse(body: Any, *, force_paper: bool = False) -> GraphRequest:
    def lookup(symbol: str):
        try:
            return M.instrument(symbol)
        except Exception:
            return None

    return parse_graph(body, lookup, venues=M.venues, force_paper=force_paper)


def error(body: Any) -> GraphError:
    with pytest.raises(GraphError) as info:
        parse(body)
    return info.value


def test_a_two_leg_graph_with_no_edges_has_two_roots() -> None:
    spec = parse({"nodes": [node("a"), node("b", POLY, "sell", 8, 0.15)], "edges": []})
    assert [n.activation for n in spec.nodes] == ["root", "root"]
    assert spec.nodes[1].qty_units == 800 and spec.nodes[1].book_limit == 1500
    assert spec.paper is False
    assert all(isinstance(n, Node) and n.status == NodeStatus.pending for n in spec.nodes)


def test_paper_is_forced_for_test_keys_whatever_the_body_says() -> None:
    assert parse({"nodes": [node()], "sandbox": False}, force_paper=True).paper is True
    assert parse({"nodes": [node()], "sandbox": True}).paper is True


def test_no_token_orders_are_translated_to_the_yes_book() -> None:
    n = parse({"nodes": [node(symbol=KALSHI_NO, side="buy", limit_price=0.3)]}).nodes[0]
    assert (n.book_side, n.book_limit, n.limit_units, n.complement) == (Side.ASK, 7000, 3000, True)


def test_missing_instrument_type_is_a_400_that_says_so() -> None:
    body = node()
    del body["instrument_type"]
    e = error({"nodes": [body]})
    assert e.field == "nodes[0].instrument_type" and e.code == "instrument_type_required"
    assert 'instrument_type must be "prediction" for kalshi orders' in e.message
    assert "assumes spot" in e.message
    # The SDK's default is instrument_type="spot": the same clear error.
    e = error({"nodes": [node(instrument_type="spot")]})
    assert e.code == "instrument_type_required" and "got 'spot'" in e.message


@pytest.mark.parametrize(("asked", "used"), [
    (0.641, 0.64),  # the product document's force_cross_price(…, 0.001) on a 0.01 market
    (0.505, 0.5),  # half to even, as the official Polymarket client's round()
    (0.515, 0.52),
    (0.6449, 0.64),
    (0.01, 0.01),
])
def test_a_price_off_the_tick_is_rounded_to_the_ticks_decimals(asked: float, used: float) -> None:
    n = parse({"nodes": [node(limit_price=asked)]}).nodes[0]
    assert n.limit_price == used


def test_rounding_to_a_tick_that_is_not_a_power_of_ten() -> None:
    from decimal import Decimal

    from sequence.trading.validation import round_to_tick

    assert round_to_tick(Decimal("0.1237"), Decimal("0.0025")) == Decimal("0.1225")  # 4 decimals, then the grid
    assert round_to_tick(Decimal("0.4731"), Decimal("0.005")) == Decimal("0.475")
    assert round_to_tick(Decimal("0.641"), Decimal("0.01")) == Decimal("0.64")


def test_a_price_that_rounds_out_of_range_is_still_refused() -> None:
    e = error({"nodes": [node(limit_price=0.9949)]})
    assert e.code == "price_out_of_range" and e.field == "nodes[0].limit_price"


@pytest.mark.parametrize("price", [0, 0.0, 1.0, 0.995, -0.5, 1.5])
def test_prediction_prices_must_be_inside_the_range(price: float) -> None:
    e = error({"nodes": [node(limit_price=price)]})
    assert e.field == "nodes[0].limit_price"
    assert e.code == "price_out_of_range"


@pytest.mark.parametrize("qty", [0, -1, "x", None, True, float("inf"), 0.001])
def test_qty_must_be_a_positive_aligned_number(qty: Any) -> None:
    e = error({"nodes": [node(qty=qty)]})
    assert e.field == "nodes[0].qty"


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({}, "nodes", "invalid_graph"),
        ({"nodes": []}, "nodes", "invalid_graph"),
        ({"nodes": [node()], "extra": 1}, "extra", "unknown_field"),
        ({"nodes": [node(), node()]}, "nodes[1].node_id", "duplicate_node_id"),
        ({"nodes": [node("a:b")]}, "nodes[0].node_id", "invalid_node_id"),
        ({"nodes": [node(symbol="NOPE")]}, "nodes[0].symbol", "unknown_symbol"),
        ({"nodes": [node(venue="nasdaq")]}, "nodes[0].venue", "unknown_venue"),
        ({"nodes": [node(venue="polymarket")]}, "nodes[0].venue", "venue_mismatch"),
        ({"nodes": [node(symbol=CLOSED)]}, "nodes[0].symbol", "market_closed"),
        ({"nodes": [node(side="hold")]}, "nodes[0].side", "invalid_side"),
        ({"nodes": [node(urgency="asap")]}, "nodes[0].urgency", "invalid_urgency"),
        ({"nodes": [node(limit_price=None)]}, "nodes[0].limit_price", "missing_field"),
        ({"nodes": [node(limit="0.5")]}, "nodes[0].limit", "unknown_field"),
        ({"nodes": [node(symbol=SPOT, qty=0.00001, limit_price=50_000)]}, "nodes[0].qty", "under_min_notional"),
        ({"nodes": [node(symbol=SPOT, qty=1, limit_price=None, urgency="low")]}, "nodes[0].urgency",
         "invalid_urgency"),
        ({"nodes": [node("a")], "edges": {}}, "edges", "invalid_graph"),
        ({"nodes": [node("a")], "edges": [{"from": "a", "to": "zz", "trigger": "filled"}]}, "edges[0].to",
         "unknown_node"),
        ({"nodes": [node("a"), node("b")], "edges": [{"from": "a", "to": "b", "trigger": "done"}]},
         "edges[0].trigger", "invalid_trigger"),
        ({"nodes": [node("a")], "edges": [{"from": "a", "to": "a", "trigger": "filled"}]}, "edges[0]", "cycle"),
        ({"nodes": [node("a"), node("b")], "edges": [{"from": "a", "to": "b"}, {"from": "a", "to": "b"}]},
         "edges[1]", "duplicate_edge"),
        ({"nodes": [node("a"), node("b", activation="root")], "edges": [{"from": "a", "to": "b"}]},
         "nodes[1].activation", "invalid_activation"),
        ({"nodes": [node("a", activation="triggered")]}, "nodes[0].activation", "invalid_activation"),
        ({"nodes": [node()], "sandbox": "yes"}, "sandbox", "invalid_graph"),
        ("nodes", "body", "invalid_graph"),
    ],
)
def test_bad_graphs_are_400s_naming_the_field(body: Any, field: str, code: str) -> None:
    e = error(body)
    assert (e.field, e.code) == (field, code), e.message
    assert e.details["field"] == field


def test_cycles_are_rejected_with_the_cycle_named() -> None:
    nodes = [node("a"), node("b"), node("c")]
    edges = [{"from": "a", "to": "b"}, {"from": "b", "to": "c"}, {"from": "c", "to": "b"}]
    e = error({"nodes": nodes, "edges": edges})
    assert e.code == "cycle" and e.details["cycle"] == ["b", "c", "b"]
    assert "b -> c -> b" in e.message


def test_find_cycle_on_a_diamond_is_none() -> None:
    edges = [Edge("a", "b", "filled"), Edge("a", "c", "filled"), Edge("b", "d", "filled"),
             Edge("c", "d", "filled")]
    assert find_cycle(["a", "b", "c", "d"], edges) is None


def test_polymarket_under_one_dollar_is_accepted_but_never_crosses() -> None:
    n = parse({"nodes": [node(symbol=POLY, qty=5, limit_price=0.15)]}).nodes[0]
    assert n.never_crosses is True
    n = parse({"nodes": [node(symbol=POLY, qty=8, limit_price=0.15)]}).nodes[0]
    assert n.never_crosses is False


def test_spot_market_order_and_inferred_venue() -> None:
    body = {"node_id": "m", "symbol": SPOT, "side": "buy", "qty": "0.5"}
    n = parse({"nodes": [body]}).nodes[0]
    assert (n.venue, n.instrument_type, n.limit_units, n.qty_1e8) == ("coinbase", "spot", None, 50_000_000)


# -- lifecycles ------------------------------------------------------------------------------------

GRAPH_LEGAL = {
    (GraphStatus.active, "complete"): GraphStatus.completed,
    (GraphStatus.active, "cancel"): GraphStatus.cancelled,
    (GraphStatus.active, "fail"): GraphStatus.failed,
}
NODE_LEGAL = {
    (NodeStatus.pending, "activate"): NodeStatus.working,
    (NodeStatus.pending, "cancel"): NodeStatus.cancelled,
    (NodeStatus.pending, "reject"): NodeStatus.rejected,
    (NodeStatus.working, "partial_fill"): NodeStatus.partially_filled,
    (NodeStatus.working, "fill"): NodeStatus.filled,
    (NodeStatus.working, "cancel"): NodeStatus.cancelled,
    (NodeStatus.working, "reject"): NodeStatus.rejected,
    (NodeStatus.partially_filled, "partial_fill"): NodeStatus.partially_filled,
    (NodeStatus.partially_filled, "fill"): NodeStatus.filled,
    (NodeStatus.partially_filled, "cancel"): NodeStatus.cancelled,
}


@pytest.mark.parametrize(("machine", "states", "events", "legal"), [
    (GRAPH, list(GraphStatus), ["complete", "cancel", "fail"], GRAPH_LEGAL),
    (NODE, list(NodeStatus), ["activate", "partial_fill", "fill", "cancel", "reject"], NODE_LEGAL),
])
def test_every_transition_legal_or_illegal(machine: Any, states: list, events: list, legal: dict) -> None:
    for state, event in product(states, events):
        if (state, event) in legal:
            assert machine.next(state, event) == legal[(state, event)]
        else:
            with pytest.raises(IllegalTransition):
                machine.next(state, event)


def run(edges: list[tuple[str, str, str]], nodes: tuple[str, ...] = ("a", "b", "c")) -> Graph:
    """A graph of one-contract Kalshi nodes (``qty_1e8`` = Q each)."""
    req = parse({"nodes": [node(n) for n in nodes],
                 "edges": [{"from": a, "to": b, "trigger": t} for a, b, t in edges]})
    return Graph.new("g", "client", req.nodes, req.edges, paper=False, now=1.0)


def test_hedge_fires_only_when_its_source_fills() -> None:
    g = run([("a", "b", "filled")], ("a", "b"))
    assert g.roots() == ["a"]
    g.on_activated("a")
    assert g.on_fill("a", Q // 2) == []
    assert g.nodes["a"].status == NodeStatus.partially_filled and g.nodes["a"].filled_units == 50
    assert g.on_fill("a", Q // 2) == ["b"]
    assert g.nodes["a"].status == NodeStatus.filled and g.nodes["a"].fill_count == 2


def test_partially_filled_fires_on_the_first_fill_even_a_complete_one() -> None:
    g = run([("a", "b", "partially_filled"), ("a", "c", "filled")])
    g.on_activated("a")
    assert g.on_fill("a", Q) == ["b", "c"]


def test_cancel_and_reject_triggers_and_the_outcome() -> None:
    g = run([("a", "b", "rejected"), ("b", "c", "cancelled")])
    assert g.on_rejected("a", "post_only_would_take") == ["b"]
    g.on_activated("b")
    assert g.on_cancelled("b", "self_trade_prevented") == ["c"]
    g.on_activated("c")
    g.on_fill("c", Q)
    assert g.quiescent() and g.outcome() == GraphStatus.completed  # the rejection was handled by an edge


def test_unhandled_rejection_fails_the_graph_and_untriggered_nodes_stay_pending() -> None:
    g = run([("a", "b", "filled")], ("a", "b"))
    g.on_rejected("a", "market_closed")
    assert g.quiescent() and g.pending() == ["b"] and g.outcome() == GraphStatus.failed
    g.end(g.outcome())
    assert g.status == GraphStatus.failed
    with pytest.raises(IllegalTransition):
        g.end(GraphStatus.completed)


def test_user_cancel_outcome_and_silent_cancel() -> None:
    g = run([("a", "b", "cancelled")], ("a", "b"))
    g.on_activated("a")
    g.user_cancelled = True
    assert g.on_cancelled("a", "cancelled_by_user", fire=False) == []
    assert g.outcome() == GraphStatus.cancelled


# -- one model, one row ------------------------------------------------------------------------------


def test_a_node_round_trips_through_its_store_row() -> None:
    g = run([("a", "b", "filled")], ("a", "b"))
    a = g.nodes["a"]
    assert a.node_order_id == "graph:g:a:1" and a.graph_id == "g"
    g.on_activated("a")
    g.on_fill("a", Q // 4, notional_1e8=Q // 8, fee_1e8=7)
    a.order_seq, a.activated_at = 3, 1.0
    a.stamp(2.0)
    back = Node.from_row(a.row("client"))
    assert back.row("client") == a.row("client")
    assert (back.status, back.filled_units, back.fees_1e8, back.updated_at) == (NodeStatus.partially_filled, 25, 7, 2.0)


def test_a_graph_read_back_from_the_store_knows_which_edges_fired() -> None:
    g = run([("a", "b", "partially_filled"), ("a", "c", "filled"), ("b", "c", "cancelled")])
    g.on_activated("a")
    assert g.on_fill("a", Q // 2) == ["b"]
    g.on_activated("b")
    g.on_cancelled("b", "cancelled_by_user", fire=False)
    row = {**g.row(key_id="k", run_id=None, idempotency_key=None, request_hash=None, now=1.0),
           "nodes": [n.row("client") for n in g.nodes.values()]}
    back = Graph.from_rows(row)
    assert back.fired == {0} and back.paper is False
    assert back.on_fill("a", Q // 2) == ["c"]  # `filled` had not fired; `partially_filled` does not again


def test_kalshi_tapered_markets_take_fine_steps_only_near_the_ends() -> None:
    """price_level_structure tapered_deci_cent: 0.001 below 0.10 and above 0.90, 0.01 between."""
    from dataclasses import replace

    from sequence.market import ManualClock, MarketListed, MarketService

    svc = MarketService.simulated(seed=1, clock=ManualClock(), venues=["kalshi"])
    base = next(iter(svc.catalogue))
    ranges = [{"start": "0.0000", "end": "0.1000", "step": "0.0010"},
              {"start": "0.1000", "end": "0.9000", "step": "0.0100"},
              {"start": "0.9000", "end": "1.0000", "step": "0.0010"}]
    spec = replace(base, slug="KXTAPER", book_symbol="KXTAPER-YES", yes_token_id="KXTAPER-YES",
                   no_token_id="KXTAPER-NO", aliases=("KXTAPER",), tick=10,
                   extra={**base.extra, "price_level_structure": "tapered_deci_cent", "price_ranges": ranges})
    svc.apply([MarketListed(0, spec.book_symbol, spec)])
    assert svc.instrument("KXTAPER").price_steps == ((0, 1000, 10), (1000, 9000, 100), (9000, 10000, 10))

    def price(symbol: str, p: float) -> float:
        body = {"nodes": [{"node_id": "a", "symbol": symbol, "venue": "kalshi", "side": "buy", "qty": 1, "instrument_type": "prediction",
                           "limit_price": p}], "edges": []}
        n = parse_graph(body, svc.instrument, venues=svc.venues, force_paper=True).nodes[0]
        assert n.limit_price is not None
        return n.limit_price

    assert price("KXTAPER", 0.055) == 0.055  # fine step near 0
    assert price("KXTAPER", 0.505) == 0.50  # 0.01 steps in the middle (half to even)
    assert price("KXTAPER", 0.515) == 0.52
    assert price("KXTAPER", 0.957) == 0.957
    assert price("KXTAPER-NO", 0.945) == 0.945  # NO 0.945 is YES 0.055: the fine band
    assert price("KXTAPER-NO", 0.455) == 0.46
