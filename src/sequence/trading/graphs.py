"""Graphs and their nodes: one model, two state tables. Pure — no I/O.

A graph is a set of **nodes** (one order each) and **edges**
``{"from", "to", "trigger"}``. Nodes that are no edge's target are roots and
fire on submit; an edge activates its target when its trigger happens on its
source:

=====================  ===================================================
trigger                fires when the source …
=====================  ===================================================
``partially_filled``   gets its first fill (of any size, a complete fill too)
``filled``             is completely filled
``cancelled``          is cancelled by the engine (self-trade prevention,
                       tick-size change, an unfilled market order) — *not*
                       when the user cancels the graph
``rejected``           is refused on activation (post-only that would take,
                       market closed meanwhile)
=====================  ===================================================

A node activates at most once, on the first of its incoming edges that fires.
The graph ends when no node has a working order (nothing left can fire an
edge); nodes never activated by then end ``cancelled`` with reason
``not_triggered`` and fire nothing. The graph ends ``cancelled`` if the user
cancelled it, ``failed`` if a node was rejected and no ``rejected`` edge
handled it, else ``completed``.

One type per thing, three shapes in all:

* the model — a :class:`Node` is what was asked (fixed once accepted), where
  its order stands (status, fills, fees) and its time priority; a
  :class:`Graph` holds its nodes, edges and status. The graph engine
  (:mod:`sequence.execution.engine`) drives them with the ``on_*`` methods;
  the moves follow :data:`NODE` and :data:`GRAPH`, ``(state, event) → state``
  tables that raise on an illegal move;
* the store row — :meth:`Node.row` / :meth:`Node.from_row` (the same columns,
  ``graph_nodes``; :meth:`Node.state` is the part an engine step rewrites),
  :meth:`Graph.row` / :meth:`Graph.from_rows`;
* the wire — :mod:`sequence.trading.wire`, built from store rows (reads) or from
  the nodes themselves (the ``graphs`` channel's updates).

Requests become nodes in :mod:`sequence.trading.validation`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sequence.lifecycle import StateMachine
from sequence.market.book import Side

TRIGGERS = ("filled", "partially_filled", "cancelled", "rejected")
QTY_1E8 = 100_000_000
#: Cancellation reasons of the user and of a graph's end: they fire no ``cancelled`` edge.
USER_CANCEL = "cancelled_by_user"
NOT_TRIGGERED = "not_triggered"
SILENT_CANCELS = frozenset({USER_CANCEL, NOT_TRIGGERED})


# -- lifecycles ---------------------------------------------------------------------


class GraphStatus(StrEnum):
    """Graph status (API.md)."""

    active = "active"
    completed = "completed"
    cancelled = "cancelled"
    failed = "failed"


class NodeStatus(StrEnum):
    """Node status (API.md)."""

    pending = "pending"
    working = "working"
    partially_filled = "partially_filled"
    filled = "filled"
    cancelled = "cancelled"
    rejected = "rejected"


GRAPH = StateMachine(
    "graph",
    {
        (GraphStatus.active, "complete"): GraphStatus.completed,
        (GraphStatus.active, "cancel"): GraphStatus.cancelled,
        (GraphStatus.active, "fail"): GraphStatus.failed,
    },
)

# Events: activate (its order is placed), partial_fill, fill (complete), cancel
# (user, engine or graph end), reject (refused on activation).
NODE = StateMachine(
    "node",
    {
        (NodeStatus.pending, "activate"): NodeStatus.working,
        (NodeStatus.pending, "cancel"): NodeStatus.cancelled,
        (NodeStatus.pending, "reject"): NodeStatus.rejected,
        (NodeStatus.working, "partial_fill"): NodeStatus.partially_filled,
        (NodeStatus.working, "fill"): NodeStatus.filled,
        (NodeStatus.working, "cancel"): NodeStatus.cancelled,
        (NodeStatus.working, "reject"): NodeStatus.rejected,
        (NodeStatus.partially_filled, "partial_fill"): NodeStatus.partially_filled,
        (NodeStatus.partially_filled, "fill"): NodeStatus.filled,
        (NodeStatus.partially_filled, "cancel"): NodeStatus.cancelled,
    },
)

LIVE_NODE = frozenset({NodeStatus.working.value, NodeStatus.partially_filled.value})
FINAL_NODE = frozenset({NodeStatus.filled.value, NodeStatus.cancelled.value, NodeStatus.rejected.value})

_GRAPH_EVENTS = {"completed": "complete", "cancelled": "cancel", "failed": "fail"}


def order_id(graph_id: str, node_id: str) -> str:
    """A node's order id: a node places exactly one order."""
    return f"graph:{graph_id}:{node_id}:1"


