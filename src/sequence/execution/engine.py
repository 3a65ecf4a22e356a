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
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from fractions import Fraction
from typing import Any, Protocol

import anyio

from sequence.market.book import BookView, Side
from sequence.market.clock import Clock, iso
from sequence.market.errors import MarketError
from sequence.market.events import BookEvent, BookReset, LevelUpdate, TickSizeChange, Trade
from sequence.store.controls import CLIENT, ControlsStore
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
from sequence.trading.positions import Position, apply_fill
from sequence.trading.risk import CANCEL_ON_STOP, DEFAULT_LIMITS, Exposure, OrderRisk, RiskLimits
from sequence.trading.risk import check as risk_check
from sequence.trading.validation import GraphError, GraphRequest, InstrumentLike, parse_graph
from sequence.trading.wire import ack_json, fill_json, graph_json, graph_update_json, position_json

from .router import Acked, Ended, Filled, LiveEvent, LiveOrder, OrderRouter, Refused
from .venues.base import OrderRequest, VenueFill, client_order_id
from .writer import Writer

log = logging.getLogger(__name__)

#: Real orders that ended here, remembered (newest) for the fills a venue reports late.
ENDED_REAL_KEPT = 10_000
#: How long cancelling a graph waits for the venues to confirm its real orders' cancels.
CANCEL_WAIT_S = 5.0


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

    def ensure(self, symbol: str) -> bool: ...

    def add_keeper(self, keeper: Callable[[], Iterable[str]]) -> Callable[[], None]: ...


