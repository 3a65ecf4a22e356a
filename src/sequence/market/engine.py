"""The graph engine: graphs → orders → matching → fills, in the store and on the stream.

:class:`TradingEngine` ties the pure parts together — :mod:`.graphs`
(validation, lifecycles, triggers), :mod:`.matching` (one
:class:`~.matching.MatchingCore` per book), :mod:`.fees` and
:mod:`.positions` — to the market service's books and hub and to the
:class:`~sequence.store.trading.TradingStore`. It runs on the coordinator's
event loop.

Concurrency model
-----------------
Every decision (activating a node, matching, cancelling) is taken on the event
loop thread against in-memory state, which is therefore authoritative while
the process lives. Each decision step produces one
:class:`~sequence.store.trading.TradeBatch` — the fills plus the node and
graph status they imply, including nodes they trigger — which is committed in
**one transaction** by a single writer thread, in the order the steps were
taken. Readers (``GET /v1/graphs``, ``/v1/fills``) read the store, so status
never lags fills; stream messages are published after the commit, so a client
that sees a fill on ``fills`` can read it back.

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
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Protocol

import anyio

from sequence.store.ids import short_code
from sequence.store.trading import Created, TradeBatch, TradingStore

from .book import BookView, Side
from .clock import Clock
from .errors import MarketError
from .events import BookEvent, LevelUpdate, TickSizeChange, Trade
from .fees import USD_1E8, FeeSchedule
from .graphs import (
    FINAL_NODE,
    GS,
    LIVE_NODE,
    NS,
    QTY_1E8,
    EdgeSpec,
    GraphRun,
    GraphSpec,
    InstrumentLike,
    NodeRun,
    NodeSpec,
    parse_graph,
)
from .hub import ChannelKind, Hub
from .matching import Cancelled, Event, Fill, LevelDelta, MatchingCore, Order, Print, Rejected
from .positions import Position
from .positions import to_json as position_json

log = logging.getLogger(__name__)

USER_CANCEL = "cancelled_by_user"
NOT_TRIGGERED = "not_triggered"
#: Cancellation reasons that do not fire ``cancelled`` edges.
SILENT_CANCELS = frozenset({USER_CANCEL, NOT_TRIGGERED})
COMMIT_ATTEMPTS = 3


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


# -- presentation ---------------------------------------------------------------------


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _num(v: int, scale: int) -> float:
    return v / scale


def fill_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """API.md fill: ``fill_id``, ``node_order_id``, …, ``qty_1e8``, ``fee``, ``ts``, ``sandbox``."""
    return {
        "fill_id": row["fill_id"],
        "node_order_id": row["node_order_id"],
        "graph_id": row["graph_id"],
        "node_id": row["node_id"],
        "symbol": row["symbol"],
        "venue": row["venue"],
        "side": row["side"],
        "price": _num(row["price_units"], row["price_scale"]),
        "qty": _num(row["qty_1e8"], QTY_1E8),
        "qty_1e8": int(row["qty_1e8"]),
        "fee": _num(row["fee_1e8"], USD_1E8),
        "liquidity": row["liquidity"],
        "ts": iso(row["ts"]),
        "fill_ts": row["ts"],
        "sandbox": bool(row["sandbox"]),
    }


def node_json(row: Mapping[str, Any]) -> dict[str, Any]:
    filled, qty = int(row["filled_1e8"]), int(row["qty_1e8"])
    avg = None if filled == 0 else round(row["notional_1e8"] / filled, 10)
    return {
        "node_id": row["node_id"],
        "node_order_id": row["node_order_id"],
        "symbol": row["symbol"],
        "venue": row["venue"],
        "instrument_type": row["instrument_type"],
        "side": row["side"],
        "qty": _num(qty, QTY_1E8),
        "qty_1e8": qty,
        "limit_price": None if row["limit_units"] is None else _num(row["limit_units"], row["price_scale"]),
        "urgency": row["urgency"],
        "activation": row["activation"],
        "status": row["status"],
        "filled_qty": _num(filled, QTY_1E8),
        "filled_qty_1e8": filled,
        "remaining_qty": _num(qty - filled, QTY_1E8) if row["status"] in LIVE_NODE else 0.0,
        "avg_fill_price": avg,
        "fees": _num(row["fees_1e8"], USD_1E8),
        "fill_count": row["fill_count"],
        "never_crosses": bool(row["never_crosses"]),
        "reason": row["reason"],
        "activated_at": iso(row["activated_at"]),
        "updated_at": iso(row["updated_at"]),
        "ended_at": iso(row["ended_at"]),
    }


def graph_json(row: Mapping[str, Any]) -> dict[str, Any]:
    out = {
        "graph_id": row["graph_id"],
        "status": row["status"],
        "sandbox": bool(row["sandbox"]),
        "node_count": row["node_count"],
        "edge_count": row["edge_count"],
        "reason": row["reason"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
        "ended_at": iso(row["ended_at"]),
        "edges": row["edges"],
    }
    if "nodes" in row:
        out["nodes"] = [node_json(n) for n in row["nodes"]]
    return out


def ack_json(row: Mapping[str, Any], *, replay: bool = False) -> dict[str, Any]:
    """The ``POST /v1/graphs`` answer. ``status`` is the status at acceptance (``active``);
    a replay answers the original graph with its current status."""
    return {
        "graph_id": row["graph_id"],
        "status": row["status"] if replay else GS.active.value,
        "node_count": row["node_count"],
        "edge_count": row["edge_count"],
        "sandbox": bool(row["sandbox"]),
        "created_at": iso(row["created_at"]),
        "idempotent_replay": replay,
    }


def request_hash(body: Any, sandbox: bool) -> str:
    text = json.dumps({"body": body, "sandbox": sandbox}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# -- in-memory state ----------------------------------------------------------------------


@dataclass(slots=True)
class _Node:
    graph_id: str
    node_id: str
    node_order_id: str
    symbol: str
    book_symbol: str
    venue: str
    side: str
    book_side: Side
    qty_units: int
    book_limit: int | None
    price_scale: int
    size_scale: int
    post_only: bool
    never_crosses: bool
    complement: bool
    unit_1e8: int  # qty_1e8 per size unit
    filled_units: int = 0
    filled_1e8: int = 0
    notional_1e8: int = 0
    fees_1e8: int = 0
    fill_count: int = 0
    order_seq: int | None = None
    activated_at: float | None = None


@dataclass(slots=True)
class _Graph:
    graph_id: str
    client_id: str
    sandbox: bool
    run: GraphRun
    nodes: dict[str, _Node]
    strategy_id: str | None = None  # submitted by a run of this strategy (its stream scope)


@dataclass
class _Step:
    """What one decision step did: the batch to commit and the messages to send after."""

    ts: float
    batch: TradeBatch = field(default_factory=TradeBatch)
    queue: deque[tuple[_Graph, str]] = field(default_factory=deque)
    touched: dict[str, _Graph] = field(default_factory=dict)
    fills: list[tuple[_Graph, dict[str, Any]]] = field(default_factory=list)
    changed_nodes: dict[str, dict[str, None]] = field(default_factory=dict)

    @property
    def ts_ms(self) -> int:
        return int(self.ts * 1000)


def _unit_1e8(size_scale: int) -> int:
    if QTY_1E8 % size_scale:
        raise ValueError(f"size scale {size_scale} does not divide 1e8")
    return QTY_1E8 // size_scale


# -- the engine ---------------------------------------------------------------------------------


class TradingEngine:
    """See the module docstring."""

    def __init__(self, store: TradingStore, market: MarketPort, *, fees: FeeSchedule | None = None) -> None:
        self.store = store
        self.market = market
        self.fees = fees or FeeSchedule()
        self._graphs: dict[str, _Graph] = {}
        self._cores: dict[str, MatchingCore] = {}
        self._orders: dict[str, _Node] = {}
        self._fill_seq = 0
        self._order_seq = 0
        self._applying = False
        self._dirty: dict[str, bool] = {}  # book symbol -> tick changed
        self._rematch_scheduled = False
        self._writer: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._remove_listener: Callable[[], None] | None = None
        self._pending: set[asyncio.Future[None]] = set()
        self.started = False
        self.commit_failures = 0

    # -- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        """Register stream channels, hook book changes and restore working orders."""
        if self.started:
            return
        self._loop = asyncio.get_running_loop()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trading-writer")
        hub = self.market.hub
        for name in ("fills", "graphs"):
            if name not in hub.kinds:
                hub.register(ChannelKind(name, needs_arg=False, per_client=True, conflate=False))
        self._fill_seq = await anyio.to_thread.run_sync(self.store.max_fill_seq)
        self._order_seq = await anyio.to_thread.run_sync(self.store.max_order_seq)
        self._remove_listener = self.market.add_listener(self._on_book_events)
        self.started = True
        await self.restore()

    async def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        if self._remove_listener is not None:
            with contextlib.suppress(ValueError):
                self._remove_listener()
            self._remove_listener = None
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        writer, self._writer = self._writer, None
        if writer is not None:
            await anyio.to_thread.run_sync(lambda: writer.shutdown(wait=True))
        self._graphs.clear()
        self._cores.clear()
        self._orders.clear()

    def _now(self) -> float:
        return float(self.market.clock.now())

    async def flush(self) -> None:
        """Wait until every decision taken so far is committed (tests, shutdown)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

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

    # -- submit -----------------------------------------------------------------------------
    def validate(self, body: Any, *, force_sandbox: bool) -> GraphSpec:
        """Parse a graph request (raises :class:`~.graphs.GraphError`)."""
        return parse_graph(body, self._lookup, venues=self.market.venues, force_sandbox=force_sandbox)

    async def submit(self, body: Any, *, client_id: str, key_id: str, sandbox_key: bool = False,
                     run_id: str | None = None, idempotency_key: str | None = None,
                     strategy_id: str | None = None) -> dict[str, Any]:
        """Validate, store and activate a graph; returns the ack (``POST /v1/graphs``).

        Raises ``GraphError`` (400), ``Fenced`` and ``IdempotencyConflict`` (from the store).
        When this returns, root orders are placed and any immediate fills are committed.
        """
        spec = self.validate(body, force_sandbox=sandbox_key)
        now = self._now()
        graph_id = "graph_" + short_code(20)
        graph_row = {
            "graph_id": graph_id, "client_id": client_id, "key_id": key_id, "run_id": run_id,
            "idempotency_key": idempotency_key,
            "request_hash": request_hash(body, spec.sandbox) if idempotency_key else None,
            "status": GS.active.value, "sandbox": spec.sandbox, "node_count": len(spec.nodes),
            "edge_count": len(spec.edges), "edges": [e.to_json() for e in spec.edges], "reason": None,
            "created_at": now, "updated_at": now, "ended_at": None,
        }
        node_rows = [self._node_row(graph_id, client_id, n, now) for n in spec.nodes]
        # Roots are written already "working", with their time priority: when placing them
        # changes nothing else (the usual resting order) the insert is the only commit.
        for row in node_rows:
            if row["activation"] == "root":
                self._order_seq += 1
                row.update(status=NS.working.value, activated_at=now, order_seq=self._order_seq)
        created: Created = await anyio.to_thread.run_sync(
            lambda: self.store.create_graph(graph_row, node_rows, run_id=run_id))
        if not created.created:
            return ack_json(created.graph, replay=True)
        g = self._graph_from_spec(graph_id, client_id, spec)
        g.strategy_id = created.graph.get("strategy_id") or strategy_id
        preset = {r["node_id"]: r["order_seq"] for r in node_rows if r["order_seq"] is not None}
        for nid, seq in preset.items():
            g.nodes[nid].order_seq = seq
            g.nodes[nid].activated_at = now
        self._graphs[graph_id] = g
        step = _Step(self._now())
        step.touched[graph_id] = g
        for nid in g.run.roots():
            step.queue.append((g, nid))
        self._decide(step)
        if _only_as_written(step, graph_id, preset):
            self._publish(self._messages(step))
        else:
            await self._commit(step)
        return ack_json(graph_row)

    @staticmethod
    def _node_row(graph_id: str, client_id: str, n: NodeSpec, now: float) -> dict[str, Any]:
        return {
            "graph_id": graph_id, "node_id": n.node_id, "idx": n.idx, "client_id": client_id,
            "node_order_id": f"graph:{graph_id}:{n.node_id}:1", "symbol": n.symbol,
            "book_symbol": n.book_symbol, "venue": n.venue, "instrument_type": n.instrument_type,
            "side": n.side, "book_side": n.book_side.value, "qty_1e8": n.qty_1e8,
            "limit_price": n.limit_price, "limit_units": n.limit_units, "book_limit": n.book_limit,
            "price_scale": n.price_scale, "size_scale": n.size_scale, "urgency": n.urgency,
            "activation": n.activation, "status": NS.pending.value, "never_crosses": n.never_crosses,
            "filled_1e8": 0, "notional_1e8": 0, "fees_1e8": 0, "fill_count": 0, "order_seq": None,
            "reason": None, "activated_at": None, "updated_at": now, "ended_at": None,
        }

    def _graph_from_spec(self, graph_id: str, client_id: str, spec: GraphSpec) -> _Graph:
        nodes = {
            n.node_id: _Node(
                graph_id=graph_id, node_id=n.node_id, node_order_id=f"graph:{graph_id}:{n.node_id}:1",
                symbol=n.symbol, book_symbol=n.book_symbol, venue=n.venue, side=n.side,
                book_side=n.book_side, qty_units=n.qty_units, book_limit=n.book_limit,
                price_scale=n.price_scale, size_scale=n.size_scale, post_only=n.post_only,
                never_crosses=n.never_crosses, complement=n.complement, unit_1e8=_unit_1e8(n.size_scale),
            )
            for n in spec.nodes
        }
        run = GraphRun(graph_id, tuple(nodes), spec.edges)
        return _Graph(graph_id, client_id, spec.sandbox, run, nodes)

    # -- cancel ------------------------------------------------------------------------------
    async def cancel(self, client_id: str, graph_id: str) -> dict[str, Any] | None:
        """Cancel every working node of the caller's graph; ``None`` if it is not theirs.

        Cancelling an ended graph changes nothing and answers its state.
        """
        g = self._graphs.get(graph_id)
        if g is not None and g.client_id == client_id:
            step = _Step(self._now())
            step.touched[graph_id] = g
            g.run.user_cancelled = True
            for nid in g.run.live():
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
        out = []
        for r in rows:
            pos = Position(r["net_1e8"], r["cost_1e8"], r["realized_1e8"], r["fees_1e8"], r["fill_count"])
            out.append(position_json(pos, symbol=r["symbol"], venue=r["venue"], sandbox=bool(r["sandbox"]),
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
            if g.run.quiescent():
                self._end(g, step)
            elif g.graph_id in self._graphs:
                step.batch.graph(g.graph_id, updated_at=step.ts)

    def _activate(self, g: _Graph, nid: str, step: _Step) -> None:
        state = g.run.nodes[nid]
        if state.status != NS.pending:
            return
        node = g.nodes[nid]
        inst = self._lookup(node.symbol)
        reason = None
        book: BookView | None = None
        if inst is None or not inst.active:
            reason = "market_closed"
        else:
            book = self.market.book(node.book_symbol)
            if not g.sandbox and node.book_limit is not None and node.book_limit % book.tick:
                reason = "price_off_tick"  # the venue's tick changed since the graph was accepted
        if reason is not None or book is None:
            self._rejected(g, node, reason or "market_closed", step)
            return
        g.run.on_activated(nid)
        if node.order_seq is None:  # roots of a new graph got theirs when it was written
            self._order_seq += 1
            node.order_seq = self._order_seq
            node.activated_at = step.ts
        self._stage(g, node, step)
        order = Order(
            node.node_order_id, node.book_side, node.book_limit, node.qty_units,
            owner=g.client_id, paper=g.sandbox, post_only=node.post_only,
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
                    fire = not g.run.user_cancelled and ev.reason not in SILENT_CANCELS
                    for t in g.run.on_cancelled(node.node_id, ev.reason, fire=fire):
                        step.queue.append((g, t))
                    self._stage(g, node, step)
            elif isinstance(ev, Rejected):
                node = self._orders.pop(ev.order_id, None)
                if node is not None:
                    self._rejected(self._graphs[node.graph_id], node, ev.reason, step)
        if deltas or prints:
            self._push_book(book_symbol, deltas, prints, step.ts_ms)

    def _rejected(self, g: _Graph, node: _Node, reason: str, step: _Step) -> None:
        for t in g.run.on_rejected(node.node_id, reason):
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
        node.filled_units += ev.size
        node.filled_1e8 += qty_1e8
        node.notional_1e8 += round(price_f * qty_1e8)
        node.fees_1e8 += fee
        node.fill_count += 1
        self._fill_seq += 1
        row = {
            "fill_id": "fill_" + short_code(20), "seq": self._fill_seq, "client_id": g.client_id,
            "graph_id": g.graph_id, "node_id": node.node_id, "node_order_id": node.node_order_id,
            "symbol": node.symbol, "venue": node.venue, "side": node.side, "price_units": price,
            "price_scale": node.price_scale, "qty_1e8": qty_1e8, "fee_1e8": fee,
            "liquidity": ev.liquidity, "sandbox": g.sandbox, "ts": step.ts,
        }
        step.batch.fills.append(row)
        step.fills.append((g, row))
        complete = node.filled_units >= node.qty_units
        if complete:
            self._orders.pop(ev.order_id, None)
        for t in g.run.on_fill(node.node_id, complete):
            step.queue.append((g, t))
        self._stage(g, node, step)

    def _stage(self, g: _Graph, node: _Node, step: _Step) -> None:
        state = g.run.nodes[node.node_id]
        step.touched[g.graph_id] = g
        step.changed_nodes.setdefault(g.graph_id, {})[node.node_id] = None
        step.batch.node(
            g.graph_id, node.node_id, status=state.status, filled_1e8=node.filled_1e8,
            notional_1e8=node.notional_1e8, fees_1e8=node.fees_1e8, fill_count=node.fill_count,
            reason=state.reason, activated_at=node.activated_at, order_seq=node.order_seq,
            updated_at=step.ts, ended_at=step.ts if state.status in FINAL_NODE else None,
        )

    def _end(self, g: _Graph, step: _Step) -> None:
        reason = USER_CANCEL if g.run.user_cancelled else NOT_TRIGGERED
        for nid in g.run.pending():
            g.run.on_cancelled(nid, reason, fire=False)
            self._stage(g, g.nodes[nid], step)
        status = g.run.outcome()
        g.run.end(status)
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
        if self._writer is None:
            raise RuntimeError("the trading engine is not started")
        fut: asyncio.Future[None] = loop.run_in_executor(self._writer, self._commit_sync, step.batch)
        self._pending.add(fut)

        def _done(f: asyncio.Future[None]) -> None:
            self._pending.discard(f)
            if f.cancelled() or f.exception() is not None:
                return
            self._publish(messages)

        fut.add_done_callback(_done)
        return fut

    def _commit_sync(self, batch: TradeBatch) -> None:
        delay = 0.05
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                self.store.commit(batch)
                return
            except Exception:
                if attempt == COMMIT_ATTEMPTS:
                    self.commit_failures += 1
                    log.exception("trading: could not commit %d fill(s), %d node and %d graph update(s)",
                                  len(batch.fills), len(batch.nodes), len(batch.graphs))
                    raise
                log.warning("trading: commit failed (attempt %d), retrying", attempt, exc_info=True)
                time.sleep(delay)
                delay *= 4

    def _messages(self, step: _Step) -> list[tuple[str, _Graph, dict[str, Any]]]:
        out: list[tuple[str, _Graph, dict[str, Any]]] = []
        for filled, row in step.fills:
            out.append(("fills", filled, fill_json(row)))
        for gid, nids in step.changed_nodes.items():
            g = step.touched.get(gid)
            if g is None:
                continue
            gvals = step.batch.graphs.get(gid, {})
            nodes = []
            for nid in nids:
                vals = step.batch.nodes.get((gid, nid), {})
                nodes.append({"node_id": nid, "status": vals.get("status"),
                              "filled_qty": _num(vals.get("filled_1e8", 0), QTY_1E8),
                              "filled_qty_1e8": vals.get("filled_1e8", 0), "reason": vals.get("reason")})
            out.append(("graphs", g, {"graph_id": gid, "status": gvals.get("status", g.run.status),
                                      "nodes": nodes, "ts": iso(step.ts), "update_ts": step.ts}))
        return out

    def _publish(self, messages: Sequence[tuple[str, _Graph, dict[str, Any]]]) -> None:
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
        edges = tuple(EdgeSpec(e["from"], e["to"], e["trigger"]) for e in row["edges"])
        nodes: dict[str, _Node] = {}
        states: dict[str, NodeRun] = {}
        for r in row["nodes"]:
            unit = _unit_1e8(r["size_scale"])
            side = Side(r["book_side"])
            complement = side is not (Side.BID if r["side"] == "buy" else Side.ASK)
            node = _Node(
                graph_id=r["graph_id"], node_id=r["node_id"], node_order_id=r["node_order_id"],
                symbol=r["symbol"], book_symbol=r["book_symbol"], venue=r["venue"], side=r["side"],
                book_side=side, qty_units=int(r["qty_1e8"]) // unit, book_limit=r["book_limit"],
                price_scale=r["price_scale"], size_scale=r["size_scale"], post_only=r["urgency"] == "low",
                never_crosses=bool(r["never_crosses"]), complement=complement, unit_1e8=unit,
                filled_units=int(r["filled_1e8"]) // unit, filled_1e8=int(r["filled_1e8"]),
                notional_1e8=int(r["notional_1e8"]), fees_1e8=int(r["fees_1e8"]),
                fill_count=int(r["fill_count"]), order_seq=r["order_seq"], activated_at=r["activated_at"],
            )
            nodes[node.node_id] = node
            states[node.node_id] = NodeRun(node.node_id, r["status"], int(r["filled_1e8"]) > 0, r["reason"])
        run = GraphRun(row["graph_id"], tuple(nodes), edges, nodes=states)
        run.fired = {i for i, e in enumerate(edges) if _has_fired(states[e.source], e.trigger)}
        g = _Graph(row["graph_id"], row["client_id"], bool(row["sandbox"]), run, nodes,
                   row.get("strategy_id"))
        self._graphs[g.graph_id] = g
        step.touched[g.graph_id] = g
        live = sorted((n for n in nodes.values() if states[n.node_id].status in LIVE_NODE),
                      key=lambda n: (n.order_seq or 0, n.node_id))
        for node in live:
            self._restore_order(g, node, step)
        targets = run.targets
        for nid in run.node_ids:
            if nid not in targets and states[nid].status == NS.pending:
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

    def _restore_order(self, g: _Graph, node: _Node, step: _Step) -> None:
        order = Order(
            node.node_order_id, node.book_side, node.book_limit, node.qty_units, owner=g.client_id,
            paper=g.sandbox, post_only=node.post_only, crossable=not node.never_crosses,
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
        if v.get("status") != NS.working or v.get("filled_1e8") or v.get("reason") is not None:
            return False
        if v.get("order_seq") != preset[nid]:
            return False
    return True


def _has_fired(source: NodeRun, trigger: str) -> bool:
    if trigger == "partially_filled":
        return source.filled_any
    if trigger == "filled":
        return source.status == NS.filled
    if trigger == "cancelled":
        return source.status == NS.cancelled and source.reason not in SILENT_CANCELS
    return source.status == NS.rejected


__all__ = [
    "MarketPort",
    "TradingEngine",
    "ack_json",
    "fill_json",
    "graph_json",
    "node_json",
]
