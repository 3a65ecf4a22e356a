"""Replay a recording as a venue adapter.

The books start as they were when the recording began; events then replay at
their recorded pace (``speed`` 2.0 = twice as fast), re-based to the clock's
time at construction. After the last event the books stay as they are.
``venues`` keeps only those venues' markets (``SEQUENCE_VENUES`` with a venue
``off``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path

from ..book import Book
from ..catalogue import Catalogue
from ..clock import Clock, now_ms
from ..events import BookEvent, MarketListed
from ..recording import RecordingReader
from .base import VenueAdapter


class ReplayVenue(VenueAdapter):
    name = "replay"

    def __init__(self, path: str | Path, *, clock: Clock, speed: float = 1.0,
                 venues: Iterable[str] | None = None) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.clock = clock
        self.speed = speed
        self._reader = RecordingReader(path)
        self._start_ms = now_ms(clock)
        cat = self._reader.catalogue
        self._venues = None if venues is None else frozenset(venues)
        if self._venues is not None:
            cat = Catalogue(tuple(m for m in cat.markets if m.venue in self._venues),
                            tuple(e for e in cat.events if e.venue in self._venues))
        self._catalogue = cat
        self._books = {m.book_symbol for m in cat.markets}
        self._events: Iterator[BookEvent] = self._kept(self._reader.events())
        self._next: BookEvent | None = None
        self._next_at: int | None = None
        self._peek()

    def _kept(self, events: Iterator[BookEvent]) -> Iterator[BookEvent]:
        if self._venues is None:
            yield from events
            return
        for ev in events:
            if isinstance(ev, MarketListed):
                if ev.spec.venue in self._venues:
                    self._books.add(ev.symbol)
                    yield ev
            elif ev.symbol in self._books:
                yield ev

    def _at(self, ts_ms: int) -> int:
        return self._start_ms + round((ts_ms - self._reader.start_ms) / self.speed)

    def _peek(self) -> None:
        ev = next(self._events, None)
        self._next = ev
        self._next_at = None if ev is None else self._at(ev.ts_ms)

    def catalogue(self) -> Catalogue:
        return self._catalogue

    def initial_books(self) -> dict[str, Book]:
        out = {}
        for sym, book in self._reader.books.items():
            if self._venues is not None and sym not in self._books:
                continue
            b = book.copy()
            b.touch(self._start_ms)
            out[sym] = b
        return out

    def next_event_ms(self) -> int | None:
        return self._next_at

    def advance(self, until_ms: int) -> list[BookEvent]:
        out: list[BookEvent] = []
        while self._next is not None and self._next_at is not None and self._next_at <= until_ms:
            out.append(replace(self._next, ts_ms=self._next_at))
            self._peek()
        return out

    def close(self) -> None:
        self._reader.close()
