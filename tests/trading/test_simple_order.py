"""``simple_order`` (the WASM algos' integer shortcut) is never a second set of rules: whenever it
builds a node, the API's parser accepts the same order and builds the same node; and orders the
parser would round, rest under a minimum or refuse are left to the parser."""

from __future__ import annotations

import dataclasses
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from sequence.market.service import MarketService
from sequence.trading.validation import GraphError, parse_graph, simple_order

MARKET = MarketService.simulated(seed=7)
MARKET.pump()
SYMBOLS = sorted(MARKET.symbols())[:400]  # every venue's kind: spot, YES and NO tokens, tapered Kalshi


def fixed(v: int) -> str:
    q, r = divmod(v, 100_000_000)
    return f"{q}.{r:08d}"


def body(symbol: str, side: str, qty_1e8: int, px_1e8: int) -> dict:
    inst = MARKET.instrument(symbol)
    return {"nodes": [{"node_id": "o", "symbol": symbol, "side": side, "qty": fixed(qty_1e8),
                       "venue": inst.venue, "instrument_type": inst.instrument_type, "urgency": "normal",
                       "limit_price": fixed(px_1e8)}], "sandbox": True}


@st.composite
def orders(draw: st.DrawFn) -> tuple[str, str, int, int]:
    symbol = draw(st.sampled_from(SYMBOLS))
    inst = MARKET.instrument(symbol)
    unit_1e8 = 100_000_000 // inst.price_scale
    if draw(st.booleans()):  # on some tick
        ticks = (inst.price_scale // inst.tick) if inst.instrument_type == "prediction" else 20_000_000
        px = draw(st.integers(0, ticks + 1)) * inst.tick * unit_1e8
    else:  # anywhere, off-tick included
        px = draw(st.integers(1, 200_000 * 100_000_000 if inst.instrument_type == "spot" else 100_000_000))
    qty = draw(st.one_of(st.integers(1, 10**12), st.sampled_from([1, 100, 10**6, 10**8, 5 * 10**8, 10**10])))
    return symbol, draw(st.sampled_from(["buy", "sell"])), qty, px


@settings(max_examples=600, deadline=None)
@given(orders())
def test_a_node_from_integers_is_the_parsers_node(order: tuple[str, str, int, int]) -> None:
    symbol, side, qty, px = order
    inst = MARKET.instrument(symbol)
    fast = simple_order(inst, side, qty, px, "normal", True)
    try:
        slow = parse_graph(body(symbol, side, qty, px), MARKET.instrument, venues=MARKET.venues, force_paper=True)
    except GraphError:
        assert fast is None, f"the shortcut accepted what the parser refuses: {order}"
        return
    if fast is not None:
        assert [_fields(n) for n in fast.nodes] == [_fields(n) for n in slow.nodes]
        assert fast.edges == slow.edges and fast.paper == slow.paper


def _fields(node: object) -> dict:
    """A node's fields (nodes compare by identity)."""
    return {f.name: getattr(node, f.name) for f in dataclasses.fields(node)}  # type: ignore[arg-type]


def test_the_shortcut_takes_the_common_case_and_leaves_the_rest() -> None:
    inst = MARKET.instrument("BTC-USD")
    tick_1e8 = inst.tick * (100_000_000 // inst.price_scale)
    on_tick = 9_000_000 * tick_1e8  # $90,000.00
    assert simple_order(inst, "buy", 100_000, on_tick, "normal", True) is not None
    assert simple_order(inst, "buy", 100_000, on_tick + 1, "normal", True) is None  # off-tick: the parser rounds
    assert simple_order(inst, "buy", 1, on_tick, "normal", True) is None  # under a minimum: the parser decides
    assert simple_order(inst, "buy", 100_000, 0, "normal", True) is None  # a market order
    assert simple_order(replace(inst, active=False), "buy", 100_000, on_tick, "normal", True) is None


@settings(max_examples=3000, deadline=None)
@given(units=st.integers(min_value=0, max_value=10**18), exponent=st.integers(min_value=0, max_value=12))
def test_the_limit_price_float_is_the_one_the_decimal_division_gave(units: int, exponent: int) -> None:
    # Both paths now compute ``limit_units / price_scale``; scales are powers of ten by
    # construction (catalogue, venues), and for those it is the float the Decimal quotient gave.
    from decimal import Decimal

    scale = 10**exponent
    assert units / scale == float(Decimal(units) / scale)
