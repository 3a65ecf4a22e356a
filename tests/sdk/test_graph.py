"""Pure helpers: node(), graph activation, cross_price()."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sequence_markets import Sequence, cross_price
from sequence_markets._graph import fills_of_graph, graph_body, node


def test_node_builds_the_wire_dict_and_omits_none() -> None:
    assert node("leg", "X", "buy", 2) == {
        "node_id": "leg",
        "symbol": "X",
        "side": "buy",
        "qty": 2,
        "instrument_type": "spot",
        "urgency": "normal",
    }


def test_node_passes_extra_fields_through() -> None:
    built = node(
        "leg",
        "X",
        "sell",
        1.5,
        venue="kalshi",
        instrument_type="prediction",
        limit_price=0.42,
        urgency="high",
        time_in_force="ioc",
        activation="root",
    )
    assert built["venue"] == "kalshi"
    assert built["limit_price"] == 0.42
    assert built["time_in_force"] == "ioc"
    assert built["activation"] == "root"


def test_node_method_is_pure_and_matches_the_seed_call() -> None:
    seq = Sequence("k", "http://unused.invalid")  # never connects
    built = seq.node(
        node_id="leg",
        symbol="TOK",
        side="buy",
        qty=1.0,
        venue="kalshi",
        instrument_type="prediction",
        limit_price=0.12,
    )
    assert built == node("leg", "TOK", "buy", 1.0, "kalshi", "prediction", 0.12)
    seq.close()


def test_roots_are_nodes_that_no_edge_targets() -> None:
    nodes = [node(n, "X", "buy", 1) for n in ("a", "b", "c", "d")]
    edges = [
        {"from": "a", "to": "b", "trigger": "filled"},
        {"from": "b", "to": "c", "trigger": "cancelled"},
    ]
    body = graph_body(nodes, edges)
    assert [n["activation"] for n in body["nodes"]] == ["root", "triggered", "triggered", "root"]


def test_no_edges_means_every_node_is_a_root() -> None:
    body = graph_body([node("a", "X", "buy", 1), node("b", "Y", "sell", 1)], [])
    assert {n["activation"] for n in body["nodes"]} == {"root"}
    assert body["edges"] == []


def test_graph_body_copies_inputs_so_nodes_can_be_reused() -> None:
    a = node("a", "X", "buy", 1)
    edges = [{"from": "z", "to": "a", "trigger": "filled"}]
    first = graph_body([a], edges)
    second = graph_body([a])
    assert "activation" not in a
    assert first["nodes"][0]["activation"] == "triggered"
    assert second["nodes"][0]["activation"] == "root"
    assert first["edges"] is not edges


def test_explicit_activation_is_kept() -> None:
    body = graph_body([node("a", "X", "buy", 1, activation="triggered")])
    assert body["nodes"][0]["activation"] == "triggered"


def test_a_single_node_dict_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="list of nodes"):
        graph_body(node("a", "X", "buy", 1))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("side", "reference", "tick", "expected"),
    [
        ("buy", 0.29, 0.01, 0.3),
        ("buy", 0.57, 0.01, 0.58),
        ("sell", 0.15, 0.01, 0.14),
        ("sell", 0.152, 0.001, 0.151),
        ("buy", 0.999, 0.001, 1.0),
        ("sell", 0.01, 0.01, 0.01),  # floored at one tick
        ("sell", 0.005, 0.01, 0.01),
        ("buy", 101.25, 0.25, 101.5),
        ("buy", 64000.0, 0.01, 64000.01),
        ("buy", 0.125, 0.01, 0.14),  # off-tick reference: 13.5 ticks rounds half-even to 14
    ],
)
def test_cross_price_examples(side: str, reference: float, tick: float, expected: float) -> None:
    assert cross_price(side, reference, tick) == expected


def test_cross_price_is_exact_where_the_seed_formula_drifts() -> None:
    def force_cross_price(side: str, reference: float, tick: float) -> float:  # the seed's
        raw = reference + tick if side == "buy" else reference - tick
        return max(tick, round(raw / tick) * tick)

    drifted = [
        p / 100
        for p in range(1, 99)
        if force_cross_price("buy", p / 100, 0.01) != round((p + 1) / 100, 2)
    ]
    assert drifted  # the float formula really does produce 0.30000000000000004 and friends
    for reference in drifted:
        assert cross_price("buy", reference, 0.01) == round(reference + 0.01, 2)


def test_cross_price_is_also_a_static_method_on_the_client() -> None:
    assert Sequence.cross_price("buy", 0.29, 0.01) == 0.3


@pytest.mark.parametrize(
    ("side", "reference", "tick"),
    [
        ("hold", 1.0, 0.01),
        ("buy", 1.0, 0.0),
        ("buy", 1.0, -0.01),
        ("buy", float("nan"), 0.01),
        ("buy", 1.0, float("inf")),
        ("buy", "x", 0.01),
    ],
)
def test_cross_price_rejects_bad_arguments(side: str, reference: float, tick: float) -> None:
    with pytest.raises(ValueError):
        cross_price(side, reference, tick)


ticks = st.sampled_from([1.0, 0.5, 0.25, 0.1, 0.05, 0.01, 0.005, 0.001, 0.0001])


@given(
    ticks=ticks,
    steps=st.integers(min_value=1, max_value=10**7),
    side=st.sampled_from(["buy", "sell"]),
)
def test_cross_price_on_tick_references_moves_exactly_one_tick(
    ticks: float, steps: int, side: str
) -> None:
    tick = Decimal(repr(ticks))
    reference = float(tick * steps)
    price = Decimal(repr(cross_price(side, reference, ticks)))
    expected = tick * (steps + 1) if side == "buy" else max(tick, tick * (steps - 1))
    assert price == expected


@given(tick=ticks, reference=st.floats(min_value=0.0, max_value=1e6, allow_nan=False))
def test_cross_price_is_aligned_and_crosses(tick: float, reference: float) -> None:
    buy = Decimal(repr(cross_price("buy", reference, tick)))
    sell = Decimal(repr(cross_price("sell", reference, tick)))
    step = Decimal(repr(tick))
    assert buy % step == 0 and sell % step == 0
    assert buy > Decimal(repr(reference))
    assert sell >= step
    assert sell < Decimal(repr(reference)) or sell == step


def test_fills_of_graph_matches_the_prefix_only() -> None:
    fills = [
        {"node_order_id": "graph:g1:leg:1"},
        {"node_order_id": "graph:g10:leg:1"},  # a prefix of the id is not enough
        {"node_order_id": None},
        {},
        "junk",
    ]
    assert fills_of_graph(fills, "g1") == [{"node_order_id": "graph:g1:leg:1"}]
