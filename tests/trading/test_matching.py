"""The pure matching core: unit cases and properties (hypothesis)."""

from __future__ import annotations

from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sequence.market.book import Book, Side
from sequence.trading.matching import (
    NO_LIQUIDITY,
    POST_ONLY_WOULD_TAKE,
    SELF_TRADE,
    TICK_CHANGED,
    Cancelled,
    Fill,
    LevelDelta,
    MatchingCore,
    Order,
    Print,
    Rejected,
    Rested,
)

TS = 1_000


def book(bids: dict[int, int] | None = None, asks: dict[int, int] | None = None) -> Book:
    b = Book("X", tick=100)
    for p, s in (bids or {}).items():
        b.set_level(Side.BID, p, s)
    for p, s in (asks or {}).items():
        b.set_level(Side.ASK, p, s)
    return b


def apply(b: Book, events: list) -> None:
    """What the engine does with a core's book deltas."""
    for e in events:
        if isinstance(e, LevelDelta):
            b.set_level(e.side, e.price, max(0, b.size_at(e.side, e.price) + e.delta))


def fills(events: list, order_id: str | None = None) -> list[Fill]:
    return [e for e in events if isinstance(e, Fill) and (order_id is None or e.order_id == order_id)]


# -- paper ---------------------------------------------------------------------------------


def test_paper_buy_walks_depth_at_book_prices_and_rests_the_rest() -> None:
    b = book(asks={5000: 300, 5100: 200, 5300: 1000})
    before = b.snapshot()
    core = MatchingCore("X")
    ev = core.submit(Order("o", Side.BID, 5100, 700), b, TS)
    assert [(f.price, f.size, f.liquidity) for f in fills(ev)] == [(5000, 300, "taker"), (5100, 200, "taker")]
    assert Rested("o", 5100, 200, False) in ev
    assert not [e for e in ev if isinstance(e, LevelDelta | Print)]
    assert b.snapshot() == before
    assert "o" in core


def test_paper_resting_order_fills_at_its_limit_when_the_book_crosses() -> None:
    b = book(bids={4000: 100}, asks={6000: 100})
    core = MatchingCore("X")
    assert fills(core.submit(Order("o", Side.BID, 5000, 150), b, TS)) == []
    assert core.rematch(b, TS + 1) == []  # nothing crosses yet
    b.set_level(Side.ASK, 4900, 100)
    ev = core.rematch(b, TS + 2)
    assert fills(ev) == [Fill("o", 5000, 100, "maker", TS + 2)]
    b.set_level(Side.ASK, 5000, 500)
    ev = core.rematch(b, TS + 3)
    assert fills(ev) == [Fill("o", 5000, 50, "maker", TS + 3)]
    assert "o" not in core


def test_paper_sell_never_below_limit() -> None:
    b = book(bids={5000: 100, 4900: 100, 4800: 100})
    core = MatchingCore("X")
    ev = core.submit(Order("s", Side.ASK, 4900, 500), b, TS)
    assert [(f.price, f.size) for f in fills(ev)] == [(5000, 100), (4900, 100)]
    assert Rested("s", 4900, 300, False) in ev


def test_market_order_takes_what_there_is_and_cancels_the_rest() -> None:
    b = book(asks={5000: 100})
    core = MatchingCore("X")
    ev = core.submit(Order("m", Side.BID, None, 250), b, TS)
    assert fills(ev)[0].size == 100
    assert Cancelled("m", 150, NO_LIQUIDITY) in ev
    assert "m" not in core


def test_post_only_is_rejected_when_marketable_and_rests_otherwise() -> None:
    b = book(bids={4000: 100}, asks={5000: 100})
    core = MatchingCore("X")
    assert core.submit(Order("p", Side.BID, 5000, 10, post_only=True), b, TS) == [
        Rejected("p", POST_ONLY_WOULD_TAKE)]
    ev = core.submit(Order("q", Side.BID, 4900, 10, post_only=True, paper=False), b, TS)
    assert Rested("q", 4900, 10, True) in ev
    assert LevelDelta(Side.BID, 4900, 10) in ev


