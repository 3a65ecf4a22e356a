"""Seeded simulation: the same seed replays the same events, however time is chunked."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from sequence.market import ManualClock, MarketService, SimConfig
from sequence.market.clock import RealClock, iso, seeded_rng
from sequence.market.venues import SimCoinbase, SimKalshi, SimPolymarket, SimVenue

VENUES: list[Callable[[ManualClock, SimConfig], SimVenue]] = [SimKalshi, SimPolymarket, SimCoinbase]


VenueFactory = Callable[[ManualClock, SimConfig], SimVenue]


def stream(venue_cls: VenueFactory, seed: int, steps: list[float]) -> list[object]:
    clock = ManualClock()
    venue = venue_cls(clock, SimConfig(seed=seed))
    events: list[object] = []
    for step in steps:
        clock.advance(step)
        events.extend(venue.advance(round(clock.now() * 1000)))
    return events


@pytest.mark.parametrize("venue_cls", VENUES)
def test_same_seed_gives_identical_event_streams(venue_cls: VenueFactory) -> None:
    a = stream(venue_cls, 11, [0.1] * 300)
    b = stream(venue_cls, 11, [0.1] * 300)
    assert len(a) > 100
    assert a == b


@pytest.mark.parametrize("venue_cls", VENUES)
def test_chunking_does_not_change_the_stream(venue_cls: VenueFactory) -> None:
    fine = stream(venue_cls, 3, [0.05] * 400)
    coarse = stream(venue_cls, 3, [1.0, 2.5, 0.5, 9.0, 7.0])
    assert fine == coarse


def test_different_seeds_differ() -> None:
    assert stream(SimKalshi, 1, [0.1] * 50) != stream(SimKalshi, 2, [0.1] * 50)


def test_service_replays_identically_including_books() -> None:
    def run() -> tuple[list[str], dict[str, Any]]:
        clock = ManualClock()
        svc = MarketService.simulated(seed=5, clock=clock)
        seen: list[object] = []
        svc.add_listener(seen.extend)
        for _ in range(100):
            clock.advance(0.1)
            svc.pump()
        books = {s: svc.book(s).snapshot() for s in svc.symbols()}
        return [repr(e) for e in seen], books

    assert run() == run()


def test_a_long_stall_is_skipped_not_replayed() -> None:
    clock = ManualClock()
    venue = SimKalshi(clock, SimConfig(seed=1, max_lag_s=5.0))
    clock.advance(3600)
    events = list(venue.advance(int(clock.now() * 1000)))
    # only the last five seconds are simulated
    assert events and min(e.ts_ms for e in events) >= int(clock.now() * 1000) - 5000


def test_clocks() -> None:
    c = ManualClock(100.0)
    assert c.now() == 100.0
    c.advance(1.5)
    assert c.now() == 101.5
    with pytest.raises(ValueError):
        c.advance(-1)
    with pytest.raises(ValueError):
        c.set(50)
    assert abs(RealClock().now() - __import__("time").time()) < 5
    assert iso(0, "seconds") == "1970-01-01T00:00:00Z"
    assert iso(0.125) == "1970-01-01T00:00:00.125Z" and iso(None) is None
    assert seeded_rng(1, "a").random() == seeded_rng(1, "a").random()
    assert seeded_rng(1, "a").random() != seeded_rng(1, "b").random()


def test_rate_is_configurable() -> None:
    def count(rate: float) -> int:
        clock = ManualClock()
        venue = SimCoinbase(clock, SimConfig(seed=1, rate_hz=rate))
        clock.advance(30)
        return len(list(venue.advance(int(clock.now() * 1000))))

    assert count(32.0) > 2.5 * count(8.0)
    with pytest.raises(ValueError):
        SimConfig(rate_hz=0)