def request_hash(body: Any, paper: bool) -> str:
    """What an ``Idempotency-Key`` is bound to (stored: the input's shape must not change,
    so paper trading keeps the wire's name ``sandbox`` in it)."""
    text = json.dumps({"body": body, "sandbox": paper}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# -- a decision step ---------------------------------------------------------------------


class _Step:
    """What one decision step did: the batch to commit and the messages to send after."""

    __slots__ = ("batch", "changed_nodes", "fills", "queue", "sends", "touched", "ts")

    def __init__(self, ts: float) -> None:  # by hand: the dataclass (default factories) cost ~30 % more
        self.ts = ts
        self.batch = TradeBatch([], [], {}, {})
        self.queue: deque[tuple[Graph, str]] = deque()
        self.touched: dict[str, Graph] = {}
        self.fills: list[tuple[Graph, dict[str, Any]]] = []
        self.changed_nodes: dict[str, dict[str, None]] = {}
        self.sends: list[LiveOrder] = []  # real orders to send once committed

    @property
    def ts_ms(self) -> int:
        return int(self.ts * 1000)


# -- the engine ---------------------------------------------------------------------------------


class TradingEngine:
    """See the module docstring."""

    def __init__(self, store: TradingStore, market: MarketPort, *, fees: FeeSchedule | None = None,
                 router: OrderRouter | None = None, controls: ControlsStore | None = None) -> None:
        self.store = store
        self.market = market
        self.fees = fees or FeeSchedule()
        # Real orders on live venues go through the router; everything else is matched here.
        self.router = router
        self.controls = controls
        self._live: dict[str, Node] = {}  # node_order_id -> node whose order works at a venue
        self._seen_fills: set[tuple[str, str]] = set()  # (venue, venue fill id) already counted
        self._stored_limits: dict[tuple[str, str], dict[str, Any]] = {}
        self._exposure: dict[tuple[str, str], Exposure] = {}
        self._held: dict[tuple[str, str, str], Position] = {}  # (client, scope, symbol) -> real position
        self._kills: dict[tuple[str, str], float] = {}
        self._reconciling: list[tuple[LiveOrder | None, str, str, str, str, int]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ended_real: OrderedDict[str, tuple[Graph, Node]] = OrderedDict()  # see _real_done
        if router is not None:
            router.bind(self._on_live)
            router.on_session_lost = self._session_lost
        self._graphs: dict[str, Graph] = {}
        # graph id -> the algo that placed it (submit_now): told of its fills and status.
        self._observed: dict[str, Callable[[str, dict[str, Any]], None]] = {}
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
        self.last_accepted_at = 0.0

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
        if self.controls is not None:
            self._stored_limits = await anyio.to_thread.run_sync(self.controls.risk_limits)
            self._kills = await anyio.to_thread.run_sync(self.controls.kill_switches)
        if self.router is not None:
            for f in await anyio.to_thread.run_sync(self.store.real_fills):
                self._count_real_fill(f["client_id"], f["strategy_id"], f["symbol"], f["side"],
                                      Fraction(f["price_units"], f["price_scale"]), int(f["qty_1e8"]),
                                      int(f["fee_1e8"]), float(f["ts"]))
                if f["venue_fill_id"]:
                    self._seen_fills.add((f["venue"], f["venue_fill_id"]))
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
        if self.router is not None:
            await self.router.close()
        await self._writer.stop()
        self._graphs.clear()
        self._cores.clear()
        self._orders.clear()
        self._live.clear()

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
        return len(self._orders) + len(self._live)

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
        g, graph_row, node_rows, preset = self._new_graph(
            req, client_id, key_id, run_id=run_id, idempotency_key=idempotency_key,
            request_hash=request_hash(body, req.paper) if idempotency_key else None)
        created: Created = await anyio.to_thread.run_sync(
            lambda: self.store.create_graph(graph_row, node_rows, run_id=run_id))
        if not created.created:
            return ack_json(created.graph, replay=True)
        g.strategy_id = created.graph.get("strategy_id") or strategy_id
        g.run_id = run_id
        graph_id = g.graph_id
        self._graphs[graph_id] = g
        step = _Step(self._now())
        step.touched[graph_id] = g
        for nid in g.roots():
            step.queue.append((g, nid))
        self._decide(step)
        if _only_as_written(step, graph_id, preset):
            self._publish(self._messages(step))
            if self.router is not None:  # their client order ids are in the stored rows already
                for order in step.sends:
                    self.router.send(order)
        else:
            await self._commit(step)
        return ack_json(graph_row)

    def _new_graph(self, req: GraphRequest, client_id: str, key_id: str, *, run_id: str | None,
                   idempotency_key: str | None, request_hash: str | None,
                   deployment_id: str | None = None) -> tuple[Graph, dict[str, Any], list[dict[str, Any]],
                                                              dict[str, int]]:
        """A new graph and the rows that store it. Roots are written already "working", with
        their time priority: when placing them changes nothing else (the usual resting order)
        the insert is the only commit. Their status moves when they are placed."""
        now = self._now()
        g = Graph.new("graph_" + short_code(20), client_id, req.nodes, req.edges, paper=req.paper, now=now)
        graph_row = g.row(key_id=key_id, run_id=run_id, idempotency_key=idempotency_key,
                          request_hash=request_hash, now=now)
        if deployment_id is not None:
            graph_row["deployment_id"] = deployment_id
        preset = self._place_roots(g, now)
        node_rows = []
        for n in req.nodes:
            row = n.row(client_id)
            if n.node_id in preset:
                row["status"] = NodeStatus.working.value
            node_rows.append(row)
        return g, graph_row, node_rows, preset

    def _place_roots(self, g: Graph, now: float) -> dict[str, int]:
        """Give the roots of a new graph their time priority; a real order's client order id
        is set now, so it goes into the insert itself: once the graph is stored the order can
        be sent (and found after a crash) with no second commit. Returns node id -> order seq."""
        preset: dict[str, int] = {}
        for n in g.nodes.values():
            if n.activation == "root":
                self._order_seq += 1
                n.order_seq = preset[n.node_id] = self._order_seq
                n.activated_at = now
                if self._routed(g, n):
                    n.client_order_id = client_order_id(n.node_order_id)
        return preset

    def submit_now(self, req: GraphRequest, *, client_id: str, key_id: str, deployment_id: str,
                   observer: Callable[[str, dict[str, Any]], None]) -> Graph:
        """Place a validated graph at once, on the loop: the WASM algos' path.

        Unlike :meth:`submit`, nothing waits for the store: the graph's insert goes into
        the same step batch as what placing it changed, committed in order by the writer
        thread (real orders are sent only after that commit, as always). Matching, risk
        checks and the kill switch are the same. ``observer(channel, message)`` gets the
        graph's ``fills`` and ``graphs`` messages as each step is decided (before its
        commit), so the algo hears of its fills without waiting for the disk. The caller
        fences (an algo places nothing once it lost its lease). Raises ``GraphError`` if a
        book is not ready.
        """
        for n in req.nodes:
            if not self.market.ensure(n.symbol):
                raise GraphError("nodes", f"no order book for {n.symbol} from {n.venue} yet; retry shortly",
                                 code="not_ready")
        now = self._now()
        g = Graph.new("graph_" + short_code(20), client_id, req.nodes, req.edges, paper=req.paper, now=now)
        self._place_roots(g, now)
        self._graphs[g.graph_id] = g
        self._observed[g.graph_id] = observer
        step = _Step(now)
        step.touched[g.graph_id] = g
        for nid in g.roots():
            step.queue.append((g, nid))
        self._decide(step)  # the roots reach the matching core here
        # Its rows as this step left it (the step's own updates, applied after, change nothing).
        graph_row = g.row(key_id=key_id, run_id=None, idempotency_key=None, request_hash=None, now=now)
        graph_row["deployment_id"] = deployment_id
        step.batch.creates.append((graph_row, [n.row(client_id) for n in g.nodes.values()]))
        self._commit(step)
        return g

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
            cancels = []
            for nid in g.live():
                node = g.nodes[nid]
                if node.node_order_id in self._live:
                    cancels.append(self._cancel_real(g, node))
                    continue
                events = self._core(node.book_symbol).cancel(node.node_order_id, USER_CANCEL)
                self._handle(node.book_symbol, events, step)
            self._run_step(step)
            if cancels:  # the venue confirms; the node ends when it does (or stays working if not)
                await asyncio.wait(cancels, timeout=CANCEL_WAIT_S)
        await self.flush()
        return await self.graph(client_id, graph_id)

    async def cancel_graphs(self, client_id: str, graph_ids: Iterable[str]) -> None:
        """Cancel many of the client's graphs in one step and one commit (an algo that stops
        with a thousand working orders): :meth:`cancel` without reading each graph back."""
        step = _Step(self._now())
        cancels = []
        for graph_id in graph_ids:
            g = self._graphs.get(graph_id)
            if g is None or g.client_id != client_id:
                continue
            step.touched[graph_id] = g
            g.user_cancelled = True
            for nid in g.live():
                node = g.nodes[nid]
                if node.node_order_id in self._live:
                    cancels.append(self._cancel_real(g, node))
                    continue
                self._handle(node.book_symbol, self._core(node.book_symbol).cancel(node.node_order_id, USER_CANCEL),
                             step)
        self._run_step(step)
        if cancels:
            await asyncio.wait(cancels, timeout=CANCEL_WAIT_S)
        await self.flush()

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
        if self._routed(g, node):
            assert inst is not None  # checked above
            self._activate_real(g, node, inst, step)
            return
        g.on_activated(nid)
        if node.order_seq is None:  # roots of a new graph got theirs when it was written
            self._order_seq += 1
            node.order_seq = self._order_seq
            node.activated_at = step.ts
        order = Order(
            node.node_order_id, node.book_side, node.book_limit, node.qty_units,
            owner=g.client_id, paper=g.paper, post_only=node.post_only,
            crossable=not node.never_crosses, seq=node.order_seq,
        )
        self._orders[order.order_id] = node
        events = self._core(node.book_symbol).submit(order, book, step.ts_ms)
        self.last_accepted_at = time.perf_counter()  # bench/algo_latency.py: "accepted by the matching engine"
        # The bookkeeping after the match: the core never touches the node, so its row
        # ("working") is the same staged here as before the match, and still goes into
        # the batch ahead of what the match's events stage.
        self._stage(g, node, step)
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

    # -- real orders (live venues) ------------------------------------------------------------
    def _routed(self, g: Graph, node: Node) -> bool:
        """A real order on a live venue: the venue matches it, not us."""
        return not g.paper and self.router is not None and self.router.routes(node.venue)

    def _scopes(self, g: Graph) -> list[tuple[str, str]]:
        """Whose limits and kill switches apply: the client's, and its strategy's if any."""
        return [(g.client_id, CLIENT)] + ([(g.client_id, g.strategy_id)] if g.strategy_id else [])

    def limits(self, client_id: str, strategy_id: str | None = None) -> RiskLimits | None:
        """The limits in force: a client's are the defaults with its changes; a strategy has
        limits only once some are set for it."""
        stored = self._stored_limits.get((client_id, strategy_id or CLIENT))
        if strategy_id:
            return None if stored is None else RiskLimits().merged(stored)
        return DEFAULT_LIMITS.merged(stored or {})

    def set_limits(self, client_id: str, strategy_id: str | None, stored: dict[str, Any] | None) -> None:
        """Take the limits the API just stored (None: the scope's were removed)."""
        key = (client_id, strategy_id or CLIENT)
        if stored is None:
            self._stored_limits.pop(key, None)
        else:
            self._stored_limits[key] = dict(stored)

    def cancel_on_stop(self, client_id: str, strategy_id: str | None) -> bool:
        """Whether a run's real orders are cancelled when it stops (the strategy's setting, else
        the client's, else on)."""
        for key in ([(client_id, strategy_id)] if strategy_id else []) + [(client_id, CLIENT)]:
            value = self._stored_limits.get(key, {}).get(CANCEL_ON_STOP)
            if value is not None:
                return bool(value)
        return True

    def exposure(self, client_id: str, strategy_id: str | None = None) -> Exposure:
        e = self._exposure.setdefault((client_id, strategy_id or CLIENT), Exposure())
        e.roll()
        return e

    def killed(self, client_id: str, strategy_id: str | None) -> bool:
        return (client_id, CLIENT) in self._kills or bool(strategy_id and (client_id, strategy_id) in self._kills)

    def _admit(self, g: Graph, node: Node, price: Fraction) -> str | None:
        """Why this real order must not leave (kill switch, a risk limit), or None."""
        if self.killed(g.client_id, g.strategy_id):
            return "kill_switch_engaged: the kill switch is on; release it with `sequence kill --release`"
        order = OrderRisk(node.symbol, node.side, Fraction(node.qty_1e8, QTY_1E8), price)
        now = time.monotonic()
        for client_id, sid in self._scopes(g):
            limits = self.limits(client_id, sid or None)
            if limits is None:
                continue
            breach = risk_check(limits, order, self.exposure(client_id, sid or None), at=now)
            if breach is not None:
                code, message = breach
                return f"{code}: {message}" + (f" (strategy {sid})" if sid else "")
        return None

    def _activate_real(self, g: Graph, node: Node, inst: InstrumentLike, step: _Step) -> None:
        assert self.router is not None
        if node.limit_units is not None:
            price = Fraction(node.limit_units, node.price_scale)
        else:  # a market order: its notional at the price it would pay now
            mark = self.mark(node.symbol)
            if mark is None:
                self._rejected(g, node, "risk_no_price: a market order needs a two-sided book to be priced", step)
                return
            price = mark
        refusal = self._admit(g, node, price)
        if refusal is not None:
            self._rejected(g, node, refusal, step)
            return
        g.on_activated(node.node_id)
        if node.order_seq is None:
            self._order_seq += 1
            node.order_seq = self._order_seq
            node.activated_at = step.ts
        node.client_order_id = client_order_id(node.node_order_id)
        self._stage(g, node, step)
        self._live[node.node_order_id] = node
        now = time.monotonic()
        for client_id, sid in self._scopes(g):
            e = self.exposure(client_id, sid or None)
            e.open_orders += 1
            e.record_send(now)
        step.sends.append(self._live_order(g, node, inst))

    def _live_order(self, g: Graph, node: Node, inst: InstrumentLike) -> LiveOrder:
        """The venue request for a node (execution/venues/base.py, "Units")."""
        # Kalshi names the market (its ticker) and the outcome the side; the others the token/product.
        venue_symbol = inst.market_slug if node.venue == "kalshi" else node.symbol
        extra: dict[str, Any] = {}
        if node.venue == "polymarket":
            # Signed into the order: fixed per attempt (its activation), so a retry or a restart
            # rebuilds the very same order and order id.
            extra = {"tick_size": Decimal(str(inst.tick_size)), "neg_risk": inst.neg_risk,
                     "created_ms": int((node.activated_at or 0) * 1000)}
        price = None if node.limit_units is None else Decimal(node.limit_units) / Decimal(node.price_scale)
        coid = node.client_order_id or client_order_id(node.node_order_id)
        return LiveOrder(
            node_order_id=node.node_order_id, client_order_id=coid, client_id=g.client_id, venue=node.venue,
            symbol=node.symbol,
            request=OrderRequest(
                client_order_id=coid, symbol=venue_symbol, side=node.side,  # type: ignore[arg-type]
                qty=Decimal(node.qty_1e8) / Decimal(QTY_1E8), price=price,
                tif="ioc" if price is None else "gtc", post_only=node.post_only,
                outcome=inst.outcome, extra=extra,  # type: ignore[arg-type]
            ),
        )

    def _cancel_real(self, g: Graph, node: Node) -> asyncio.Task[Any]:
        assert self.router is not None and node.client_order_id is not None
        return self.router.cancel(g.client_id, node.venue, node.venue_order_id, node.client_order_id,
                                  node.node_order_id)

    def _real_done(self, g: Graph, node: Node) -> None:
        """The node's real order no longer works: it stops counting against the limits."""
        if self._live.pop(node.node_order_id, None) is None:
            return
        # Kept a while: a fill the venue reports after the order ended here still finds its node.
        self._ended_real[node.node_order_id] = (g, node)
        while len(self._ended_real) > ENDED_REAL_KEPT:
            self._ended_real.popitem(last=False)
        for client_id, sid in self._scopes(g):
            e = self.exposure(client_id, sid or None)
            e.open_orders = max(0, e.open_orders - 1)
        if self.router is not None and node.client_order_id:
            self.router.untrack(g.client_id, node.venue, node.client_order_id)

    def _count_real_fill(self, client_id: str, strategy_id: str | None, symbol: str, side: str, price: Fraction,
                         qty_1e8: int, fee_1e8: int, ts: float) -> None:
        """A real fill moves the scopes' positions and, when it closes some, today's realized P&L."""
        today = int(time.time() // 86400)
        for sid in [CLIENT] + ([strategy_id] if strategy_id else []):
            key = (client_id, sid, symbol)
            before = self._held.get(key, Position())
            after = apply_fill(before, side, price, qty_1e8, fee_1e8)
            self._held[key] = after
            e = self.exposure(client_id, sid or None)
            e.positions[symbol] = Fraction(after.net_1e8, QTY_1E8)
            if int(ts // 86400) == today:
                e.realized_today += Fraction(after.realized_1e8 - before.realized_1e8 - fee_1e8, QTY_1E8)

    def _on_live(self, events: list[LiveEvent]) -> None:
        """The router's reports (on the loop): apply them in one decision step."""
        if not self.started:
            return
        step = _Step(self._now())
        self._apply_live(events, step)
        if step.touched or step.queue:
            self._run_step(step)

    def _apply_live(self, events: Sequence[LiveEvent], step: _Step) -> None:
        for ev in events:
            node = self._live.get(ev.node_order_id)
            g = None if node is None else self._graphs.get(node.graph_id)
            if node is None and isinstance(ev, Filled):
                # A late fill of an order that already ended here (a fill racing its cancel), its
                # graph perhaps ended too: money moved, so it is still stored and counted.
                g, node = self._ended_real.get(ev.node_order_id, (None, None))
                if node is None:
                    log.error("fill %s at %s for %s: no such real order here; not recorded",
                              ev.fill.fill_id, ev.fill.venue_order_id, ev.node_order_id)
            if node is None or g is None:
                continue
            step.touched[g.graph_id] = g
            if isinstance(ev, Acked):
                if node.venue_order_id != ev.venue_order_id:
                    node.venue_order_id = ev.venue_order_id
                    self._stage(g, node, step)
            elif isinstance(ev, Refused):
                if node.live and node.filled_1e8 == 0:
                    self._real_done(g, node)
                    self._rejected(g, node, f"{ev.code}: {ev.reason}", step)
            elif isinstance(ev, Ended):
                if node.live:
                    self._real_done(g, node)
                    if ev.status == "rejected" and node.filled_1e8 == 0:
                        self._rejected(g, node, f"venue_rejected: {ev.reason}", step)
                    else:
                        reason = USER_CANCEL if g.user_cancelled else f"venue_cancelled: {ev.reason}"
                        fire = not g.user_cancelled and reason not in SILENT_CANCELS
                        for t in g.on_cancelled(node.node_id, reason, fire=fire):
                            step.queue.append((g, t))
                        self._stage(g, node, step)
            else:
                self._real_fill(g, node, ev.fill, step)

    def _real_fill(self, g: Graph, node: Node, fill: VenueFill, step: _Step) -> None:
        key = (node.venue, fill.fill_id)
        if key in self._seen_fills:
            return  # reported again (a reconnect, the backfill): counted once
        self._seen_fills.add(key)
        qty_1e8 = int(fill.qty * QTY_1E8)
        if qty_1e8 <= 0:
            return
        price_units = int((fill.price * node.price_scale).to_integral_value())
        price_f = Fraction(price_units, node.price_scale)
        fee_1e8 = int((fill.fee * QTY_1E8).to_integral_value())
        self._fill_seq += 1
        row = {
            "fill_id": "fill_" + short_code(20), "seq": self._fill_seq, "client_id": g.client_id,
            "graph_id": g.graph_id, "node_id": node.node_id, "node_order_id": node.node_order_id,
            "symbol": node.symbol, "venue": node.venue, "side": node.side, "price_units": price_units,
            "price_scale": node.price_scale, "qty_1e8": qty_1e8, "fee_1e8": fee_1e8,
            "liquidity": "taker" if fill.is_taker else "maker", "sandbox": False,
            "ts": fill.ts_ms / 1000 if fill.ts_ms else step.ts, "venue_fill_id": fill.fill_id,
        }
        step.batch.fills.append(row)
        step.fills.append((g, row))
        self._count_real_fill(g.client_id, g.strategy_id, node.symbol, node.side, price_f, qty_1e8, fee_1e8,
                              float(row["ts"]))  # type: ignore[arg-type]
        if node.live:
            for t in g.on_fill(node.node_id, qty_1e8, round(price_f * qty_1e8), fee_1e8):
                step.queue.append((g, t))
            if node.status == NodeStatus.filled:
                self._real_done(g, node)
        else:
            # Money moved after the order ended here (a fill racing a cancel): the fill and the
            # position count; the node's totals follow, its status stays.
            log.warning("fill %s at %s after node %s ended (%s)", fill.fill_id, node.venue, node.node_order_id,
                        node.status)
            node.filled_1e8 += qty_1e8
            node.notional_1e8 += round(price_f * qty_1e8)
            node.fees_1e8 += fee_1e8
            node.fill_count += 1
        self._stage(g, node, step)

    # -- the kill switch --------------------------------------------------------------------------
    async def kill(self, client_id: str, strategy_id: str | None = None) -> dict[str, Any]:
        """Engage the kill switch of the client (or one strategy): every working order of that
        scope is cancelled — at the venues for real orders — and no real order is sent until it is
        released. Returns what was cancelled and what could not be."""
        if self.controls is not None:
            at = await anyio.to_thread.run_sync(self.controls.engage_kill, client_id, strategy_id)
        else:
            at = time.time()
        self._kills[(client_id, strategy_id or CLIENT)] = at
        graphs = [g for g in list(self._graphs.values()) if g.client_id == client_id
                  and (strategy_id is None or g.strategy_id == strategy_id)]
        step = _Step(self._now())
        real: list[tuple[str, str, str | None, str, str]] = []
        paper = 0
        for g in graphs:
            g.user_cancelled = True
            step.touched[g.graph_id] = g
            for nid in g.live():
                node = g.nodes[nid]
                if node.node_order_id in self._live:
                    assert node.client_order_id is not None
                    real.append((g.client_id, node.venue, node.venue_order_id, node.client_order_id,
                                 node.node_order_id))
                    continue
                paper += 1
                self._handle(node.book_symbol, self._core(node.book_symbol).cancel(node.node_order_id, USER_CANCEL),
                             step)
        self._run_step(step)
        done: list[str] = []
        failed: list[str] = []
        if real and self.router is not None:
            done, failed = await self.router.cancel_all(real)
        await self.flush()
        return {"engaged_at": iso(at), "graphs": len(graphs), "orders_cancelled": paper + len(done),
                "real_orders_cancelled": len(done), "not_cancelled": failed}

    async def release(self, client_id: str, strategy_id: str | None = None) -> bool:
        """Release the scope's kill switch; True if it was engaged."""
        was = self._kills.pop((client_id, strategy_id or CLIENT), None) is not None
        if self.controls is not None:
            was = await anyio.to_thread.run_sync(self.controls.release_kill, client_id, strategy_id) or was
        return was

    def cancel_run_soon(self, run_id: str) -> None:
        """:meth:`cancel_run` from any thread (the runner routes run in a thread pool)."""
        loop = self._loop
        if loop is None or not self.started or self.router is None:
            return
        loop.call_soon_threadsafe(lambda: self._spawn(self.cancel_run(run_id)))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _session_lost(self, client_id: str, venue: str) -> None:
        """The venue's user channel failed: we no longer see fills there, so the real orders
        strategies placed at that venue are cancelled (over REST, while it answers)."""
        runs = {g.run_id for g in self._graphs.values() if g.client_id == client_id and g.run_id
                for n in g.nodes.values() if n.venue == venue and n.node_order_id in self._live}
        for run_id in runs:
            log.warning("%s session of %s lost: cancelling run %s's real orders there", venue, client_id, run_id)
            self._spawn(self.cancel_run(run_id, venue=venue))

    async def cancel_run(self, run_id: str, *, venue: str | None = None) -> int:
        """A run ended or lost its lease: its real orders are cancelled at their venues (its
        paper orders keep working, as they always have). Returns how many were asked to cancel."""
        tasks = [self._cancel_real(g, node) for g in list(self._graphs.values()) if g.run_id == run_id
                 and self.cancel_on_stop(g.client_id, g.strategy_id)
                 for node in g.nodes.values() if node.node_order_id in self._live
                 and (venue is None or node.venue == venue)]
        if tasks:
            await asyncio.wait(tasks, timeout=CANCEL_WAIT_S)
        return len(tasks)

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
        if self._observed:
            self._observe(messages)
        sends = step.sends
        if not step.batch:
            done: asyncio.Future[None] = loop.create_future()
            done.set_result(None)
            return done

        def then() -> None:
            self._publish(messages)
            # Only now: the node's client order id is stored, so a crash from here on
            # finds the order by it (execution/router.py, "exactly once").
            if self.router is not None:
                for order in sends:
                    self.router.send(order)

        return self._writer.commit(loop, step.batch, then)

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

    def _observe(self, messages: Sequence[tuple[str, Graph, dict[str, Any]]]) -> None:
        for channel, g, data in messages:
            observer = self._observed.get(g.graph_id)
            if observer is None:
                continue
            if channel == channels.GRAPHS and data.get("status") != "active":
                del self._observed[g.graph_id]
            try:
                observer(channel, data)
            except Exception:  # an algo's bookkeeping must never break matching
                log.exception("trading: observer of %s failed", g.graph_id)

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
        if self._reconciling and self.router is not None:
            # Before anything new is sent: what happened to our real orders while we were down.
            todo, self._reconciling = self._reconciling, []
            events = await self.router.reconcile(todo)
            step = _Step(self._now())
            self._apply_live(events, step)
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
            if self._routed(g, node):
                self._restore_real(g, node)
            else:
                self._restore_order(g, node, step)
        targets = g.targets
        for nid, node in g.nodes.items():
            if nid not in targets and node.status == NodeStatus.pending:
                step.queue.append((g, nid))  # accepted but never activated: fire now

    def _restore_real(self, g: Graph, node: Node) -> None:
        """A real order that was working: reconciled with its venue (:meth:`restore`), never
        sent again. A root written "working" but never sent (no client order id yet: the
        coordinator stopped in between) is activated again, like any pending root."""
        if node.client_order_id is None:
            node.status = NodeStatus.pending.value
            node.order_seq = None
            return
        self._live[node.node_order_id] = node
        for client_id, sid in self._scopes(g):
            self.exposure(client_id, sid or None).open_orders += 1
        inst = self._lookup(node.symbol)
        order = self._live_order(g, node, inst) if inst is not None else None  # the request as it was sent
        self._reconciling.append((order, g.client_id, node.venue, node.client_order_id, node.node_order_id,
                                  int((node.activated_at or self._now()) * 1000)))

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