def unit_1e8(size_scale: int) -> int:
    """``qty_1e8`` per book size unit."""
    if size_scale <= 0 or QTY_1E8 % size_scale:
        raise ValueError(f"size scale {size_scale} does not divide 1e8")
    return QTY_1E8 // size_scale


# -- the model ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Edge:
    source: str
    target: str
    trigger: str

    def to_json(self) -> dict[str, str]:
        return {"from": self.source, "to": self.target, "trigger": self.trigger}


@dataclass(slots=True, eq=False)
class Node:
    """One node of a graph and its order. Prices and sizes are integers (see ``graph_nodes``)."""

    # -- what was asked: fixed once the graph is accepted
    node_id: str
    idx: int
    symbol: str
    venue: str
    instrument_type: str
    side: str  # buy | sell, in the symbol's terms
    qty_1e8: int
    qty_units: int  # book size units
    limit_price: float | None  # the request's number, for display
    limit_units: int | None  # symbol's terms; None: a market order
    book_symbol: str
    book_side: Side
    book_limit: int | None  # book's terms
    price_scale: int
    size_scale: int
    urgency: str
    activation: str  # root | triggered
    never_crosses: bool  # under the venue's minimum notional: works, never crosses
    # -- where it lives: set when its graph is created
    graph_id: str = ""
    node_order_id: str = ""
    # -- its lifecycle (NODE) and its order's progress
    status: str = NodeStatus.pending.value
    reason: str | None = None
    filled_1e8: int = 0
    notional_1e8: int = 0  # USD × 1e8 of what filled, for the average price
    fees_1e8: int = 0
    fill_count: int = 0
    order_seq: int | None = None  # time priority among resting orders
    # A real order at a venue: our client order id (written before it is sent) and the venue's id.
    client_order_id: str | None = None
    venue_order_id: str | None = None
    activated_at: float | None = None
    updated_at: float | None = None
    ended_at: float | None = None
    unit_1e8: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        self.unit_1e8 = unit_1e8(self.size_scale)

    # -- derived --------------------------------------------------------------------
    @property
    def post_only(self) -> bool:
        return self.urgency == "low"

    @property
    def complement(self) -> bool:
        """A NO token: book prices are ``price_scale − price`` and sides swap."""
        return self.book_side is not (Side.BID if self.side == "buy" else Side.ASK)

    @property
    def filled_units(self) -> int:
        return self.filled_1e8 // self.unit_1e8

    @property
    def live(self) -> bool:
        """Its order is working (it can still fill or be cancelled)."""
        return self.status in LIVE_NODE

    # -- moves ------------------------------------------------------------------------
    def move(self, event: str) -> str:
        self.status = NODE.next(self.status, event)
        return self.status

    def add_fill(self, qty_1e8: int, notional_1e8: int, fee_1e8: int) -> bool:
        """Count one fill and move (``fill`` or ``partial_fill``); True when it completes the order."""
        self.filled_1e8 += qty_1e8
        self.notional_1e8 += notional_1e8
        self.fees_1e8 += fee_1e8
        self.fill_count += 1
        complete = self.filled_units >= self.qty_units
        self.move("fill" if complete else "partial_fill")
        return complete

    # -- the store row --------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Where the node stands: the ``graph_nodes`` columns an engine step rewrites (the
        others never change once the node is written)."""
        return {
            "status": self.status, "filled_1e8": self.filled_1e8, "notional_1e8": self.notional_1e8,
            "fees_1e8": self.fees_1e8, "fill_count": self.fill_count, "reason": self.reason,
            "activated_at": self.activated_at, "order_seq": self.order_seq, "updated_at": self.updated_at,
            "ended_at": self.ended_at, "client_order_id": self.client_order_id,
            "venue_order_id": self.venue_order_id,
        }

    def stamp(self, ts: float) -> dict[str, Any]:
        """Mark the node changed at ``ts``; its :meth:`state`."""
        self.updated_at = ts
        self.ended_at = ts if self.status in FINAL_NODE else None
        return self.state()

    def row(self, client_id: str) -> dict[str, Any]:
        """The ``graph_nodes`` row: what was asked, and its :meth:`state`."""
        return {
            "graph_id": self.graph_id, "node_id": self.node_id, "idx": self.idx, "client_id": client_id,
            "node_order_id": self.node_order_id, "symbol": self.symbol, "book_symbol": self.book_symbol,
            "venue": self.venue, "instrument_type": self.instrument_type, "side": self.side,
            "book_side": self.book_side.value, "qty_1e8": self.qty_1e8, "limit_price": self.limit_price,
            "limit_units": self.limit_units, "book_limit": self.book_limit, "price_scale": self.price_scale,
            "size_scale": self.size_scale, "urgency": self.urgency, "activation": self.activation,
            "never_crosses": self.never_crosses, **self.state(),
        }

    @classmethod
    def from_row(cls, r: Mapping[str, Any]) -> Node:
        unit = unit_1e8(r["size_scale"])
        return cls(
            node_id=r["node_id"], idx=r["idx"], symbol=r["symbol"], venue=r["venue"],
            instrument_type=r["instrument_type"], side=r["side"], qty_1e8=int(r["qty_1e8"]),
            qty_units=int(r["qty_1e8"]) // unit, limit_price=r["limit_price"], limit_units=r["limit_units"],
            book_symbol=r["book_symbol"], book_side=Side(r["book_side"]), book_limit=r["book_limit"],
            price_scale=r["price_scale"], size_scale=r["size_scale"], urgency=r["urgency"],
            activation=r["activation"], never_crosses=bool(r["never_crosses"]), graph_id=r["graph_id"],
            node_order_id=r["node_order_id"], status=r["status"], reason=r["reason"],
            filled_1e8=int(r["filled_1e8"]), notional_1e8=int(r["notional_1e8"]), fees_1e8=int(r["fees_1e8"]),
            fill_count=int(r["fill_count"]), order_seq=r["order_seq"], activated_at=r["activated_at"],
            updated_at=r["updated_at"], ended_at=r["ended_at"], client_order_id=r.get("client_order_id"),
            venue_order_id=r.get("venue_order_id"),
        )


@dataclass(slots=True, eq=False)
class Graph:
    """Which nodes fire when, and the graph's own status. Drive it with the ``on_*``
    methods; those that can fire edges return the node ids to activate now."""

    graph_id: str
    client_id: str
    paper: bool  # paper trading: fills against the live book, never in it (``sandbox`` on the wire and in the table)
    nodes: dict[str, Node]
    edges: tuple[Edge, ...]
    status: str = GraphStatus.active.value
    strategy_id: str | None = None  # submitted by a run of this strategy (its stream scope)
    run_id: str | None = None  # submitted by this run (its real orders are cancelled when it ends)
    fired: set[int] = field(default_factory=set)
    user_cancelled: bool = False

    @classmethod
    def new(cls, graph_id: str, client_id: str, nodes: Iterable[Node], edges: tuple[Edge, ...], *,
            paper: bool, now: float) -> Graph:
        """A graph accepted at ``now``: its nodes get their graph and order ids."""
        by_id: dict[str, Node] = {}
        for n in nodes:
            n.graph_id = graph_id
            n.node_order_id = order_id(graph_id, n.node_id)
            n.updated_at = now
            by_id[n.node_id] = n
        return cls(graph_id, client_id, paper, by_id, edges)

    @classmethod
    def from_rows(cls, row: Mapping[str, Any]) -> Graph:
        """A graph as the store holds it (its row with ``nodes``), edges already fired marked fired."""
        edges = tuple(Edge(e["from"], e["to"], e["trigger"]) for e in row["edges"])
        nodes = {r["node_id"]: Node.from_row(r) for r in row["nodes"]}
        g = cls(row["graph_id"], row["client_id"], bool(row["sandbox"]), nodes, edges, status=row["status"],
                strategy_id=row.get("strategy_id"), run_id=row.get("run_id"))
        g.fired = {i for i, e in enumerate(edges) if _has_fired(nodes[e.source], e.trigger)}
        return g

    def row(self, *, key_id: str, run_id: str | None, idempotency_key: str | None, request_hash: str | None,
            now: float) -> dict[str, Any]:
        """The ``graphs`` row of a new graph."""
        return {
            "graph_id": self.graph_id, "client_id": self.client_id, "key_id": key_id, "run_id": run_id,
            "idempotency_key": idempotency_key, "request_hash": request_hash, "status": self.status,
            "sandbox": self.paper, "node_count": len(self.nodes), "edge_count": len(self.edges),
            "edges": [e.to_json() for e in self.edges], "reason": None, "created_at": now, "updated_at": now,
            "ended_at": None,
        }

    # -- structure -----------------------------------------------------------------------
    @property
    def targets(self) -> set[str]:
        return {e.target for e in self.edges}

    def roots(self) -> list[str]:
        if not self.edges:  # one order, or orders side by side: every node
            return list(self.nodes)
        targets = self.targets
        return [n for n in self.nodes if n not in targets]

    def _fire(self, source: str, trigger: str) -> list[str]:
        out: list[str] = []
        for i, e in enumerate(self.edges):
            if e.source == source and e.trigger == trigger and i not in self.fired:
                self.fired.add(i)
                if self.nodes[e.target].status == NodeStatus.pending and e.target not in out:
                    out.append(e.target)
        return out

    # -- events --------------------------------------------------------------------------
    def on_activated(self, node_id: str) -> None:
        self.nodes[node_id].move("activate")

    def on_fill(self, node_id: str, qty_1e8: int, notional_1e8: int = 0, fee_1e8: int = 0) -> list[str]:
        """Count a fill on the node; fire ``partially_filled`` on its first, ``filled`` on its last."""
        node = self.nodes[node_id]
        first = node.filled_1e8 == 0
        complete = node.add_fill(qty_1e8, notional_1e8, fee_1e8)
        fire: list[str] = []
        if first:
            fire += self._fire(node_id, "partially_filled")
        if complete:
            fire += [n for n in self._fire(node_id, "filled") if n not in fire]
        return fire

    def on_cancelled(self, node_id: str, reason: str, *, fire: bool = True) -> list[str]:
        node = self.nodes[node_id]
        node.move("cancel")
        node.reason = reason
        return self._fire(node_id, "cancelled") if fire else []

    def on_rejected(self, node_id: str, reason: str) -> list[str]:
        node = self.nodes[node_id]
        node.move("reject")
        node.reason = reason
        return self._fire(node_id, "rejected")

    # -- state -----------------------------------------------------------------------------
    def live(self) -> list[str]:
        return [n for n, node in self.nodes.items() if node.status in LIVE_NODE]

    def pending(self) -> list[str]:
        return [n for n, node in self.nodes.items() if node.status == NodeStatus.pending]

    def quiescent(self) -> bool:
        """Nothing is working, so nothing can fire any more: the graph should end."""
        return self.status == GraphStatus.active and not self.live()

    def outcome(self) -> str:
        """The status the graph ends with (call once :meth:`quiescent`)."""
        if self.user_cancelled:
            return GraphStatus.cancelled.value
        handled = {self.edges[i].source for i in self.fired if self.edges[i].trigger == "rejected"}
        for nid, node in self.nodes.items():
            if node.status == NodeStatus.rejected and nid not in handled:
                return GraphStatus.failed.value
        return GraphStatus.completed.value

    def end(self, status: str) -> None:
        self.status = GRAPH.next(self.status, _GRAPH_EVENTS[status])


def _has_fired(source: Node, trigger: str) -> bool:
    """Whether ``trigger`` has happened on ``source`` (rebuilding ``fired`` from stored nodes)."""
    if trigger == "partially_filled":
        return source.filled_1e8 > 0
    if trigger == "filled":
        return source.status == NodeStatus.filled
    if trigger == "cancelled":
        return source.status == NodeStatus.cancelled and source.reason not in SILENT_CANCELS
    return source.status == NodeStatus.rejected


__all__ = [
    "FINAL_NODE",
    "GRAPH",
    "LIVE_NODE",
    "NODE",
    "NOT_TRIGGERED",
    "QTY_1E8",
    "SILENT_CANCELS",
    "TRIGGERS",
    "USER_CANCEL",
    "Edge",
    "Graph",
    "GraphStatus",
    "Node",
    "NodeStatus",
    "order_id",
    "unit_1e8",
]
