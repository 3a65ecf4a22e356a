from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sequence.market import Book, MirrorBook, Side


def make() -> Book:
    return Book("X-YES", tick=100)


def test_best_levels_and_iteration_are_best_first() -> None:
    b = make()
    for p, s in ((4000, 10), (4200, 5), (4100, 7)):
        b.set_level(Side.BID, p, s)
    for p, s in ((4500, 3), (4300, 1), (4400, 2)):
        b.set_level(Side.ASK, p, s)
    assert b.best_bid() == (4200, 5)
    assert b.best_ask() == (4300, 1)
    assert list(b.iter_levels(Side.BID)) == [(4200, 5), (4100, 7), (4000, 10)]
    assert list(b.iter_levels(Side.ASK)) == [(4300, 1), (4400, 2), (4500, 3)]
    assert b.depth(Side.BID, 2) == [(4200, 5), (4100, 7)]
    assert b.top() == (4200, 4300)
    assert not b.is_crossed()


def test_set_level_reports_changes_and_zero_removes() -> None:
    b = make()
    assert b.set_level(Side.BID, 4000, 10)
    assert not b.set_level(Side.BID, 4000, 10)
    assert b.set_level(Side.BID, 4000, 12)
    assert b.remove_level(Side.BID, 4000)
    assert not b.remove_level(Side.BID, 4000)
    assert b.best_bid() is None and b.level_count(Side.BID) == 0


def test_totals_and_notional_track_every_change() -> None:
    b = make()
    b.set_level(Side.BID, 4000, 10)
    b.set_level(Side.BID, 3900, 5)
    b.set_level(Side.BID, 4000, 3)
    assert b.total_size(Side.BID) == 8
    assert b.notional(Side.BID) == 4000 * 3 + 3900 * 5
    b.clear()
    assert b.total_size(Side.BID) == 0 and b.notional(Side.BID) == 0


def test_off_tick_prices_are_rejected() -> None:
    b = make()
    with pytest.raises(ValueError, match="tick"):
        b.set_level(Side.BID, 4050, 1)
    with pytest.raises(ValueError):
        b.set_level(Side.BID, 0, 1)


def test_sweep_walks_depth_without_mutating() -> None:
    b = make()
    for p, s in ((4300, 5), (4400, 5), (4500, 5)):
        b.set_level(Side.ASK, p, s)
    assert b.sweep(Side.ASK, 12) == [(4300, 5), (4400, 5), (4500, 2)]
    assert b.sweep(Side.ASK, 12, limit=4400) == [(4300, 5), (4400, 5)]
    assert b.sweep(Side.ASK, 100) == [(4300, 5), (4400, 5), (4500, 5)]
    assert b.total_size(Side.ASK) == 15
    b.set_level(Side.BID, 4000, 4)
    b.set_level(Side.BID, 3900, 4)
    assert b.sweep(Side.BID, 6, limit=4000) == [(4000, 4)]


def test_set_tick_drops_off_grid_levels() -> None:
    b = Book("P", tick=10)
    b.set_level(Side.BID, 4010, 1)
    b.set_level(Side.BID, 4000, 2)
    removed = b.set_tick(100)
    assert removed == [(Side.BID, 4010)]
    assert list(b.iter_levels(Side.BID)) == [(4000, 2)]
    assert b.tick_size == 0.01


def test_mirror_is_the_complement_and_writes_through() -> None:
    yes = make()
    no = MirrorBook(yes, "X-NO")
    yes.set_level(Side.BID, 4100, 10)
    yes.set_level(Side.ASK, 4300, 7)
    assert no.best_bid() == (5700, 7)  # NO bid = 1 - YES ask
    assert no.best_ask() == (5900, 10)  # NO ask = 1 - YES bid
    assert no.top() == (5700, 5900)
    no.set_level(Side.BID, 5800, 2)  # a NO bid at 0.58 is a YES ask at 0.42
    assert yes.best_ask() == (4200, 2)
    assert no.notional(Side.ASK) == 5900 * 10
    assert no.total_size(Side.BID) == yes.total_size(Side.ASK)


def test_emitted_floats_are_clean_decimals() -> None:
    b = make()
    b.set_level(Side.BID, 3000, 10)
    b.set_level(Side.ASK, 3100, 10)
    text = json.dumps(b.levels_json(Side.BID, 5) + b.levels_json(Side.ASK, 5))
    assert "0.3," in text and "0.31," in text
    assert "0000000" not in text and "9999999" not in text


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([Side.BID, Side.ASK]),
            st.integers(min_value=1, max_value=99),
            st.integers(min_value=0, max_value=50),
        ),
        max_size=120,
    )
)
def test_book_matches_a_naive_model(ops: list[tuple[Side, int, int]]) -> None:
    b = make()
    model: dict[Side, dict[int, int]] = {Side.BID: {}, Side.ASK: {}}
    for side, cents, size in ops:
        price = cents * 100
        b.set_level(side, price, size)
        if size:
            model[side][price] = size
        else:
            model[side].pop(price, None)
    bids = sorted(model[Side.BID].items(), reverse=True)
    asks = sorted(model[Side.ASK].items())
    assert list(b.iter_levels(Side.BID)) == bids
    assert list(b.iter_levels(Side.ASK)) == asks
    assert b.total_size(Side.BID) == sum(s for _, s in bids)
    assert b.notional(Side.ASK) == sum(p * s for p, s in asks)
    mirror = MirrorBook(b, "NO")
    assert list(mirror.iter_levels(Side.BID)) == [(10_000 - p, s) for p, s in asks]
    assert b.copy().snapshot() == {**b.snapshot()}
