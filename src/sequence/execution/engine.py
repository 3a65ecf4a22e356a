"""The graph engine: graphs → orders → matching → fills, in the store and on the stream.

:class:`TradingEngine` ties the pure trading model together —
:mod:`sequence.trading.validation` (requests into nodes),
:mod:`sequence.trading.graphs` (the graph and node model, its state tables and
triggers), :mod:`sequence.trading.matching` (one
:class:`~sequence.trading.matching.MatchingCore` per book),
:mod:`sequence.trading.fees` and :mod:`sequence.trading.positions` — to the
market service's books, the stream hub and the
:class:`~sequence.store.trading.TradingStore`. It runs on the coordinator's
event loop.

Concurrency model
-----------------
Every decision (activating a node, matching, cancelling) is taken on the event
loop thread against in-memory state, which is therefore authoritative while
the process lives. Each decision step produces one
:class:`~sequence.store.trading.TradeBatch` — the fills plus the node and
graph status they imply, including nodes they trigger — which is committed in
**one transaction** by a single writer thread (:mod:`.writer`), in the order
the steps were taken. Readers (``GET /v1/graphs``, ``/v1/fills``) read the
store, so status never lags fills; stream messages are published after the
commit, so a client that sees a fill on ``fills`` can read it back.

Book changes: the market service calls our listener after each batch of venue
events. The listener re-applies the size of our resting venue orders on top
of the venue's absolute level updates (the simulator does not know about
them), and schedules a re-match of the books that changed — only those.

After a restart :meth:`TradingEngine.start` restores every active graph:
working orders are put back (venue orders reappear in the book) and keep
matching; root nodes that never fired (a crash between accepting a graph and
activating it) fire now.

Trading state is owned by the coordinator process that accepted the graph;
several coordinator replicas on one PostgreSQL each match their own graphs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Protocol

import anyio

from sequence.market.book import BookView, Side
from sequence.market.clock import Clock, iso
from sequence.market.errors import MarketError
from sequence.market.events import BookEvent, BookReset, LevelUpdate, TickSizeChange, Trade
from sequence.store.ids import short_code
from sequence.store.trading import Created, TradeBatch, TradingStore
from sequence.stream import Hub, channels
from sequence.trading.fees import FeeSchedule
from sequence.trading.graphs import (
    NOT_TRIGGERED,
    QTY_1E8,
    SILENT_CANCELS,
    USER_CANCEL,
    Graph,
    Node,
    NodeStatus,
)
from sequence.trading.matching import (
    Cancelled,
    Event,
    Fill,
    LevelDelta,
    MatchingCore,
    Order,
    Print,
    Rejected,
)
from sequence.trading.positions import Position
from sequence.trading.validation import GraphRequest, InstrumentLike, parse_graph
from sequence.trading.wire import ack_json, fill_json, graph_json, graph_update_json, position_json

from .writer import Writer

log = logging.getLogger(__name__)


class MarketPort(Protocol):
    """What the engine needs from the market service (``MarketService`` provides all of it)."""

    clock: Clock
    hub: Hub

    @property
    def venues(self) -> tuple[str, ...]: ...

    def instrument(self, symbol: str) -> InstrumentLike: ...

    def book(self, symbol: str) -> BookView: ...

    def apply(self, events: Sequence[BookEvent]) -> int: ...

    def add_listener(self, listener: Callable[[Sequence[BookEvent]], None]) -> Callable[[], None]: ...

    async def require_ready(self, symbol: str) -> None: ...

    def add_keeper(self, keeper: Callable[[], Iterable[str]]) -> Callable[[], None]: ...


def request_hash(body: Any, paper: bool) -> str:
    """What an ``Idempotency-Key`` is bound to (stored: the input's shape must not change,
    so paper trading keeps the wire's name ``sandbox`` in it)."""
    text = json.dumps({"body": body, "sandbox": paper}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# -- a decision step ---------------------------------------------------------------------


@dataclass
class _Step:
    """What one decision step did: the batch to commit and the messages to send after."""

    ts: float
    batch: TradeBatch = field(default_factory=TradeBatch)
    queue: deque[tuple[Graph, str]] = field(default_factory=deque)
    touched: dict[str, Graph] = field(default_factory=dict)
    fills: list[tuple[Graph, dict[str, Any]]] = field(default_factory=list)
    changed_nodes: dict[str, dict[str, None]] = field(default_factory=dict)

    @property
    def ts_ms(self) -> int:
        return int(self.ts * 1000)


# -- the engine ---------------------------------------------------------------------------------


class TradingEngine:
    """See the module docstring."""

    def __init__(self, store: TradingStore, market: MarketPort, *, fees: FeeSchedule | None = None) -> None:
        self.store = store
        self.market = market
        self.fees = fees or FeeSchedule()
        self._graphs: dict[str, Graph] = {}
        self._cores: dict[str, MatchingCore] = {}
        self._orders: dict[str, Node] = {}  # node_order_id -> its node, while the order works
        self._fill_seq = 0
        self._order_seq = 0
        self._applying = False
        self._dirty: dict[str, bool] = {}  # book symbol -> tick changed
        self._rematch_scheduled = False
        self._writer = Writer(store)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._remove_listener: Callable[[], None] | None = None
        self._remove_keeper: Callable[[], None] | None = None
        self.started = False

    # -- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        """Register stream channels, hook book changes and restore working orders."""
        if self.started:
            return
        self._loop = asyncio.get_running_loop()
        self._writer.start()
        hub = self.market.hub
        for kind in (channels.fills(), channels.graphs()):
            if kind.name not in hub.kinds:
                hub.register(kind)
        self._fill_seq = await anyio.to_thread.run_sync(self.store.max_fill_seq)
        self._order_seq = await anyio.to_thread.run_sync(self.store.max_order_seq)
        self._remove_listener = self.market.add_listener(self._on_book_events)
        # A live venue keeps a book only while someone uses it: every symbol of an open
        # graph (working orders and the ones its edges may still place) stays live.
        self._remove_keeper = self.market.add_keeper(self._kept_symbols)
        self.started = True
        await self.restore()

    async def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        for remove in (self._remove_listener, self._remove_keeper):
            if remove is not None:
                with contextlib.suppress(ValueError):
                    remove()
        self._remove_listener = self._remove_keeper = None
        await self._writer.stop()
        self._graphs.clear()
        self._cores.clear()
        self._orders.clear()

    def _now(self) -> float:
        return float(self.market.clock.now())

    async def flush(self) -> None:
        """Wait until every decision taken so far is committed (tests, shutdown)."""
        await self._writer.flush()

    # -- lookups --------------------------------------------------------------------------
    def _lookup(self, symbol: str) -> InstrumentLike | None:
        try:
            return self.market.instrument(symbol)
        except (MarketError, KeyError, TypeError):
            return None

    def _core(self, book_symbol: str) -> MatchingCore:
        core = self._cores.get(book_symbol)
        if core is None:
            core = self._cores[book_symbol] = MatchingCore(book_symbol)
        return core

    @property
    def working_orders(self) -> int:
        return len(self._orders)

    def active_graph_ids(self) -> list[str]:
        return list(self._graphs)

    def _kept_symbols(self) -> set[str]:
        return {n.symbol for g in self._graphs.values() for n in g.nodes.values()}

    # -- submit -----------------------------------------------------------------------------
    def validate(self, body: Any, *, force_paper: bool) -> GraphRequest:
        """Parse a graph request (raises :class:`~sequence.trading.validation.GraphError`)."""
        return parse_graph(body, self._lookup, venues=self.market.venues, force_paper=force_paper)

    async def submit(self, body: Any, *, client_id: str, key_id: str, paper_only: bool = False,
                     run_id: str | None = None, idempotency_key: str | None = None,
                     strategy_id: str | None = None) -> dict[str, Any]:
        """Validate, store and activate a graph; returns the ack (``POST /v1/graphs``).

        ``paper_only``: the caller's key trades on paper only (a ``seq_test_`` key).
        Raises ``GraphError`` (400), ``Fenced`` and ``IdempotencyConflict`` (from the store).
        When this returns, root orders are placed and any immediate fills are committed.
        """
        req = self.validate(body, force_paper=paper_only)
        # A live venue's book must be here before an order can be matched against it
        # (a 503 naming the venue's state if it does not come in time).
        for symbol in dict.fromkeys(n.symbol for n in req.nodes):
            await self.market.require_ready(symbol)
        now = self._now()
        g = Graph.new("graph_" + short_code(20), client_id, req.nodes, req.edges, paper=req.paper, now=now)
        graph_row = g.row(key_id=key_id, run_id=run_id, idempotency_key=idempotency_key,
                          request_hash=request_hash(body, g.paper) if idempotency_key else None, now=now)
        # Roots are written already "working", with their time priority: when placing them
        # changes nothing else (the usual resting order) the insert is the only commit.
        # Their status moves when they are placed, below.
        preset: dict[str, int] = {}
        node_rows = []
        for n in req.nodes:
            row = n.row(client_id)
            if n.activation == "root":
                self._order_seq += 1
                n.order_seq = preset[n.node_id] = self._order_seq
                n.activated_at = now
                row.update(status=NodeStatus.working.value, activated_at=now, order_seq=n.order_seq)
            node_rows.append(row)
        created: Created = await anyio.to_thread.run_sync(
            lambda: self.store.create_graph(graph_row, node_rows, run_id=run_id))
        if not created.created:
            return ack_json(created.graph, replay=True)
        g.strategy_id = created.graph.get("strategy_id") or strategy_id
        graph_id = g.graph_id
        self._graphs[graph_id] = g
        step = _Step(self._now())
        step.touched[graph_id] = g
        for nid in g.roots():
            step.queue.append((g, nid))
        self._decide(step)
        if _only_as_written(step, graph_id, preset):
            self._publish(self._messages(step))
        else:
            await self._commit(step)
        return ack_json(graph_row)

    # -- cancel ------------------------------------------------------------------------------
    async def cancel(self, client_id: str, graph_id: str) -> dict[str, Any] | None:
        """Cancel every working node of the caller's graph; ``None`` if it is not theirs.

        Cancelling an ended graph changes nothing and answers its state.
        """
        g = self._graphs.get(graph_id)
        if g is not None and g.client_id == client_id:
            step = _Step(self._now())
            step.touched[graph_id] = g
            g.user_cancelled = True
            for nid in g.live():
                node = g.nodes[nid]
                events = self._core(node.book_symbol).cancel(node.node_order_id, USER_CANCEL)
                self._handle(node.book_symbol, events, step)
            self._run_step(step)
        await self.flush()
        return await self.graph(client_id, graph_id)

    # -- reads ---------------------------------------------------------------------------------
    async def graph(self, client_id: str, graph_id: str) -> dict[str, Any] | None:
        row = await anyio.to_thread.run_sync(self.store.get_graph, client_id, graph_id)
        return None if row is None else graph_json(row)

    def mark(self, symbol: str) -> Fraction | None:
        """Mid price of ``symbol`` in its own terms, or ``None`` for a one-sided book."""
        try:
            view = self.market.book(symbol)
        except (MarketError, KeyError, TypeError):
            return None
        bid, ask = view.top()
        if bid is None or ask is None:
            return None
        return Fraction(bid + ask, 2 * view.price_scale)

    def positions_json(self, rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Position rows as the API sends them, marked to the current mid."""
        out = []
        for r in rows:
            out.append(position_json(Position.from_row(r), symbol=r["symbol"], venue=r["venue"], paper=bool(r["sandbox"]),
                                     mark=self.mark(r["symbol"]), updated_at=iso(r["updated_at"])))
        return out

    # -- the decision step ------------------------------------------------------------------------
    def _run_step(self, step: _Step) -> asyncio.Future[None]:
        """Activate queued nodes (cascading), end quiescent graphs, then commit."""
        self._decide(step)
        return self._commit(step)

    def _decide(self, step: _Step) -> None:
        while step.queue:
            g, nid = step.queue.popleft()
            if self._graphs.get(g.graph_id) is g:
                self._activate(g, nid, step)
        for g in list(step.touched.values()):
            if g.quiescent():
                self._end(g, step)
            elif g.graph_id in self._graphs:
                step.batch.graph(g.graph_id, updated_at=step.ts)

    def _activate(self, g: Graph, nid: str, step: _Step) -> None:
        node = g.nodes[nid]
        if node.status != NodeStatus.pending:
            return
        inst = self._lookup(node.symbol)
        reason = None
        book: BookView | None = None
        if inst is None or not inst.active:
            reason = "market_closed"
        else:
            book = self.market.book(node.book_symbol)
            if not g.paper and node.book_limit is not None and node.book_limit % book.tick:
                reason = "price_off_tick"  # the venue's tick changed since the graph was accepted
        if reason is not None or book is None:
            self._rejected(g, node, reason or "market_closed", step)
            return
        g.on_activated(nid)
        if node.order_seq is None:  # roots of a new graph got theirs when it was written
            self._order_seq += 1
            node.order_seq = self._order_seq
            node.activated_at = step.ts
        self._stage(g, node, step)
        order = Order(
            node.node_order_id, node.book_side, node.book_limit, node.qty_units,
            owner=g.client_id, paper=g.paper, post_only=node.post_only,
            crossable=not node.never_crosses, seq=node.order_seq,
        )
        self._orders[order.order_id] = node
        events = self._core(node.book_symbol).submit(order, book, step.ts_ms)
        self._handle(node.book_symbol, events, step)

    def _handle(self, book_symbol: str, events: Sequence[Event], step: _Step) -> None:
        deltas: dict[tuple[Side, int], int] = {}
        prints: list[Trade] = []
        for ev in events:
            if isinstance(ev, Fill):
                self._filled(ev, step)
            elif isinstance(ev, LevelDelta):
                k = (ev.side, ev.price)
                deltas[k] = deltas.get(k, 0) + ev.delta
            elif isinstance(ev, Print):
                prints.append(Trade(ev.ts_ms, book_symbol, ev.side, ev.price, ev.size))
            elif isinstance(ev, Cancelled):
                node = self._orders.pop(ev.order_id, None)
                if node is not None:
                    g = self._graphs[node.graph_id]
                    fire = not g.user_cancelled and ev.reason not in SILENT_CANCELS
                    for t in g.on_cancelled(node.node_id, ev.reason, fire=fire):
                        step.queue.append((g, t))
                    self._stage(g, node, step)
            elif isinstance(ev, Rejected):
                node = self._orders.pop(ev.order_id, None)
                if node is not None:
                    self._rejected(self._graphs[node.graph_id], node, ev.reason, step)
        if deltas or prints:
            self._push_book(book_symbol, deltas, prints, step.ts_ms)

    def _rejected(self, g: Graph, node: Node, reason: str, step: _Step) -> None:
        for t in g.on_rejected(node.node_id, reason):
            step.queue.append((g, t))
        self._stage(g, node, step)

    def _filled(self, ev: Fill, step: _Step) -> None:
        node = self._orders.get(ev.order_id)
        if node is None:  # pragma: no cover - the core only fills orders we gave it
            log.error("fill for unknown order %s", ev.order_id)
            return
        g = self._graphs[node.graph_id]
        price = node.price_scale - ev.price if node.complement else ev.price
        qty_1e8 = ev.size * node.unit_1e8
        price_f = Fraction(price, node.price_scale)
        fee = self.fees.fee_1e8(node.venue, price_f, Fraction(qty_1e8, QTY_1E8), ev.liquidity)
        self._fill_seq += 1
        row = {
            "fill_id": "fill_" + short_code(20), "seq": self._fill_seq, "client_id": g.client_id,
            "graph_id": g.graph_id, "node_id": node.node_id, "node_order_id": node.node_order_id,
            "symbol": node.symbol, "venue": node.venue, "side": node.side, "price_units": price,
            "price_scale": node.price_scale, "qty_1e8": qty_1e8, "fee_1e8": fee,
            "liquidity": ev.liquidity, "sandbox": g.paper, "ts": step.ts,  # column sandbox: paper trading
        }
        step.batch.fills.append(row)
        step.fills.append((g, row))
        for t in g.on_fill(node.node_id, qty_1e8, round(price_f * qty_1e8), fee):
            step.queue.append((g, t))
        if node.status == NodeStatus.filled:
            self._orders.pop(ev.order_id, None)
        self._stage(g, node, step)

    def _stage(self, g: Graph, node: Node, step: _Step) -> None:
        step.touched[g.graph_id] = g
        step.changed_nodes.setdefault(g.graph_id, {})[node.node_id] = None
        step.batch.node(g.graph_id, node.node_id, **node.stamp(step.ts))

    def _end(self, g: Graph, step: _Step) -> None:
        reason = USER_CANCEL if g.user_cancelled else NOT_TRIGGERED
        for nid in g.pending():
            g.on_cancelled(nid, reason, fire=False)
            self._stage(g, g.nodes[nid], step)
        status = g.outcome()
        g.end(status)
        step.batch.graph(g.graph_id, status=status, updated_at=step.ts, ended_at=step.ts)
        self._graphs.pop(g.graph_id, None)

    # -- the book --------------------------------------------------------------------------------
    def _push_book(self, book_symbol: str, deltas: Mapping[tuple[Side, int], int],
                   prints: Sequence[Trade], ts_ms: int) -> None:
        book = self.market.book(book_symbol)
        events: list[BookEvent] = []
        for (side, price), delta in deltas.items():
            if delta == 0:
                continue
            size = max(0, book.size_at(side, price) + delta)
            if size > 0 and price % book.tick:
                continue  # off the current grid: the level cannot be shown
            events.append(LevelUpdate(ts_ms, book_symbol, side, price, size))
        events.extend(prints)
        if not events:
            return
        self._applying = True
        try:
            self.market.apply(events)
        finally:
            self._applying = False

    def _on_book_events(self, events: Sequence[BookEvent]) -> None:
        """Market listener: keep our resting sizes on top of the venue's, schedule re-matching."""
        if self._applying or not self.started:
            return
        last: dict[tuple[str, Side, int], int] = {}
        for ev in events:
            core = self._cores.get(ev.symbol)
            if core is None or not core.orders:
                continue
            if isinstance(ev, LevelUpdate):
                if core.own_size(ev.side, ev.price):
                    last[(ev.symbol, ev.side, ev.price)] = ev.size
                self._dirty.setdefault(ev.symbol, False)
            elif isinstance(ev, TickSizeChange):
                self._dirty[ev.symbol] = True
            elif isinstance(ev, BookReset):
                # A venue snapshot replaced the book: our resting sizes go back on top.
                venue = {Side.BID: dict(ev.bids), Side.ASK: dict(ev.asks)}
                for side in (Side.BID, Side.ASK):
                    for price in core.own_levels(side):
                        last[(ev.symbol, side, price)] = venue[side].get(price, 0)
                self._dirty[ev.symbol] = ev.tick is not None
        for (sym, side, price), venue_size in last.items():
            book = self.market.book(sym)
            if price % book.tick:
                continue
            want = venue_size + self._cores[sym].own_size(side, price)
            if book.size_at(side, price) != want:
                book.set_level(side, price, want)
        if self._dirty and not self._rematch_scheduled and self._loop is not None:
            self._rematch_scheduled = True
            self._loop.call_soon(self._rematch)

    def _rematch(self) -> None:
        self._rematch_scheduled = False
        if not self.started:
            return
        dirty, self._dirty = self._dirty, {}
        step = _Step(self._now())
        for sym, tick_changed in dirty.items():
            core = self._cores.get(sym)
            if core is None or not core.orders:
                continue
            book = self.market.book(sym)
            if tick_changed:
                self._handle(sym, core.on_tick_change(book.tick), step)
            self._handle(sym, core.rematch(book, step.ts_ms), step)
        if step.touched or step.queue:
            self._run_step(step)

    def rematch_all(self) -> None:
        """Re-match every book with working orders now (after a restore)."""
        for sym, core in self._cores.items():
            if core.orders:
                self._dirty.setdefault(sym, False)
        self._rematch()

    # -- committing -------------------------------------------------------------------------------
    def _commit(self, step: _Step) -> asyncio.Future[None]:
        loop = self._loop or asyncio.get_running_loop()
        messages = self._messages(step)
        if not step.batch:
            done: asyncio.Future[None] = loop.create_future()
            done.set_result(None)
            return done
        return self._writer.commit(loop, step.batch, lambda: self._publish(messages))

    def _messages(self, step: _Step) -> list[tuple[str, Graph, dict[str, Any]]]:
        out: list[tuple[str, Graph, dict[str, Any]]] = []
        for filled, row in step.fills:
            out.append((channels.FILLS, filled, fill_json(row)))
        for gid, nids in step.changed_nodes.items():
            g = step.touched.get(gid)
            if g is None:
                continue
            # The nodes as this step left them: what the batch holds for them.
            nodes = [g.nodes[nid] for nid in nids]
            out.append((channels.GRAPHS, g, graph_update_json(gid, g.status, nodes, step.ts)))
        return out

    def _publish(self, messages: Sequence[tuple[str, Graph, dict[str, Any]]]) -> None:
        hub = self.market.hub
        for channel, g, data in messages:
            try:
                if hub.has_subscribers(channel, g.client_id):
                    # scope: a run key's subscription gets only its own strategy's activity
                    hub.publish(channel, data, client_id=g.client_id, scope=g.strategy_id)
            except Exception:  # a stream problem must never break matching
                log.exception("trading: publish on %s failed", channel)

    # -- restore --------------------------------------------------------------------------------
    async def restore(self) -> int:
        """Load active graphs from the store and resume them; returns how many."""
        rows = await anyio.to_thread.run_sync(self.store.load_active)
        step = _Step(self._now())
        for row in rows:
            if row["graph_id"] in self._graphs:
                continue
            try:
                self._restore_graph(row, step)
            except Exception:  # one bad graph must not keep the coordinator from starting
                log.exception("trading: could not restore graph %s; it stays active in the store",
                              row["graph_id"])
                self._forget(row["graph_id"], step)
        self._run_step(step)
        await self.flush()
        self.rematch_all()
        await self.flush()
        if rows:
            log.info("trading: restored %d active graph(s), %d working order(s)", len(rows), len(self._orders))
        return len(rows)

    def _restore_graph(self, row: Mapping[str, Any], step: _Step) -> None:
        g = Graph.from_rows(row)
        self._graphs[g.graph_id] = g
        step.touched[g.graph_id] = g
        live = sorted((n for n in g.nodes.values() if n.live), key=lambda n: (n.order_seq or 0, n.node_id))
        for node in live:
            self._restore_order(g, node, step)
        targets = g.targets
        for nid, node in g.nodes.items():
            if nid not in targets and node.status == NodeStatus.pending:
                step.queue.append((g, nid))  # accepted but never activated: fire now

    def _forget(self, graph_id: str, step: _Step) -> None:
        g = self._graphs.pop(graph_id, None)
        step.touched.pop(graph_id, None)
        step.changed_nodes.pop(graph_id, None)
        step.queue = deque((x, n) for x, n in step.queue if x.graph_id != graph_id)
        step.batch.graphs.pop(graph_id, None)
        for key in [k for k in step.batch.nodes if k[0] == graph_id]:
            del step.batch.nodes[key]
        if g is not None:
            for node in g.nodes.values():
                if self._orders.pop(node.node_order_id, None) is not None:
                    events = self._core(node.book_symbol).cancel(node.node_order_id)
                    with contextlib.suppress(Exception):
                        self._handle(node.book_symbol, events, step)  # takes it off the book

    def _restore_order(self, g: Graph, node: Node, step: _Step) -> None:
        order = Order(
            node.node_order_id, node.book_side, node.book_limit, node.qty_units, owner=g.client_id,
            paper=g.paper, post_only=node.post_only, crossable=not node.never_crosses,
            seq=node.order_seq or 0, filled=min(node.filled_units, node.qty_units),
        )
        if order.remaining <= 0 or order.limit is None:
            # A filled or market order cannot rest: close it as the engine would have.
            self._orders[order.order_id] = node
            self._handle(node.book_symbol, [Cancelled(order.order_id, order.remaining, "restart")], step)
            return
        self._orders[order.order_id] = node
        try:
            book = self.market.book(node.book_symbol)
        except (MarketError, KeyError):  # the market is gone (another catalogue, a replay)
            self._handle(node.book_symbol, [Cancelled(order.order_id, order.remaining, "market_unavailable")],
                         step)
            return
        if not order.paper and order.crossable and order.limit % book.tick:
            self._handle(node.book_symbol, [Cancelled(order.order_id, order.remaining, "tick_size_changed")], step)
            return
        deltas = self._core(node.book_symbol).restore(order)
        self._handle(node.book_symbol, deltas, step)


def _only_as_written(step: _Step, graph_id: str, preset: Mapping[str, int]) -> bool:
    """Whether placing a new graph's roots changed nothing beyond what its insert wrote
    (roots working, unfilled; no fills, no other graph touched)."""
    if step.batch.fills or set(step.batch.graphs) - {graph_id}:
        return False
    if any(set(v) - {"updated_at"} for v in step.batch.graphs.values()):
        return False
    for (gid, nid), v in step.batch.nodes.items():
        if gid != graph_id or nid not in preset:
            return False
        if v.get("status") != NodeStatus.working or v.get("filled_1e8") or v.get("reason") is not None:
            return False
        if v.get("order_seq") != preset[nid]:
            return False
    return True


__all__ = ["MarketPort", "TradingEngine"]
