"""The matching core: orders and a timestamp in, events out.

Pure in the STYLE.md sense: no I/O, no clock reads, no randomness. A
:class:`MatchingCore` holds the working orders of **one book** and reads the
:class:`~sequence.market.book.BookView` it is handed; it never writes to it.
Changes it wants made to the displayed book come out as :class:`LevelDelta`
events, which the engine applies. Everything is in the book's own terms and
integer units: ``Side.BID`` buys, ``Side.ASK`` sells, prices and sizes are the
book's price and size units (a NO-token order is translated by the engine).

Two kinds of order
------------------
**Paper** orders (the wire's ``sandbox``) fill against the displayed book without changing
it. On arrival the marketable part walks the book's depth at the book's
prices (taker); the rest rests, invisible, and fills — at its own limit, as a
maker — whenever the book later crosses that limit. Paper liquidity is never
consumed, so two paper orders can fill against the same displayed size.

**Venue** orders (live, on a simulated venue) enter the book. On
arrival they take venue liquidity first and then other clients' resting venue
orders at each level (price, then time priority among ours); what is left
rests *visibly* at the limit. A resting venue order fills, as a maker at its
limit, when venue liquidity crosses it. Venue orders never match the same
owner's resting orders: on meeting one, the incoming order's remainder is
cancelled (``self_trade_prevented``, Kalshi's "taker at cross" rule), so our
own orders never cross each other in the book.

Order flags
-----------
``post_only`` (urgency ``low``): rejected if marketable on arrival.
``crossable=False`` (under a venue's minimum notional): accepted and working,
never shown, never matched — it "sits forever", as the product document warns.
``limit=None``: a market order; whatever does not fill on arrival is cancelled.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from sequence.market.book import BookView, Side

Liquidity = Literal["maker", "taker"]


class Order:
    """One working order, in book terms. The core updates ``filled``."""

    __slots__ = ("crossable", "filled", "limit", "order_id", "owner", "paper", "post_only", "qty", "seq", "side")

    def __init__(
        self,
        order_id: str,
        side: Side,
        limit: int | None,
        qty: int,
        *,
        owner: str = "",
        paper: bool = True,
        post_only: bool = False,
        crossable: bool = True,
        seq: int = 0,
        filled: int = 0,
    ) -> None:
        if qty <= 0:
            raise ValueError("qty must be positive")
        if not 0 <= filled <= qty:
            raise ValueError("filled must be between 0 and qty")
        self.order_id = order_id
        self.side = side
        self.limit = limit
        self.qty = qty
        self.filled = filled
        self.owner = owner
        self.paper = paper
        self.post_only = post_only
        self.crossable = crossable
        self.seq = seq

    @property
    def remaining(self) -> int:
        return self.qty - self.filled

    def __repr__(self) -> str:
        kind = "paper" if self.paper else "venue"
        return f"Order({self.order_id!r}, {self.side}, {self.limit}, {self.filled}/{self.qty}, {kind})"


@dataclass(frozen=True, slots=True)
class Fill:
    order_id: str
    price: int
    size: int
    liquidity: Liquidity
    ts_ms: int
    #: The other order when two of ours matched; ``None`` against venue liquidity.
    counterparty: str | None = None


@dataclass(frozen=True, slots=True)
class Rested:
    order_id: str
    price: int | None
    remaining: int
    #: Shown in the book (venue orders) or not (paper, under the minimum notional).
    visible: bool


@dataclass(frozen=True, slots=True)
class Cancelled:
    order_id: str
    remaining: int
    reason: str


@dataclass(frozen=True, slots=True)
class Rejected:
    order_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class LevelDelta:
    """Add ``delta`` (negative: remove) to the displayed size at ``(side, price)``."""

    side: Side
    price: int
    delta: int


@dataclass(frozen=True, slots=True)
class Print:
    """A trade involving a venue order (for volume and last-trade statistics)."""

    side: Side  # the book side whose resting liquidity traded
    price: int
    size: int
    ts_ms: int


Event = Fill | Rested | Cancelled | Rejected | LevelDelta | Print

POST_ONLY_WOULD_TAKE = "post_only_would_take"
SELF_TRADE = "self_trade_prevented"
NO_LIQUIDITY = "market_order_unfilled"
TICK_CHANGED = "tick_size_changed"
CANCELLED = "cancelled"


def crosses(side: Side, limit: int | None, price: int) -> bool:
    """Whether an order on ``side`` with ``limit`` may trade at ``price``."""
    if limit is None:
        return True
    return price <= limit if side is Side.BID else price >= limit


class _Ladder:
    """Resting orders of one side, FIFO per price; best price first on iteration."""

    __slots__ = ("_levels", "_prices", "side")

    def __init__(self, side: Side) -> None:
        self.side = side
        self._levels: dict[int, list[Order]] = {}
        self._prices: list[int] = []  # ascending

    def __bool__(self) -> bool:
        return bool(self._prices)

    def add(self, order: Order) -> None:
        price = order.limit
        assert price is not None
        queue = self._levels.get(price)
        if queue is None:
            self._levels[price] = [order]
            insort(self._prices, price)
        else:
            queue.append(order)

    def remove(self, order: Order) -> None:
        price = order.limit
        assert price is not None
        queue = self._levels[price]
        queue.remove(order)
        if not queue:
            del self._levels[price]
            del self._prices[bisect_left(self._prices, price)]

    def queue(self, price: int) -> list[Order]:
        return self._levels.get(price, [])

    def best(self) -> int | None:
        if not self._prices:
            return None
        return self._prices[-1] if self.side is Side.BID else self._prices[0]

    def orders(self) -> Iterator[Order]:
        """Best price first, then time (a snapshot: safe to modify while iterating)."""
        prices = reversed(self._prices) if self.side is Side.BID else iter(self._prices)
        out = [o for p in prices for o in self._levels[p]]
        return iter(out)


class MatchingCore:
    """Working orders of one book and the rules that match them. See the module docstring."""

    __slots__ = ("_hidden", "_live", "_own", "_paper", "orders", "symbol")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.orders: dict[str, Order] = {}
        self._live = {Side.BID: _Ladder(Side.BID), Side.ASK: _Ladder(Side.ASK)}
        self._paper = {Side.BID: _Ladder(Side.BID), Side.ASK: _Ladder(Side.ASK)}
        self._hidden: dict[str, Order] = {}
        #: Displayed size of our resting venue orders per (side, price).
        self._own: dict[Side, dict[int, int]] = {Side.BID: {}, Side.ASK: {}}

    def __len__(self) -> int:
        return len(self.orders)

    def __contains__(self, order_id: object) -> bool:
        return order_id in self.orders

    def own_size(self, side: Side, price: int) -> int:
        """Size our resting venue orders show at ``(side, price)``."""
        return self._own[side].get(price, 0)

    def own_levels(self, side: Side) -> dict[int, int]:
        return dict(self._own[side])

    # -- arrival ------------------------------------------------------------------
    def submit(self, order: Order, book: BookView, ts_ms: int) -> list[Event]:
        """Match ``order`` on arrival; it rests (if it has a limit) unless filled or refused."""
        if order.order_id in self.orders:
            raise ValueError(f"order {order.order_id!r} is already working")
        if order.remaining <= 0:
            raise ValueError("order has nothing left to fill")
        events: list[Event] = []
        if not order.crossable:
            if order.limit is None:
                events.append(Rejected(order.order_id, "market order under the minimum notional"))
                return events
            self.orders[order.order_id] = order
            self._hidden[order.order_id] = order
            events.append(Rested(order.order_id, order.limit, order.remaining, False))
            return events
        best = book.best_price(order.side.opposite)
        if order.post_only and best is not None and crosses(order.side, order.limit, best):
            events.append(Rejected(order.order_id, POST_ONLY_WOULD_TAKE))
            return events
        stopped = False
        if best is not None and crosses(order.side, order.limit, best):
            if order.paper:
                self._take_paper(order, book, ts_ms, events)
            else:
                stopped = self._take_venue(order, book, ts_ms, events, {}, internal=True)
        if order.remaining == 0:
            return events
        if stopped:
            events.append(Cancelled(order.order_id, order.remaining, SELF_TRADE))
        elif order.limit is None:
            events.append(Cancelled(order.order_id, order.remaining, NO_LIQUIDITY))
        else:
            self._rest(order, events)
        return events

    def _rest(self, order: Order, events: list[Event]) -> None:
        self.orders[order.order_id] = order
        price = order.limit
        assert price is not None
        if order.paper:
            self._paper[order.side].add(order)
            events.append(Rested(order.order_id, price, order.remaining, False))
            return
        self._live[order.side].add(order)
        own = self._own[order.side]
        own[price] = own.get(price, 0) + order.remaining
        events.append(Rested(order.order_id, price, order.remaining, True))
        events.append(LevelDelta(order.side, price, order.remaining))

    def _take_paper(self, order: Order, book: BookView, ts_ms: int, events: list[Event]) -> None:
        side, limit, oid = order.side, order.limit, order.order_id
        for price, size in book.iter_levels(side.opposite):
            if not crosses(side, limit, price):
                break
            take = min(size, order.remaining)
            if take > 0:
                order.filled += take
                events.append(Fill(oid, price, take, "taker", ts_ms))
            if order.remaining == 0:
                break

    def _take_venue(
        self,
        order: Order,
        book: BookView,
        ts_ms: int,
        events: list[Event],
        taken: dict[tuple[Side, int], int],
        *,
        internal: bool,
    ) -> bool:
        """Take venue liquidity (then, if ``internal``, our other clients' resting orders)
        at each level the limit allows. Returns True if stopped by self-trade prevention."""
        side, limit, oid = order.side, order.limit, order.order_id
        opp = side.opposite
        own = self._own[opp]
        ladder = self._live[opp]
        for price, size in book.iter_levels(opp):
            if not crosses(side, limit, price):
                break
            key = (opp, price)
            venue = size - own.get(price, 0) - taken.get(key, 0)
            if venue > 0:
                take = min(venue, order.remaining)
                order.filled += take
                taken[key] = taken.get(key, 0) + take
                events.append(Fill(oid, price, take, "taker", ts_ms))
                events.append(LevelDelta(opp, price, -take))
                events.append(Print(opp, price, take, ts_ms))
                if order.remaining == 0:
                    return False
            if not internal:
                continue
            for maker in list(ladder.queue(price)):
                if maker.owner == order.owner:
                    return True
                take = min(maker.remaining, order.remaining)
                maker.filled += take
                order.filled += take
                own[price] -= take
                if own[price] <= 0:
                    del own[price]
                events.append(Fill(maker.order_id, price, take, "maker", ts_ms, oid))
                events.append(Fill(oid, price, take, "taker", ts_ms, maker.order_id))
                events.append(LevelDelta(opp, price, -take))
                events.append(Print(opp, price, take, ts_ms))
                if maker.remaining == 0:
                    ladder.remove(maker)
                    del self.orders[maker.order_id]
                if order.remaining == 0:
                    return False
        return False

    # -- resting ------------------------------------------------------------------
    def rematch(self, book: BookView, ts_ms: int) -> list[Event]:
        """After the book changed: fill resting orders the book now crosses."""
        events: list[Event] = []
        if not self.orders:
            return events
        bid, ask = book.top()
        taken: dict[tuple[Side, int], int] = {}
        for side, opp_best in ((Side.BID, ask), (Side.ASK, bid)):
            if opp_best is None:
                continue
            for ladders in (self._live, self._paper):
                ladder = ladders[side]
                top = ladder.best()
                if top is None or not crosses(side, top, opp_best):
                    continue
                for order in ladder.orders():
                    if not crosses(side, order.limit, opp_best):
                        break
                    if order.paper:
                        self._fill_resting_paper(order, book, ts_ms, events)
                    else:
                        self._fill_resting_venue(order, book, ts_ms, events, taken)
        return events

    def _fill_resting_paper(self, order: Order, book: BookView, ts_ms: int, events: list[Event]) -> None:
        avail = 0
        need = order.remaining
        for price, size in book.iter_levels(order.side.opposite):
            if not crosses(order.side, order.limit, price):
                break
            avail += size
            if avail >= need:
                break
        take = min(avail, need)
        if take <= 0:
            return
        assert order.limit is not None
        order.filled += take
        events.append(Fill(order.order_id, order.limit, take, "maker", ts_ms))
        if order.remaining == 0:
            self._paper[order.side].remove(order)
            del self.orders[order.order_id]

    def _fill_resting_venue(
        self,
        order: Order,
        book: BookView,
        ts_ms: int,
        events: list[Event],
        taken: dict[tuple[Side, int], int],
    ) -> None:
        # The venue's crossing liquidity is the aggressor: we trade at our limit, as makers.
        limit = order.limit
        assert limit is not None
        before = len(events)
        start = order.filled
        self._take_venue(order, book, ts_ms, events, taken, internal=False)
        got = order.filled - start
        if got <= 0:
            return
        # Rewrite the taker fills the walk produced into one maker fill at our limit.
        kept = [e for e in events[before:] if not isinstance(e, Fill)]
        del events[before:]
        events.append(Fill(order.order_id, limit, got, "maker", ts_ms))
        events.extend(kept)
        own = self._own[order.side]
        own[limit] -= got
        if own[limit] <= 0:
            del own[limit]
        # The book still shows this size until the engine applies the delta.
        taken[(order.side, limit)] = taken.get((order.side, limit), 0) + got
        events.append(LevelDelta(order.side, limit, -got))
        if order.remaining == 0:
            self._live[order.side].remove(order)
            del self.orders[order.order_id]

    # -- removal ------------------------------------------------------------------
    def cancel(self, order_id: str, reason: str = CANCELLED) -> list[Event]:
        """Take a working order out; unknown ids yield no events."""
        order = self.orders.pop(order_id, None)
        if order is None:
            return []
        events: list[Event] = [Cancelled(order_id, order.remaining, reason)]
        if self._hidden.pop(order_id, None) is not None:
            return events
        if order.paper:
            self._paper[order.side].remove(order)
            return events
        self._live[order.side].remove(order)
        assert order.limit is not None
        own = self._own[order.side]
        own[order.limit] -= order.remaining
        if own[order.limit] <= 0:
            del own[order.limit]
        events.append(LevelDelta(order.side, order.limit, -order.remaining))
        return events

    def on_tick_change(self, tick: int) -> list[Event]:
        """The book's tick became ``tick``: venue orders off the new grid are cancelled.

        (The book has already dropped those levels, so no :class:`LevelDelta` is emitted.)
        Paper and hidden orders are not on the book and keep working.
        """
        events: list[Event] = []
        for side in (Side.BID, Side.ASK):
            for order in self._live[side].orders():
                assert order.limit is not None
                if order.limit % tick:
                    self._live[side].remove(order)
                    own = self._own[side]
                    own[order.limit] -= order.remaining
                    if own[order.limit] <= 0:
                        del own[order.limit]
                    del self.orders[order.order_id]
                    events.append(Cancelled(order.order_id, order.remaining, TICK_CHANGED))
        return events

    def restore(self, order: Order) -> list[Event]:
        """Put back an order that was resting before a restart (no matching).

        Returns the :class:`LevelDelta` that shows it again, for venue orders.
        The caller then runs :meth:`rematch` once the book is current.
        """
        if order.order_id in self.orders:
            raise ValueError(f"order {order.order_id!r} is already working")
        if not order.crossable:
            self.orders[order.order_id] = order
            self._hidden[order.order_id] = order
            return []
        if order.limit is None:
            raise ValueError("a market order never rests")
        events: list[Event] = []
        self._rest(order, events)
        return [e for e in events if isinstance(e, LevelDelta)]
