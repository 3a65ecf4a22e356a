"""The venue adapter interface.

Venue adapters feed order books. An adapter publishes a catalogue, the books
as they stand when it starts, and then book events in time order as its clock
advances. The simulators and the replay source implement it; a live connector
is another adapter behind the same four methods, with ``advance`` draining
whatever its socket has delivered up to ``until_ms``.

The service drives adapters by *pulling*: it reads the clock, calls
``advance(now_ms)`` and applies what comes back. An adapter must return the
same events for the same sequence of ``advance`` calls, and a simulator the
same events however the interval is chunked, which is what makes a seeded run
replayable.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping

from ..book import Book
from ..catalogue import Catalogue
from ..clock import Clock
from ..events import BookEvent


class VenueAdapter(ABC):
    #: Short name of the adapter (``kalshi``, ``polymarket``, ``coinbase``, ``replay``).
    name: str
    clock: Clock

    @abstractmethod
    def catalogue(self) -> Catalogue:
        """Every market this adapter quotes; each ``MarketSpec`` names its own venue."""

    @abstractmethod
    def initial_books(self) -> Mapping[str, Book]:
        """Books keyed by book symbol as of the adapter's start. The caller owns the copies."""

    @abstractmethod
    def advance(self, until_ms: int) -> Iterable[BookEvent]:
        """Events with ``ts_ms <= until_ms`` not yet returned, oldest first."""

    @abstractmethod
    def next_event_ms(self) -> int | None:
        """When the next event is due, or ``None`` if none is scheduled (end of a replay)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (files, sockets)."""