def test_order_under_minimum_notional_is_hidden_and_never_matches() -> None:
    b = book(asks={4000: 1000})
    core = MatchingCore("X")
    ev = core.submit(Order("tiny", Side.BID, 5000, 100, paper=False, crossable=False), b, TS)
    assert ev == [Rested("tiny", 5000, 100, False)]
    assert core.own_size(Side.BID, 5000) == 0
    assert core.rematch(b, TS + 1) == []
    assert core.cancel("tiny") == [Cancelled("tiny", 100, "cancelled")]


# -- venue orders -----------------------------------------------------------------------------


def test_venue_order_takes_liquidity_and_rests_visibly() -> None:
    b = book(bids={4000: 100}, asks={5000: 100, 5100: 100})
    core = MatchingCore("X")
    ev = core.submit(Order("v", Side.BID, 5000, 300, paper=False, owner="a"), b, TS)
    assert fills(ev) == [Fill("v", 5000, 100, "taker", TS)]
    assert LevelDelta(Side.ASK, 5000, -100) in ev
    assert Print(Side.ASK, 5000, 100, TS) in ev
    assert LevelDelta(Side.BID, 5000, 200) in ev
    apply(b, ev)
    assert b.best_bid() == (5000, 200) and b.best_ask() == (5100, 100)
    assert core.own_size(Side.BID, 5000) == 200


def test_venue_orders_of_two_clients_match_each_other_venue_liquidity_first() -> None:
    b = book(bids={4000: 100}, asks={6000: 100})
    core = MatchingCore("X")
    ev = core.submit(Order("a1", Side.ASK, 5500, 100, paper=False, owner="a", seq=1), b, TS)
    apply(b, ev)
    b.set_level(Side.ASK, 5500, b.size_at(Side.ASK, 5500) + 40)  # venue joins the level behind us
    ev = core.submit(Order("b1", Side.BID, 5500, 120, paper=False, owner="b", seq=2), b, TS)
    assert fills(ev, "b1") == [Fill("b1", 5500, 40, "taker", TS),
                               Fill("b1", 5500, 80, "taker", TS, "a1")]
    assert fills(ev, "a1") == [Fill("a1", 5500, 80, "maker", TS, "b1")]
    apply(b, ev)
    assert b.size_at(Side.ASK, 5500) == 20 == core.own_size(Side.ASK, 5500)


def test_self_trade_prevention_cancels_the_incoming_remainder() -> None:
    b = book(asks={6000: 100})
    core = MatchingCore("X")
    apply(b, core.submit(Order("a1", Side.ASK, 5500, 100, paper=False, owner="a"), b, TS))
    ev = core.submit(Order("a2", Side.BID, 5600, 50, paper=False, owner="a"), b, TS)
    assert fills(ev) == []
    assert Cancelled("a2", 50, SELF_TRADE) in ev
    assert "a1" in core and "a2" not in core


def test_resting_venue_order_fills_as_maker_when_venue_crosses_it() -> None:
    b = book(bids={4000: 100}, asks={6000: 100})
    core = MatchingCore("X")
    apply(b, core.submit(Order("v", Side.BID, 5000, 150, paper=False), b, TS))
    b.set_level(Side.ASK, 4900, 100)  # the venue's ask drops through our bid
    ev = core.rematch(b, TS + 5)
    assert fills(ev) == [Fill("v", 5000, 100, "maker", TS + 5)]
    assert LevelDelta(Side.ASK, 4900, -100) in ev and LevelDelta(Side.BID, 5000, -100) in ev
    apply(b, ev)
    assert b.size_at(Side.BID, 5000) == 50 and b.size_at(Side.ASK, 4900) == 0


def test_cancel_removes_the_displayed_size() -> None:
    b = book()
    core = MatchingCore("X")
    apply(b, core.submit(Order("v", Side.ASK, 5000, 70, paper=False), b, TS))
    ev = core.cancel("v")
    assert ev == [Cancelled("v", 70, "cancelled"), LevelDelta(Side.ASK, 5000, -70)]
    assert core.cancel("v") == []


def test_tick_change_cancels_off_grid_venue_orders_only() -> None:
    b = Book("X", tick=10)
    core = MatchingCore("X")
    apply(b, core.submit(Order("off", Side.BID, 450, 10, paper=False), b, TS))
    apply(b, core.submit(Order("on", Side.BID, 400, 10, paper=False), b, TS))
    core.submit(Order("paper", Side.BID, 430, 10), b, TS)
    b.set_tick(100)
    assert core.on_tick_change(100) == [Cancelled("off", 10, TICK_CHANGED)]
    assert set(core.orders) == {"on", "paper"}


