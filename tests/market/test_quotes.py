"""``quote``, ``prices`` and ``instrument``."""

from __future__ import annotations

import json

import pytest

from sequence.market import BadRequest, ManualClock, MarketService, MirrorBook, UnknownSymbol

from .conftest import run_for


def test_quote_shape_and_depth(service: MarketService, clock: ManualClock) -> None:
    run_for(service, clock, 3.0)
    q = service.quote("BTC-USD", depth=5)
    assert {"symbol", "venue", "instrument_type", "tick_size", "ts", "nbbo", "bids", "asks"} <= q.keys()
    assert q["symbol"] == "BTC-USD" and q["venue"] == "coinbase" and q["instrument_type"] == "spot"
    assert q["tick_size"] == 0.01 and q["ts"] == pytest.approx(clock.now(), abs=3.0)
    assert len(q["bids"]) == len(q["asks"]) == 5
    bids = [lv["price"] for lv in q["bids"]]
    asks = [lv["price"] for lv in q["asks"]]
    assert bids == sorted(bids, reverse=True) and asks == sorted(asks)
    nbbo = q["nbbo"]
    assert nbbo["bid"] == bids[0] and nbbo["ask"] == asks[0]
    assert nbbo["bid_size"] == q["bids"][0]["size"] and nbbo["mid"] == pytest.approx((bids[0] + asks[0]) / 2)
    assert len(service.quote("BTC-USD", depth=1)["bids"]) == 1
    assert service.quote("BTC-USD", depth=0)["bids"] == []


def test_quote_floats_have_no_drift(service: MarketService, clock: ManualClock) -> None:
    run_for(service, clock, 5.0)
    for sym in service.symbols():
        text = json.dumps(service.quote(sym, depth=20))
        assert "00000000" not in text.replace("0.00000001", "") or "BTC" in sym, sym
        assert "99999999" not in text, sym


def test_empty_sides_are_null(service: MarketService) -> None:
    one_sided = next(
        s for s in service.symbols("kalshi") if service.book(s).top()[0] is None and service.book(s).top()[1]
    )
    q = service.quote(one_sided, depth=3)
    assert q["nbbo"]["bid"] is None and q["nbbo"]["bid_size"] is None and q["nbbo"]["mid"] is None
    assert q["bids"] == [] and q["nbbo"]["ask"] is not None
    p = service.prices(one_sided)
    assert p["bid"] is None and p["mid"] is None and p["ask"] == q["nbbo"]["ask"]


def test_kalshi_ticker_alias_quotes_the_yes_book(service: MarketService) -> None:
    ticker = "KXBTCD-26NOV30-T98000"
    alias = service.quote(ticker, depth=5)
    yes = service.quote(ticker + "-YES", depth=5)
    assert alias["symbol"] == ticker
    assert alias["bids"] == yes["bids"] and alias["asks"] == yes["asks"] and alias["outcome"] == "yes"
    assert isinstance(service.book(ticker + "-NO"), MirrorBook)


def test_unknown_symbol_and_bad_depth(service: MarketService) -> None:
    with pytest.raises(UnknownSymbol) as info:
        service.quote("NOPE")
    assert info.value.status == 404 and info.value.details == {"symbol": "NOPE"}
    with pytest.raises(UnknownSymbol):
        service.instrument("NOPE")
    for depth in (-1, 101):
        with pytest.raises(BadRequest) as bad:
            service.quote("BTC-USD", depth=depth)
        assert bad.value.field == "depth"


def test_instrument_lookup(service: MarketService) -> None:
    k = service.instrument("KXBTCD-26NOV30-T98000-NO")
    assert (k.venue, k.instrument_type, k.outcome) == ("kalshi", "prediction", "no")
    assert k.complement == "KXBTCD-26NOV30-T98000-YES" and k.book_symbol == "KXBTCD-26NOV30-T98000-YES"
    assert (k.tick_size, k.min_price, k.max_price, k.min_notional) == (0.01, 0.01, 0.99, 0.0)
    assert k.aligned(0.42) and not k.aligned(0.425) and k.in_range(0.99) and not k.in_range(1.0)
    poly = next(m for m in service.catalogue if m.venue == "polymarket" and m.tick == 10 and m.active)
    p = service.instrument(poly.yes_token_id or "")
    assert p.tick_size == 0.001 and p.min_price == 0.001 and p.max_price == 0.999
    assert p.min_notional == 1.0 and p.min_order_size == 5.0 and p.aligned(0.005)
    c = service.instrument("ETH-USD")
    assert c.instrument_type == "spot" and c.max_price is None and c.outcome is None
    assert c.tick_size == 0.01 and c.size_scale == 100_000_000
