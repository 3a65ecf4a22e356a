"""Order books: price levels per side, best-first iteration, exact arithmetic.

Representation
--------------
Prices and sizes are **integers** in per-book units: a price of ``p`` units is
``p / price_scale`` in venue currency, a size of ``s`` units is ``s /
size_scale`` contracts, shares or coins. Prediction markets use
``price_scale=10_000`` (so ticks 0.01, 0.001 and 0.0001 are all whole numbers
of units); Coinbase uses cents. The tick (``tick``) is also in price units and
may change while the book lives. Integer units make matching exact and make
every float we emit the correctly-rounded value of a short decimal (``3 / 10``
is printed ``0.3``, never ``0.30000000000000004``).

Each side is a ``dict`` price → size plus a sorted ``list`` of prices kept with
:mod:`bisect`; books are shallow (tens of levels), so list insertion is cheaper
than any tree. Best bid is the last element of the bid list, best ask the first
of the ask list.

:class:`MirrorBook` is the complement view used for binary markets: the NO
book of a YES book, with ``price → price_scale − price`` and bids ↔ asks. It
shares the storage, so YES ask = 1 − best NO bid holds by construction and
writes through either view stay consistent.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from bisect import bisect_left, insort
from collections.abc import Iterator
from enum import StrEnum
from typing import Any

#: ``(price_units, size_units)``
Level = tuple[int, int]


class Side(StrEnum):
    BID = "bid"
    ASK = "ask"

    @property
    def opposite(self) -> Side:
        return Side.ASK if self is Side.BID else Side.BID


class BookView(ABC):
    """Read (and write-through) interface shared by :class:`Book` and :class:`MirrorBook`."""

    __slots__ = ()
    symbol: str

    # -- primitives -------------------------------------------------------
    @property
    @abstractmethod
    def tick(self) -> int: ...

    @property
    @abstractmethod
    def price_scale(self) -> int: ...

    @property
    @abstractmethod
    def size_scale(self) -> int: ...

    @property
    @abstractmethod
    def seq(self) -> int:
        """Number of changes applied to the underlying book (for change detection)."""

    @property
    @abstractmethod
    def ts_ms(self) -> int:
        """Epoch milliseconds of the last change (0 before any)."""

    @abstractmethod
    def set_level(self, side: Side, price: int, size: int) -> bool:
        """Set the size at ``price``; ``size <= 0`` removes the level. True if anything changed."""

    @abstractmethod
    def size_at(self, side: Side, price: int) -> int: ...

    @abstractmethod
    def iter_levels(self, side: Side) -> Iterator[Level]:
        """Levels from best to worst. Do not mutate the book while iterating."""

    @abstractmethod
    def best(self, side: Side) -> Level | None: ...

    @abstractmethod
    def level_count(self, side: Side) -> int: ...

    @abstractmethod
    def total_size(self, side: Side) -> int:
        """Sum of sizes on ``side`` (size units)."""

    @abstractmethod
    def notional(self, side: Side) -> int:
        """Sum of price × size on ``side`` (price units × size units)."""

    # -- derived ----------------------------------------------------------
    def remove_level(self, side: Side, price: int) -> bool:
        return self.set_level(side, price, 0)

    def best_price(self, side: Side) -> int | None:
        lvl = self.best(side)
        return None if lvl is None else lvl[0]

    def best_bid(self) -> Level | None:
        return self.best(Side.BID)

    def best_ask(self) -> Level | None:
        return self.best(Side.ASK)

    def top(self) -> tuple[int | None, int | None]:
        """``(best bid price, best ask price)``; ``None`` for an empty side."""
        return self.best_price(Side.BID), self.best_price(Side.ASK)

    def depth(self, side: Side, n: int) -> list[Level]:
        """Up to ``n`` levels of ``side``, best first."""
        out: list[Level] = []
        if n <= 0:
            return out
        for lvl in self.iter_levels(side):
            out.append(lvl)
            if len(out) >= n:
                break
        return out

    def sweep(self, side: Side, size: int, limit: int | None = None) -> list[Level]:
        """What taking ``size`` from ``side`` would fill, without changing the book.

        Walks ``side`` (``ASK`` for a buy, ``BID`` for a sell) from best, never
        past ``limit`` (a buy does not pay above it, a sell does not sell below
        it). Returns ``[(price, filled_size), ...]``; the sum may be short of
        ``size`` when the book is thin.
        """
        fills: list[Level] = []
        remaining = size
        if remaining <= 0:
            return fills
        for price, avail in self.iter_levels(side):
            if limit is not None and (price > limit if side == Side.ASK else price < limit):
                break
            take = avail if avail < remaining else remaining
            fills.append((price, take))
            remaining -= take
            if remaining == 0:
                break
        return fills

    def is_crossed(self) -> bool:
        bid, ask = self.top()
        return bid is not None and ask is not None and bid >= ask

    # -- unit conversion --------------------------------------------------
    def to_price(self, units: int) -> float:
        return units / self.price_scale

    def to_size(self, units: int) -> float:
        return units / self.size_scale

    def price_units(self, price: float) -> int:
        return round(price * self.price_scale)

    def size_units(self, size: float) -> int:
        return round(size * self.size_scale)

    @property
    def tick_size(self) -> float:
        return self.tick / self.price_scale

    def levels_json(self, side: Side, n: int) -> list[dict[str, float]]:
        ps, ss = self.price_scale, self.size_scale
        return [{"price": p / ps, "size": s / ss} for p, s in self.depth(side, n)]

    def snapshot(self) -> dict[str, Any]:
        """Every level, as integers; for tests and recordings."""
        return {
            "symbol": self.symbol,
            "tick": self.tick,
            "bids": list(self.iter_levels(Side.BID)),
            "asks": list(self.iter_levels(Side.ASK)),
        }


class Book(BookView):
    """One order book. See the module docstring for units."""

    __slots__ = (
        "_ask_px",
        "_asks",
        "_bid_px",
        "_bids",
        "_notional",
        "_price_scale",
        "_seq",
        "_size_scale",
        "_tick",
        "_total",
        "_ts_ms",
        "symbol",
    )

    def __init__(
        self, symbol: str, *, tick: int, price_scale: int = 10_000, size_scale: int = 100
    ) -> None:
        if tick <= 0 or price_scale <= 0 or size_scale <= 0:
            raise ValueError("tick, price_scale and size_scale must be positive")
        self.symbol = symbol
        self._tick = tick
        self._price_scale = price_scale
        self._size_scale = size_scale
        self._bids: dict[int, int] = {}
        self._asks: dict[int, int] = {}
        self._bid_px: list[int] = []  # ascending; best bid last
        self._ask_px: list[int] = []  # ascending; best ask first
        self._total = [0, 0]  # bid, ask
        self._notional = [0, 0]
        self._seq = 0
        self._ts_ms = 0

    def __repr__(self) -> str:
        return f"Book({self.symbol!r}, bid={self.best_bid()}, ask={self.best_ask()})"

    @property
    def tick(self) -> int:
        return self._tick

    @property
    def price_scale(self) -> int:
        return self._price_scale

    @property
    def size_scale(self) -> int:
        return self._size_scale

    @property
    def seq(self) -> int:
        return self._seq

    @property
    def ts_ms(self) -> int:
        return self._ts_ms

    def touch(self, ts_ms: int) -> None:
        """Record the time of the latest change."""
        self._ts_ms = ts_ms

    def set_tick(self, tick: int) -> list[tuple[Side, int]]:
        """Change the tick; levels off the new grid are removed and returned.

        Venues announce tick changes and requote; the simulator removes off-grid
        levels itself before announcing a coarser tick, so this normally removes
        nothing.
        """
        if tick <= 0:
            raise ValueError("tick must be positive")
        self._tick = tick
        removed: list[tuple[Side, int]] = []
        for side, prices in ((Side.BID, self._bid_px), (Side.ASK, self._ask_px)):
            for price in [p for p in prices if p % tick]:
                self.set_level(side, price, 0)
                removed.append((side, price))
        self._seq += 1
        return removed

    def set_level(self, side: Side, price: int, size: int) -> bool:
        if side == Side.BID:
            levels, prices, i = self._bids, self._bid_px, 0
        else:
            levels, prices, i = self._asks, self._ask_px, 1
        old = levels.get(price, 0)
        if size <= 0:
            if not old:
                return False
            del levels[price]
            del prices[bisect_left(prices, price)]
            size = 0
        else:
            if old == size:
                return False
            if price <= 0 or price % self._tick:
                raise ValueError(f"{self.symbol}: price {price} is not on the tick grid {self._tick}")
            if not old:
                insort(prices, price)
            levels[price] = size
        self._total[i] += size - old
        self._notional[i] += (size - old) * price
        self._seq += 1
        return True

    def size_at(self, side: Side, price: int) -> int:
        return (self._bids if side == Side.BID else self._asks).get(price, 0)

    def iter_levels(self, side: Side) -> Iterator[Level]:
        if side == Side.BID:
            bids = self._bids
            for p in reversed(self._bid_px):
                yield p, bids[p]
        else:
            asks = self._asks
            for p in self._ask_px:
                yield p, asks[p]

    def best(self, side: Side) -> Level | None:
        if side == Side.BID:
            if not self._bid_px:
                return None
            p = self._bid_px[-1]
            return p, self._bids[p]
        if not self._ask_px:
            return None
        p = self._ask_px[0]
        return p, self._asks[p]

    def top(self) -> tuple[int | None, int | None]:
        return (
            self._bid_px[-1] if self._bid_px else None,
            self._ask_px[0] if self._ask_px else None,
        )

    def level_count(self, side: Side) -> int:
        return len(self._bid_px if side == Side.BID else self._ask_px)

    def total_size(self, side: Side) -> int:
        return self._total[0 if side == Side.BID else 1]

    def notional(self, side: Side) -> int:
        return self._notional[0 if side == Side.BID else 1]

    def clear(self) -> None:
        for side, prices in ((Side.BID, self._bid_px), (Side.ASK, self._ask_px)):
            for p in list(prices):
                self.set_level(side, p, 0)

    def copy(self, symbol: str | None = None) -> Book:
        other = Book(
            symbol or self.symbol,
            tick=self._tick,
            price_scale=self._price_scale,
            size_scale=self._size_scale,
        )
        other._bids = dict(self._bids)
        other._asks = dict(self._asks)
        other._bid_px = list(self._bid_px)
        other._ask_px = list(self._ask_px)
        other._total = list(self._total)
        other._notional = list(self._notional)
        other._seq = self._seq
        other._ts_ms = self._ts_ms
        return other


class MirrorBook(BookView):
    """The complement of a binary book: NO levels derived from YES levels.

    A YES bid at ``p`` is a NO ask at ``scale − p`` and vice versa. Nothing is
    stored here; reads and writes go to ``base``.
    """

    __slots__ = ("base", "symbol")

    def __init__(self, base: Book, symbol: str) -> None:
        self.base = base
        self.symbol = symbol

    def __repr__(self) -> str:
        return f"MirrorBook({self.symbol!r} of {self.base.symbol!r})"

    @property
    def tick(self) -> int:
        return self.base.tick

    @property
    def price_scale(self) -> int:
        return self.base.price_scale

    @property
    def size_scale(self) -> int:
        return self.base.size_scale

    @property
    def seq(self) -> int:
        return self.base.seq

    @property
    def ts_ms(self) -> int:
        return self.base.ts_ms

    def set_level(self, side: Side, price: int, size: int) -> bool:
        return self.base.set_level(side.opposite, self.base.price_scale - price, size)

    def size_at(self, side: Side, price: int) -> int:
        return self.base.size_at(side.opposite, self.base.price_scale - price)

    def iter_levels(self, side: Side) -> Iterator[Level]:
        scale = self.base.price_scale
        for p, s in self.base.iter_levels(side.opposite):
            yield scale - p, s

    def best(self, side: Side) -> Level | None:
        lvl = self.base.best(side.opposite)
        return None if lvl is None else (self.base.price_scale - lvl[0], lvl[1])

    def top(self) -> tuple[int | None, int | None]:
        bid, ask = self.base.top()
        scale = self.base.price_scale
        return (None if ask is None else scale - ask, None if bid is None else scale - bid)

    def level_count(self, side: Side) -> int:
        return self.base.level_count(side.opposite)

    def total_size(self, side: Side) -> int:
        return self.base.total_size(side.opposite)

    def notional(self, side: Side) -> int:
        other = side.opposite
        return self.base.price_scale * self.base.total_size(other) - self.base.notional(other)
