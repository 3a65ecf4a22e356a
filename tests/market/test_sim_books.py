"""Behaviour of the simulated books over simulated time."""

from __future__ import annotations

import itertools
from collections import Counter

from sequence.market import Book, ManualClock, MarketService, Side, TickSizeChange
from sequence.market.book import BookView

from .conftest import run_for


def check_book(view: BookView, prediction: bool) -> None:
    bid, ask = view.top()
    assert bid is None or ask is None or bid < ask, f"{view.symbol} crossed"
    for side in (Side.BID, Side.ASK):
        for price, size in view.iter_levels(side):
            assert size > 0 and price % view.tick == 0
            if prediction:
                assert view.tick <= price <= view.price_scale - view.tick


def test_books_stay_sane_and_kalshi_yes_no_are_consistent(
    service: MarketService, clock: ManualClock
) -> None:
    for _ in range(6):
        run_for(service, clock, 5.0)
        for m in service.catalogue:
            if m.instrument_type == "spot":
                check_book(service.book(m.symbol or ""), prediction=False)
                continue
            yes = service.book(m.yes_token_id or "")
            no = service.book(m.no_token_id or "")
            check_book(yes, prediction=True)
            check_book(no, prediction=True)
            yq = service.quote(m.yes_token_id or "", depth=5)
            nq = service.quote(m.no_token_id or "", depth=5)
            if nq["nbbo"]["bid"] is None:
                assert yq["nbbo"]["ask"] is None
            else:
                assert yq["nbbo"]["ask"] == round(1 - nq["nbbo"]["bid"], 4)
            if yq["nbbo"]["bid"] is not None:
                assert nq["nbbo"]["ask"] == round(1 - yq["nbbo"]["bid"], 4)
            assert [lv["size"] for lv in yq["asks"]] == [lv["size"] for lv in nq["bids"]]


def test_one_sided_books_exist_on_both_sides(service: MarketService, clock: ManualClock) -> None:
    run_for(service, clock, 10.0)
    no_bid = []
    no_ask = []
    for m in service.catalogue:
        if m.venue != "kalshi" or not m.active:
            continue
        bid, ask = service.book(m.yes_token_id or "").top()
        if bid is None and ask is not None:
            no_bid.append(m.slug)
        if ask is None and bid is not None:
            no_ask.append(m.slug)
    assert len(no_bid) >= 3  # far out of the money: nobody bids YES (probe falls back to NO)
    assert len(no_ask) >= 3  # deep in the money: nobody offers YES
    for slug in no_bid:
        q = service.quote(f"{slug}-NO", depth=3)
        assert q["nbbo"]["bid"] is not None and q["nbbo"]["ask"] is None


def test_inactive_markets_have_empty_books(service: MarketService, clock: ManualClock) -> None:
    run_for(service, clock, 2.0)
    inactive = [m for m in service.catalogue if not m.active]
    assert inactive
    for m in inactive:
        q = service.quote(m.yes_token_id or "", depth=5)
        assert q["nbbo"] == {"bid": None, "ask": None, "mid": None, "bid_size": None, "ask_size": None}
        assert q["bids"] == [] and q["asks"] == [] and q["active"] is False


def test_polymarket_tick_sizes_change_over_time() -> None:
    clock = ManualClock()
    svc = MarketService.simulated(seed=7, clock=clock, venues=["polymarket"])
    changes: list[TickSizeChange] = []
    svc.add_listener(lambda evs: changes.extend(e for e in evs if isinstance(e, TickSizeChange)))
    for _ in range(60):  # up to ten simulated minutes
        run_for(svc, clock, 10.0, step=1.0)
        if changes:
            break
    assert changes, "no tick-size change in ten simulated minutes"
    for ch in changes:
        book = svc.book(ch.symbol)
        assert isinstance(book, Book)
        assert ch.tick in (10, 100)


def test_liquid_tops_move_several_times_a_second(service: MarketService, clock: ManualClock) -> None:
    tops: dict[str, tuple[int | None, int | None]] = {}
    moves: Counter[str] = Counter()
    symbols = [m.book_symbol for m in service.catalogue if m.active]
    for _ in range(200):  # 20 simulated seconds
        clock.advance(0.1)
        service.pump()
        for s in symbols:
            top = service.book(s).top()
            if tops.get(s) != top:
                moves[s] += 1
                tops[s] = top
    busiest = moves.most_common(20)
    assert busiest[-1][1] / 20 >= 1.5  # the 20 busiest markets move at least 1.5 times/s


def test_quiet_periods_happen() -> None:
    clock = ManualClock()
    svc = MarketService.simulated(seed=7, clock=clock, venues=["coinbase"])
    stamps: list[int] = []
    svc.add_listener(lambda evs: stamps.extend(e.ts_ms for e in evs if e.symbol == "BTC-USD"))
    run_for(svc, clock, 900.0, step=1.0)
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert max(gaps) >= 1000  # BTC-USD wakes ~10x/s, so a 1 s gap is a quiet period