def test_restore_puts_a_partially_filled_order_back() -> None:
    core = MatchingCore("X")
    ev = core.restore(Order("v", Side.BID, 5000, 100, filled=30, paper=False))
    assert ev == [LevelDelta(Side.BID, 5000, 70)]
    with pytest.raises(ValueError):
        core.restore(Order("v", Side.BID, 5000, 100, paper=False))


def test_order_validation() -> None:
    with pytest.raises(ValueError):
        Order("x", Side.BID, 1, 0)
    with pytest.raises(ValueError):
        Order("x", Side.BID, 1, 10, filled=11)


# -- properties ----------------------------------------------------------------------------------

prices = st.integers(min_value=1, max_value=99).map(lambda t: t * 100)
sizes = st.integers(min_value=1, max_value=500)
levels = st.dictionaries(prices, sizes, max_size=8)


@st.composite
def books(draw: st.DrawFn) -> Book:
    bids = draw(levels)
    asks = draw(levels)
    if bids and asks:  # an uncrossed venue book
        top_bid = max(bids)
        asks = {p: s for p, s in asks.items() if p > top_bid}
    return book(bids, asks)


orders = st.lists(
    st.tuples(st.sampled_from([Side.BID, Side.ASK]), st.one_of(st.none(), prices), sizes,
              st.booleans(), st.sampled_from(["a", "b", "c"]), st.booleans()),
    min_size=1, max_size=25,
)
moves = st.lists(st.tuples(st.sampled_from([Side.BID, Side.ASK]), prices, st.integers(0, 500)), max_size=10)


def _check_fills(order_map: dict[str, Order], all_events: list) -> None:
    filled: dict[str, int] = defaultdict(int)
    for f in fills(all_events):
        o = order_map[f.order_id]
        filled[f.order_id] += f.size
        assert f.size > 0
        if o.limit is not None:  # buys never above, sells never below the limit
            assert f.price <= o.limit if o.side is Side.BID else f.price >= o.limit
    for oid, n in filled.items():
        assert n <= order_map[oid].qty  # no fill beyond the order's quantity
        assert n == order_map[oid].filled


@settings(max_examples=300, deadline=None)
@given(books(), orders, moves)
def test_properties_of_venue_and_paper_matching(b: Book, specs: list, venue_moves: list) -> None:
    core = MatchingCore("X")
    order_map: dict[str, Order] = {}
    everything: list = []
    for i, (side, limit, qty, paper, owner, post_only) in enumerate(specs):
        o = Order(f"o{i}", side, limit, qty, paper=paper, owner=owner, post_only=post_only and limit is not None,
                  seq=i)
        order_map[o.order_id] = o
        before = b.snapshot()
        ev = core.submit(o, b, TS + i)
        everything += ev
        if paper:  # paper fills never change the book
            assert not [e for e in ev if isinstance(e, LevelDelta | Print)]
            assert b.snapshot() == before
        # conservation: what the taker got equals what makers and the venue gave
        taker = sum(f.size for f in fills(ev, o.order_id))
        if not paper:
            given = sum(e.size for e in ev if isinstance(e, Print))
            assert taker == given
            makers = sum(f.size for f in fills(ev) if f.order_id != o.order_id)
            venue_taken = sum(-e.delta for e in ev if isinstance(e, LevelDelta)
                              and e.side is o.side.opposite)
            assert taker == venue_taken and makers <= taker
        apply(b, ev)
        # our own resting venue orders never cross each other
        own_bids = core.own_levels(Side.BID)
        own_asks = core.own_levels(Side.ASK)
        if own_bids and own_asks:
            assert max(own_bids) < min(own_asks)
        for side in (Side.BID, Side.ASK):  # the book shows at least our resting size
            for p, s in core.own_levels(side).items():
                assert b.size_at(side, p) >= s
    for side, price, size in venue_moves:
        own = core.own_size(side, price)
        b.set_level(side, price, size + own)
        ev = core.rematch(b, TS + 100)
        everything += ev
        apply(b, ev)
    _check_fills(order_map, everything)
    for oid, o in order_map.items():
        if oid in core:
            assert o.remaining > 0
