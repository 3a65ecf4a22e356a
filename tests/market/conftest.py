"""Fixtures for the market tests: seeded services on a manual clock."""

from __future__ import annotations

import pytest

from sequence.market import ManualClock, MarketService


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def service(clock: ManualClock) -> MarketService:
    return MarketService.simulated(seed=7, clock=clock)


def run_for(service: MarketService, clock: ManualClock, seconds: float, step: float = 0.1) -> int:
    """Advance the manual clock in steps, pumping each time; returns events applied."""
    n = 0
    for _ in range(round(seconds / step)):
        clock.advance(step)
        n += service.pump()
    return n
