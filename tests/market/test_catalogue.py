"""Catalogue shapes: what the simulated venues list."""

from __future__ import annotations

import re

from sequence.market import Catalogue, ManualClock, MarketService
from sequence.market.venues.sim_coinbase import build_coinbase
from sequence.market.venues.sim_kalshi import build_kalshi
from sequence.market.venues.sim_polymarket import build_polymarket, token_id

START = ManualClock().now()  # 2026-11-25


def test_kalshi_catalogue_has_realistic_tickers_and_tokens() -> None:
    cat, params = build_kalshi(START, 7)
    markets = list(cat)
    assert len(markets) >= 40
    assert len({m.event_slug for m in markets}) >= 6
    assert "KXBTCD-26NOV30-T98000" in {m.slug for m in markets}
    for m in markets:
        # SERIES-YYMON[DD][extra]-STRIKE, e.g. KXBTCD-26NOV30-T98000, KXFED-26DEC-T3.75
        assert re.fullmatch(r"KX[A-Z]+-\d\d[A-Z]{3}(\d\d)?[A-Z]*-[A-Z][A-Z0-9.]*", m.slug), m.slug
        assert m.event_slug and m.slug.startswith(m.event_slug + "-")
        assert m.yes_token_id == m.slug + "-YES" and m.no_token_id == m.slug + "-NO"
        assert m.aliases == (m.slug,)
        assert m.tick == 100 and m.min_notional == 0.0 and m.instrument_type == "prediction"
        assert m.close_time and m.close_time.endswith("Z")
        assert (m.book_symbol in params) == m.active
    assert any(not m.active for m in markets)


def test_polymarket_catalogue_has_binary_and_multi_outcome_events() -> None:
    cat, params = build_polymarket(START, 7)
    multi = [e for e in cat.events if e.multi_outcome]
    binary = [e for e in cat.events if not e.multi_outcome]
    assert len(binary) >= 4
    winner = next(e for e in multi if "world-cup" in e.slug)
    assert len(winner.markets) >= 30 and winner.neg_risk
    by_slug = {m.slug: m for m in cat}
    outcomes = [by_slug[s] for s in winner.markets]
    assert any(m.is_placeholder_outcome for m in outcomes)
    assert sum(params[m.book_symbol].fair for m in outcomes if not m.is_placeholder_outcome) / 10_000 > 0.9
    ticks = {m.tick for m in cat if m.active}
    assert ticks == {100, 10}  # 0.01 and 0.001
    for m in cat:
        assert m.yes_token_id and m.no_token_id and m.yes_token_id != m.no_token_id
        assert re.fullmatch(r"[1-9]\d{76}", m.yes_token_id)
        assert re.fullmatch(r"[1-9]\d{76}", m.no_token_id)
        assert m.min_notional == 1.0 and m.min_order_size == 5.0
        assert m.neg_risk is not None
    assert token_id("a", "Yes") == token_id("a", "Yes") != token_id("a", "No")


def test_token_ids_do_not_depend_on_the_seed() -> None:
    a = [m.yes_token_id for m in build_polymarket(START, 1)[0]]
    b = [m.yes_token_id for m in build_polymarket(START, 2)[0]]
    assert a == b


def test_coinbase_products_and_increments() -> None:
    cat, _ = build_coinbase(7)
    assert [m.symbol for m in cat] == ["BTC-USD", "ETH-USD", "SOL-USD"]
    for m in cat:
        assert m.instrument_type == "spot" and m.yes_token_id is None
        assert m.tick == 1 and m.price_scale == 100  # 0.01 price increment
        assert m.size_scale == 100_000_000 and m.extra["base_increment"] == "0.00000001"
        assert m.min_notional == 1.0


def test_catalogue_round_trips_through_json() -> None:
    svc = MarketService.simulated(seed=3, clock=ManualClock())
    again = Catalogue.from_json(svc.catalogue.to_json())
    assert again == svc.catalogue


def test_tickers_follow_the_clock_date() -> None:
    cat, _ = build_kalshi(START + 86400 * 40, 7)  # 2027-01-04
    assert any(m.slug.startswith("KXBTCD-27JAN09-") for m in cat)
