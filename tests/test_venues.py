"""The venue list lives in one place; every table keyed by venue covers exactly it."""

from __future__ import annotations

from sequence.market.clock import ManualClock
from sequence.market.service import SIM_VENUES, MarketService
from sequence.trading.fees import DEFAULT_FEES
from sequence.trading.validation import VENUE_RULES
from sequence.venues import VENUES


def test_every_venue_table_covers_the_venue_list() -> None:
    assert tuple(SIM_VENUES) == VENUES
    assert set(VENUE_RULES) == set(VENUES)
    assert set(DEFAULT_FEES) == set(VENUES)


def test_the_simulators_quote_every_venue_by_default() -> None:
    assert MarketService.simulated(seed=1, clock=ManualClock()).venues == VENUES
