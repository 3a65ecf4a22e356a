"""Book events: what venue adapters emit and what the service applies.

All times are integer epoch milliseconds and all prices/sizes integer units of
the book they name (see :mod:`sequence.market.book`). ``symbol`` is always a
book symbol (``MarketSpec.book_symbol``), never a NO token or an alias.
"""

from __future__ import annotations

from dataclasses import dataclass

from .book import Side
from .catalogue import EventSpec, MarketSpec


@dataclass(frozen=True, slots=True)
class LevelUpdate:
    """The absolute new size at one price; ``size == 0`` removes the level."""

    ts_ms: int
    symbol: str
    side: Side
    price: int
    size: int


@dataclass(frozen=True, slots=True)
class TickSizeChange:
    """The book's tick becomes ``tick`` price units (Polymarket ``tick_size_change``)."""

    ts_ms: int
    symbol: str
    tick: int


@dataclass(frozen=True, slots=True)
class Trade:
    """A print: ``size`` traded at ``price``; ``side`` is the book side that was hit."""

    ts_ms: int
    symbol: str
    side: Side
    price: int
    size: int


@dataclass(frozen=True, slots=True)
class BookReset:
    """The whole book replaced: a venue snapshot (first subscribe, resync after a
    sequence gap or a reconnect). Levels are ``(price, size)`` units, best first;
    ``tick`` (price units) when the snapshot says it."""

    ts_ms: int
    symbol: str
    bids: tuple[tuple[int, int], ...]
    asks: tuple[tuple[int, int], ...]
    tick: int | None = None


@dataclass(frozen=True, slots=True)
class MarketListed:
    """A market appeared in (or changed in) a venue's catalogue while running (live
    catalogue refresh, or a recording of one). ``symbol`` is its book symbol."""

    ts_ms: int
    symbol: str
    spec: MarketSpec
    event: EventSpec | None = None


BookEvent = LevelUpdate | TickSizeChange | Trade | BookReset | MarketListed
