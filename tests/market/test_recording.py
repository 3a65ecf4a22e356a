"""Record → replay reproduces the books."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from sequence.market import BookReset, ManualClock, MarketListed, MarketService, RecordingError
from sequence.market.catalogue import EventSpec

from .conftest import run_for


def books(service: MarketService) -> dict[str, object]:
    return {s: service.book(s).snapshot() for s in service.symbols()}


@pytest.mark.parametrize("name", ["day.jsonl", "day.jsonl.gz"])
def test_record_then_replay_gives_the_same_books(tmp_path: Path, name: str) -> None:
    clock = ManualClock()
    live = MarketService.simulated(seed=9, clock=clock)
    run_for(live, clock, 5.0)  # recording starts mid-session
    path = tmp_path / name
    rec = live.record(path, meta={"note": "test"})
    checkpoints = []
    for _ in range(3):
        run_for(live, clock, 4.0)
        checkpoints.append((clock.now(), books(live), live.markets(limit=500, expand="outcomes")))
    rec.close()
    assert rec.events_written > 1000

    rclock = ManualClock(clock.now() - 12.0)  # replay from where the recording began
    replay = MarketService.from_recording(path, clock=rclock)
    assert [m.slug for m in replay.catalogue] == [m.slug for m in live.catalogue]
    for ts, expected, listing in checkpoints:
        rclock.set(ts)
        replay.pump()
        assert books(replay) == expected
        got = replay.markets(limit=500, expand="outcomes")
        assert [(m["slug"], m["volume"], m["liquidity"]) for m in got["markets"]] == [
            (m["slug"], m["volume"], m["liquidity"]) for m in listing["markets"]
        ]
    assert replay.next_event_ms() is None  # the recording is exhausted
    replay.close()


def test_replay_speed_and_rebasing(tmp_path: Path) -> None:
    clock = ManualClock()
    live = MarketService.simulated(seed=2, clock=clock, venues=["coinbase"])
    with live.record(tmp_path / "r.jsonl"):
        run_for(live, clock, 10.0)
    final = books(live)
    later = ManualClock(clock.now() + 86_400)  # replay a day later, twice as fast
    replay = MarketService.from_recording(tmp_path / "r.jsonl", clock=later, speed=2.0)
    later.advance(4.9)
    replay.pump()
    assert books(replay) != final
    later.advance(0.2)
    replay.pump()
    assert books(replay) == final
    assert replay.quote("BTC-USD")["ts"] <= later.now()
    replay.close()


def test_recording_format_is_jsonl_with_a_header(tmp_path: Path) -> None:
    clock = ManualClock()
    live = MarketService.simulated(seed=2, clock=clock, venues=["polymarket"])
    with live.record(tmp_path / "r.jsonl"):
        run_for(live, clock, 2.0)
    lines = (tmp_path / "r.jsonl").read_text().splitlines()
    header = json.loads(lines[0])
    assert header["format"] == "sequence.market.recording" and header["version"] == 2
    assert header["meta"]["venues"] == ["polymarket"]
    books_ = [json.loads(x) for x in lines[1:] if x.startswith("{")]
    assert len(books_) == len(header["symbols"])
    events = [json.loads(x) for x in lines[1:] if x.startswith("[")]
    assert events and {e[1] for e in events} <= {"L", "X", "T"}


def test_bad_recordings_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    with pytest.raises(RecordingError):
        MarketService.from_recording(bad, clock=ManualClock())
    bad.write_text(json.dumps({"format": "other"}) + "\n")
    with pytest.raises(RecordingError):
        MarketService.from_recording(bad, clock=ManualClock())
    bad.write_text(json.dumps({"format": "sequence.market.recording", "version": 99}) + "\n")
    with pytest.raises(RecordingError, match="version"):
        MarketService.from_recording(bad, clock=ManualClock())


def test_live_rows_are_recorded_and_replayed(tmp_path: Path) -> None:
    """A live session lists markets and resets books as it goes; both replay."""
    clock = ManualClock()
    live = MarketService.simulated(seed=3, clock=clock, venues=["kalshi"])
    template = next(iter(live.catalogue))
    spec = replace(template, slug="KXNEW-26DEC01", title="New market", book_symbol="KXNEW-26DEC01-YES",
                   yes_token_id="KXNEW-26DEC01-YES", no_token_id="KXNEW-26DEC01-NO",
                   aliases=("KXNEW-26DEC01",), event_slug="KXNEW")
    event = EventSpec("kalshi", "KXNEW", "New event", ("KXNEW-26DEC01",))
    path = tmp_path / "live.jsonl"
    with live.record(path):
        run_for(live, clock, 1.0)
        t = int(clock.now() * 1000)
        live.apply([
            MarketListed(t, spec.book_symbol, spec, event),
            BookReset(t, spec.book_symbol, bids=((4100, 1200), (4000, 500)), asks=((4400, 900),)),
            BookReset(t, template.book_symbol, bids=((5000, 100),), asks=(), tick=10),
        ])
        run_for(live, clock, 1.0)
        expected = books(live)
    rows = [json.loads(x) for x in path.read_text().splitlines()[1:] if x.startswith("[")]
    assert {"M", "R"} <= {r[1] for r in rows}

    rclock = ManualClock(clock.now() - 2.0)
    replay = MarketService.from_recording(path, clock=rclock)
    assert "KXNEW-26DEC01" not in replay.symbols()  # listed later, not at the start
    rclock.set(clock.now())
    replay.pump()
    assert books(replay) == expected
    q = replay.quote("KXNEW-26DEC01")
    assert q["bids"][0]["price"] == 0.41 and q["asks"][0]["price"] == 0.44
    try:
        assert replay.market("KXNEW-26DEC01").title == "New market"
    finally:
        replay.close()


def test_a_listing_whose_symbol_is_taken_adds_nothing() -> None:
    clock = ManualClock()
    svc = MarketService.simulated(seed=3, clock=clock, venues=["kalshi"])
    a, b = list(svc.catalogue)[:2]
    clash = replace(b, slug="OTHER", book_symbol="OTHER-YES", yes_token_id="OTHER-YES",
                    no_token_id=a.no_token_id, aliases=())
    before = set(svc.symbols())
    svc.apply([MarketListed(0, clash.book_symbol, clash)])
    assert set(svc.symbols()) == before
    assert "OTHER-YES" not in svc.symbols()


def test_recording_chosen_markets_only(tmp_path: Path) -> None:
    clock = ManualClock()
    live = MarketService.simulated(seed=4, clock=clock, venues=["kalshi", "coinbase"])
    kalshi = next(m for m in live.catalogue if m.venue == "kalshi")
    path = tmp_path / "two.jsonl"
    with live.record(path, symbols=["BTC-USD", kalshi.no_token_id or ""]):
        run_for(live, clock, 2.0)
        expected = {s: live.book(s).snapshot() for s in ("BTC-USD", kalshi.book_symbol)}
    header = json.loads(path.read_text().splitlines()[0])
    assert sorted(header["symbols"]) == sorted(["BTC-USD", kalshi.book_symbol])
    assert {m["slug"] for m in header["catalogue"]["markets"]} == {"BTC-USD", kalshi.slug}
    rclock = ManualClock(clock.now() - 2.0)
    replay = MarketService.from_recording(path, clock=rclock)
    try:
        rclock.set(clock.now())
        replay.pump()
        assert {s: replay.book(s).snapshot() for s in expected} == expected
        assert len(replay.catalogue) == 2
    finally:
        replay.close()
