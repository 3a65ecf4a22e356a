"""The product document's discovery code must find tradable markets in the simulator.

``_probe_two_sided``, ``find_kalshi_tradable`` and ``find_polymarket_tradable``
below are copied from seed/hosted-strategies.md unchanged; ``FakeSeq`` answers
their two SDK calls from the service, through a JSON round trip like the wire.
"""

# mypy: disable-error-code="no-untyped-def,no-untyped-call"

from __future__ import annotations

import json
from typing import Any

import pytest

from sequence.market import ManualClock, MarketError, MarketService

from .conftest import run_for


class SequenceError(Exception):
    pass


class FakeSeq:
    def __init__(self, service: MarketService) -> None:
        self.service = service

    def markets(self, **params: Any) -> dict[str, Any]:
        try:
            return json.loads(json.dumps(self.service.markets(**params)))  # type: ignore[no-any-return]
        except MarketError as exc:
            raise SequenceError(str(exc)) from exc

    def quote(self, symbol: str, depth: int = 10) -> dict[str, Any]:
        try:
            return json.loads(json.dumps(self.service.quote(symbol, depth=depth)))  # type: ignore[no-any-return]
        except MarketError as exc:
            raise SequenceError(str(exc)) from exc


# --- verbatim from the seed ------------------------------------------------------------------
def _probe_two_sided(seq, symbol):
    """Return the quote dict if the book has a real bid > 0, else None."""
    try:
        q = seq.quote(symbol, depth=3)
    except SequenceError:
        return None
    bid = ((q or {}).get("nbbo") or {}).get("bid") or 0
    return q if bid > 0 else None


def find_kalshi_tradable(seq):
    r = seq.markets(venue="kalshi", limit=30, order="volume", active=True)
    for m in (r or {}).get("markets", []):
        if (m.get("liquidity") or 0) < 100:
            continue
        for side, token_field in (("yes", "yes_token_id"), ("no", "no_token_id")):
            tok = m.get(token_field)
            if tok and _probe_two_sided(seq, tok) is not None:
                return {**m, "_chosen_side": side, "_chosen_symbol": tok}
    return None


def find_polymarket_tradable(seq):
    # `expand=outcomes` flattens multi-outcome events (e.g. "World Cup
    # Winner") into one row per outcome with `yes_token_id` populated.
    r = seq.markets(
        venue="polymarket", limit=200, order="volume", active=True,
        expand="outcomes",
    )
    for m in (r or {}).get("markets", []):
        if m.get("is_placeholder_outcome") or (m.get("liquidity") or 0) < 1000:
            continue
        tok = m.get("yes_token_id")
        if tok and _probe_two_sided(seq, tok) is not None:
            return {**m, "_chosen_side": "yes", "_chosen_symbol": tok}
    return None
# ------------------------------------------------------------------------------------------------


def safe_resting_price(best_bid: float) -> float:
    """Also from the seed: half the bid, floored at 1¢, whole cents."""
    if best_bid is None or best_bid <= 0:
        return 0.01
    half_cents = int(best_bid * 100 / 2)
    return max(0.01, half_cents / 100.0)


@pytest.mark.parametrize("seed", range(20))
def test_seed_discovery_succeeds(seed: int) -> None:
    clock = ManualClock()
    service = MarketService.simulated(seed=seed, clock=clock)
    seq = FakeSeq(service)
    for elapsed in (0.0, 5.0, 20.0):  # at start, and after the books have moved
        run_for(service, clock, elapsed, step=0.5)
        kalshi = find_kalshi_tradable(seq)
        poly = find_polymarket_tradable(seq)
        assert kalshi is not None, f"seed {seed}: no tradable Kalshi market"
        assert poly is not None, f"seed {seed}: no tradable Polymarket market"
        assert kalshi["venue"] == "kalshi" and poly["venue"] == "polymarket"
        assert poly.get("outcome_name")
        for m in (kalshi, poly):
            q = seq.quote(m["_chosen_symbol"], depth=5)
            bid = q["nbbo"]["bid"]
            assert bid > 0
            # the seed's resting order is on the tick grid and inside the venue's range
            inst = service.instrument(m["_chosen_symbol"])
            price = safe_resting_price(bid)
            assert inst.in_range(price) and inst.aligned(price)


def test_discovery_sometimes_needs_the_no_fallback() -> None:
    """Far-from-the-money strikes are listed with YES bids missing; NO has them."""
    service = MarketService.simulated(seed=0, clock=ManualClock())
    seq = FakeSeq(service)
    rows = seq.markets(venue="kalshi", limit=500, active=True)["markets"]
    fallbacks = [
        m for m in rows
        if _probe_two_sided(seq, m["yes_token_id"]) is None
        and _probe_two_sided(seq, m["no_token_id"]) is not None
    ]  # fmt: skip
    assert fallbacks
