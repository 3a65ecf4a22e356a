"""Graph requests: a ``POST /v1/graphs`` body validated into nodes and edges. Pure — no I/O.

:func:`parse_graph` checks the shape (node ids, edges, an acyclic graph), each
node against its instrument as of now (venue, tick, range, size increment,
minimums, ``instrument_type``) and the venue's rules (:data:`VENUE_RULES`),
and translates NO-token orders into the YES book's terms. It answers a
:class:`GraphRequest` of :class:`~sequence.trading.graphs.Node` objects —
the same objects the engine then runs — or raises :class:`GraphError` naming
the field, with a ``code`` for programs and a message for people.

Errors::

    GraphError          400: the request cannot become a graph; ``field`` names the culprit
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any, Literal, Protocol

from sequence.market.book import Side

from .graphs import QTY_1E8, TRIGGERS, Edge, Node

MAX_NODES = 100
MAX_EDGES = 1_000
MAX_QTY_1E8 = 2**62
# What one limit order may be worth: $1 billion (× 1e8). Every figure of an order and its
# fills is an integer the store keeps in 64 bits; without this a price of 1e19 on a venue
# with no maximum price passed validation and failed the store's insert (a 500, and for an
# algo the loss of its turn's commit).
MAX_NOTIONAL_1E8 = 10**9 * QTY_1E8
NODE_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
NODE_FIELDS = frozenset(
    {"node_id", "symbol", "side", "qty", "venue", "instrument_type", "limit_price", "urgency", "activation"}
)
GRAPH_FIELDS = frozenset({"nodes", "edges", "sandbox"})
URGENCIES = ("low", "normal", "high")


class GraphError(ValueError):
    """A graph request that cannot be accepted (HTTP 400)."""

    def __init__(self, field: str, message: str, code: str = "invalid_graph", **details: Any) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.code = code
        self.details: dict[str, Any] = {"field": field, **details}


# -- venue rules ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VenueRules:
    """What the engine enforces per venue beyond tick and range."""

    #: Under the minimum notional: ``rest`` = accepted, works forever, never crosses
    #: (Polymarket, as the product document says); ``reject`` = 400 (Coinbase's quote_min_size).
    min_notional: Literal["rest", "reject"] = "reject"
    #: Enforce the market's ``min_order_size`` with a 400.
    min_order_size: bool = False
    #: Market orders (no ``limit_price``) allowed.
    market_orders: bool = False


VENUE_RULES: Mapping[str, VenueRules] = {
    "kalshi": VenueRules(min_notional="reject"),  # Kalshi has none (0.0): never triggers
    "polymarket": VenueRules(min_notional="rest"),
    "coinbase": VenueRules(min_notional="reject", min_order_size=True, market_orders=True),
}
NO_RULES = VenueRules()  # a venue with none of its own


class InstrumentLike(Protocol):
    """What validation reads about a symbol (``sequence.market.service.Instrument``)."""

    @property
    def symbol(self) -> str: ...
    @property
    def venue(self) -> str: ...
    @property
    def instrument_type(self) -> str: ...
    @property
    def book_symbol(self) -> str: ...
    @property
    def outcome(self) -> str | None: ...
    @property
    def tick(self) -> int: ...
    @property
    def price_scale(self) -> int: ...
    @property
    def size_scale(self) -> int: ...
    @property
    def min_notional(self) -> float: ...
    @property
    def min_order_size(self) -> float: ...
    @property
    def active(self) -> bool: ...
    @property
    def market_slug(self) -> str: ...
    @property
    def tick_size(self) -> float: ...
    @property
    def neg_risk(self) -> bool: ...
    @property
    def price_steps(self) -> tuple[tuple[int, int, int], ...]: ...


#: ``lookup(symbol)`` → instrument, or ``None`` for an unknown symbol.
Lookup = Callable[[str], InstrumentLike | None]


# -- the parsed request ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GraphRequest:
    """A valid graph request: its nodes (pending) and edges, and whether it trades on paper."""

    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    paper: bool  # the wire's ``sandbox``, forced for a ``seq_test_`` key


# -- parsing ----------------------------------------------------------------------------


def _decimal(value: Any, where: str, what: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise GraphError(where, f"{where} must be a number", code="invalid_number")
    try:
        d = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value).strip())
    except InvalidOperation:
        raise GraphError(where, f"{where} must be a number", code="invalid_number") from None
    if not d.is_finite():
        raise GraphError(where, f"{where} must be a finite number", code="invalid_number")
    return d


def _fmt(d: Decimal | float) -> str:
    """A price or size as people write it (``0.5``, ``0.01``, ``100``)."""
    d = Decimal(repr(d)) if isinstance(d, float) else d
    text = format(d.normalize(), "f")
    return text


def _on_band_step(units: int, bands: tuple[tuple[int, int, int], ...]) -> int:
    """A price (on the finest tick) moved to its band's step, half to even: a Kalshi
    tapered market takes 0.001 steps only near 0 and 1, 0.01 steps between."""
    for start, end, step in bands:
        if start <= units <= end:
            off = (units - start) % step
            if not off:
                return units
            q, r = divmod(units - start, step)
            up = 2 * r > step or (2 * r == step and q % 2 == 1)
            return start + (q + up) * step
    return units


def round_to_tick(price: Decimal, tick_size: Decimal) -> Decimal:
    """A price off the tick grid, rounded the way Polymarket's official client rounds:
    to the tick's decimals (half to even), then — for ticks that are not a power of
    ten (0.005, 0.0025) — to the nearest multiple of the tick. So the product
    document's ``force_cross_price(…, 0.001)`` on a 0.01 market gives a valid price
    (0.641 → 0.64) instead of a refusal; the node carries the price used."""
    decimals = -tick_size.normalize().as_tuple().exponent  # type: ignore[operator]
    rounded = price.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_EVEN)
    steps = rounded / tick_size
    if steps != steps.to_integral_value():
        rounded = steps.quantize(Decimal(1), rounding=ROUND_HALF_EVEN) * tick_size
    return rounded


def _units(d: Decimal, scale: int) -> Decimal:
    return d * scale


def parse_graph(body: Any, lookup: Lookup, *, venues: Iterable[str], force_paper: bool) -> GraphRequest:
    """Validate a ``POST /v1/graphs`` body into a :class:`GraphRequest` (or raise :class:`GraphError`).

    ``force_paper``: the caller's key trades on paper only (a ``seq_test_`` key),
    whatever the body's ``sandbox`` says."""
    if not isinstance(body, Mapping):
        raise GraphError("body", 'the body must be a JSON object: {"nodes": [...], "edges": [...]}')
    unknown = sorted(set(body) - GRAPH_FIELDS)
    if unknown:
        raise GraphError(unknown[0], f"unknown field(s) {', '.join(unknown)}; a graph has "
                         "nodes, edges and sandbox", code="unknown_field")
    sandbox_raw = body.get("sandbox")
    if sandbox_raw is not None and not isinstance(sandbox_raw, bool):
        raise GraphError("sandbox", "sandbox must be true or false")
    paper = bool(sandbox_raw) or force_paper

    raw_nodes = body.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise GraphError("nodes", "nodes must be a non-empty list of nodes")
    if len(raw_nodes) > MAX_NODES:
        raise GraphError("nodes", f"a graph has at most {MAX_NODES} nodes, got {len(raw_nodes)}",
                         code="too_many_nodes")
    raw_edges = body.get("edges")
    if raw_edges is None:
        raw_edges = []
    if not isinstance(raw_edges, list):
        raise GraphError("edges", "edges must be a list (use [] for parallel roots)")
    if len(raw_edges) > MAX_EDGES:
        raise GraphError("edges", f"a graph has at most {MAX_EDGES} edges, got {len(raw_edges)}",
                         code="too_many_edges")

    ids: dict[str, int] = {}
    for i, raw in enumerate(raw_nodes):
        where = f"nodes[{i}]"
        if not isinstance(raw, Mapping):
            raise GraphError(where, f"{where} must be an object")
        nid = raw.get("node_id")
        if not isinstance(nid, str) or not nid:
            raise GraphError(f"{where}.node_id", f"{where}.node_id is required (a short string like 'leg')",
                             code="missing_field")
        if len(nid) > 64 or not set(nid) <= NODE_ID_CHARS:
            raise GraphError(f"{where}.node_id", f"{where}.node_id must be 1-64 characters of "
                             "letters, digits, '_', '.' or '-'", code="invalid_node_id")
        if nid in ids:
            raise GraphError(f"{where}.node_id", f"duplicate node_id {nid!r} (also nodes[{ids[nid]}]); "
                             "node ids must be unique within a graph", code="duplicate_node_id",
                             node_id=nid)
        ids[nid] = i

    edges = _parse_edges(raw_edges, ids)
    targets = {e.target for e in edges}
    venue_set = frozenset(venues)
    nodes = tuple(
        _parse_node(raw, i, lookup, venue_set, targets) for i, raw in enumerate(raw_nodes)
    )
    return GraphRequest(nodes, edges, paper)


def _parse_edges(raw_edges: Sequence[Any], ids: Mapping[str, int]) -> tuple[Edge, ...]:
    edges: list[Edge] = []
    seen: set[tuple[str, str, str]] = set()
    for j, raw in enumerate(raw_edges):
        where = f"edges[{j}]"
        if not isinstance(raw, Mapping):
            raise GraphError(where, f'{where} must be an object like {{"from": "a", "to": "b", "trigger": "filled"}}')
        unknown = sorted(set(raw) - {"from", "to", "trigger"})
        if unknown:
            raise GraphError(f"{where}.{unknown[0]}", f"unknown field(s) in {where}: {', '.join(unknown)}; "
                             "an edge has from, to and trigger", code="unknown_field")
        for key in ("from", "to"):
            ref = raw.get(key)
            if not isinstance(ref, str) or ref not in ids:
                raise GraphError(f"{where}.{key}", f"{where}.{key} names no node of this graph: {ref!r}",
                                 code="unknown_node", node_id=ref if isinstance(ref, str) else None)
        trigger = raw.get("trigger", "filled")
        if trigger not in TRIGGERS:
            raise GraphError(f"{where}.trigger", f"{where}.trigger must be one of {', '.join(TRIGGERS)}",
                             code="invalid_trigger")
        src, dst = raw["from"], raw["to"]
        if src == dst:
            raise GraphError(where, f"{where} goes from {src!r} to itself", code="cycle", cycle=[src, src])
        key3 = (src, dst, trigger)
        if key3 in seen:
            raise GraphError(where, f"{where} repeats the edge {src!r} -> {dst!r} on {trigger}",
                             code="duplicate_edge")
        seen.add(key3)
        edges.append(Edge(src, dst, trigger))
    cycle = find_cycle(list(ids), edges)
    if cycle:
        path = " -> ".join(cycle)
        raise GraphError("edges", f"edges form a cycle: {path}; a graph must be acyclic", code="cycle",
                         cycle=cycle)
    return tuple(edges)


def find_cycle(node_ids: Sequence[str], edges: Iterable[Edge]) -> list[str] | None:
    """A cycle as ``[a, b, …, a]``, or ``None`` if the graph is acyclic."""
    out: dict[str, list[str]] = {n: [] for n in node_ids}
    for e in edges:
        out[e.source].append(e.target)
    color = dict.fromkeys(node_ids, 0)  # 0 new, 1 on stack, 2 done
    for start in node_ids:
        if color[start]:
            continue
        stack: list[tuple[str, int]] = [(start, 0)]
        path: list[str] = [start]
        color[start] = 1
        while stack:
            node, i = stack[-1]
            if i < len(out[node]):
                stack[-1] = (node, i + 1)
                nxt = out[node][i]
                if color[nxt] == 1:
                    return [*path[path.index(nxt):], nxt]
                if color[nxt] == 0:
                    color[nxt] = 1
                    stack.append((nxt, 0))
                    path.append(nxt)
            else:
                color[node] = 2
                stack.pop()
                path.pop()
    return None


def _parse_node(
    raw: Mapping[str, Any], i: int, lookup: Lookup, venues: frozenset[str], targets: set[str]
) -> Node:
    where = f"nodes[{i}]"
    nid: str = raw["node_id"]
    unknown = sorted(set(raw) - NODE_FIELDS)
    if unknown:
        raise GraphError(f"{where}.{unknown[0]}", f"unknown field(s) in {where}: {', '.join(unknown)}; "
                         f"a node has {', '.join(sorted(NODE_FIELDS))}", code="unknown_field")

    symbol = raw.get("symbol")
    if not isinstance(symbol, str) or not symbol:
        raise GraphError(f"{where}.symbol", f"{where}.symbol is required", code="missing_field")
    venue = raw.get("venue")
    if venue is not None and (not isinstance(venue, str) or venue not in venues):
        raise GraphError(f"{where}.venue", f"{where}.venue {venue!r} is not a known venue; expected one of "
                         f"{', '.join(sorted(venues))}", code="unknown_venue", venues=sorted(venues))
    inst = lookup(symbol)
    if inst is None:
        raise GraphError(f"{where}.symbol", f"{where}.symbol {symbol!r} is not a known symbol"
                         + (f" on {venue}" if venue else "") + "; list symbols with GET /v1/markets",
                         code="unknown_symbol", symbol=symbol)
    if venue is None:
        venue = inst.venue
    elif inst.venue != venue:
        raise GraphError(f"{where}.venue", f"{where}.symbol {symbol!r} trades on {inst.venue}, not {venue}",
                         code="venue_mismatch", symbol=symbol, symbol_venue=inst.venue)
    if not inst.active:
        raise GraphError(f"{where}.symbol", f"market {symbol!r} on {venue} is closed; it takes no orders",
                         code="market_closed", symbol=symbol)

    itype = raw.get("instrument_type")
    if inst.instrument_type == "prediction" and itype != "prediction":
        got = "it is missing" if itype is None else f"got {itype!r}"
        raise GraphError(
            f"{where}.instrument_type",
            f"{where}.instrument_type must be \"prediction\" for {venue} orders ({got}); without it the "
            f"graph engine assumes spot and cannot route the order to {venue}",
            code="instrument_type_required", venue=venue, expected="prediction",
        )
    if itype is None:
        itype = "spot"
    if itype != inst.instrument_type:
        raise GraphError(f"{where}.instrument_type", f"{where}.instrument_type must be "
                         f"{inst.instrument_type!r} for {symbol!r}, got {itype!r}",
                         code="instrument_type_mismatch", expected=inst.instrument_type)

    side = raw.get("side")
    if side not in ("buy", "sell"):
        raise GraphError(f"{where}.side", f"{where}.side must be 'buy' or 'sell'", code="invalid_side")

    urgency = raw.get("urgency", "normal")
    if urgency is None:
        urgency = "normal"
    if urgency not in URGENCIES:
        raise GraphError(f"{where}.urgency", f"{where}.urgency must be one of {', '.join(URGENCIES)}",
                         code="invalid_urgency")

    rules = VENUE_RULES.get(venue, NO_RULES)
    scale, size_scale, tick = inst.price_scale, inst.size_scale, inst.tick

    # quantity
    if "qty" not in raw:
        raise GraphError(f"{where}.qty", f"{where}.qty is required", code="missing_field")
    qd = _decimal(raw["qty"], f"{where}.qty", "qty")
    if qd <= 0:
        raise GraphError(f"{where}.qty", f"{where}.qty must be greater than 0, got {_fmt(qd)}",
                         code="invalid_qty")
    qunits_d = _units(qd, size_scale)
    if qunits_d != qunits_d.to_integral_value():
        step = Decimal(1) / size_scale
        raise GraphError(f"{where}.qty", f"{where}.qty {_fmt(qd)} is finer than {venue}'s size increment "
                         f"{_fmt(step)} for {symbol!r}", code="misaligned_qty", size_increment=float(step))
    qty_units = int(qunits_d)
    qty_1e8_d = qd * QTY_1E8
    if qty_1e8_d != qty_1e8_d.to_integral_value() or qty_1e8_d >= MAX_QTY_1E8:
        raise GraphError(f"{where}.qty", f"{where}.qty {_fmt(qd)} is out of range", code="invalid_qty")
    qty_1e8 = int(qty_1e8_d)
    if rules.min_order_size and qd < Decimal(repr(float(inst.min_order_size))):
        raise GraphError(f"{where}.qty", f"{where}.qty {_fmt(qd)} is under {venue}'s minimum order size "
                         f"{_fmt(float(inst.min_order_size))} for {symbol!r}", code="under_min_order_size",
                         min_order_size=inst.min_order_size)

    # price
    tick_size = Decimal(tick) / scale
    limit_raw = raw.get("limit_price")
    limit_units: int | None = None
    limit_price: float | None = None
    if limit_raw is None:
        if not rules.market_orders:
            raise GraphError(f"{where}.limit_price", f"{where}.limit_price is required: {venue} takes limit "
                             f"orders only (prices in {_fmt(tick_size)} steps)", code="missing_field",
                             tick_size=float(tick_size))
        if urgency == "low":
            raise GraphError(f"{where}.urgency", f"{where} is a market order (no limit_price); urgency "
                             "'low' (post-only) needs a limit price", code="invalid_urgency")
    else:
        pd = _decimal(limit_raw, f"{where}.limit_price", "limit_price")
        lo = tick_size
        hi = (Decimal(scale - tick) / scale) if inst.instrument_type == "prediction" else None
        if pd < lo or (hi is not None and pd > hi):
            rng = f"between {_fmt(lo)} and {_fmt(hi)}" if hi is not None else f"at least {_fmt(lo)}"
            raise GraphError(f"{where}.limit_price", f"{where}.limit_price {_fmt(pd)} is out of range: "
                             f"{venue} prices for {symbol!r} are {rng} (tick {_fmt(tick_size)})",
                             code="price_out_of_range", min_price=float(lo),
                             max_price=None if hi is None else float(hi), tick_size=float(tick_size))
        ud = _units(pd, scale)
        if not (ud == ud.to_integral_value() and int(ud) % tick == 0):
            ud = _units(round_to_tick(pd, tick_size), scale)
            if ud < tick or (hi is not None and ud > scale - tick):
                raise GraphError(f"{where}.limit_price", f"{where}.limit_price {_fmt(pd)} rounds to "
                                 f"{_fmt(ud / scale)}, outside {venue}'s prices for {symbol!r} (tick "
                                 f"{_fmt(tick_size)})", code="price_out_of_range", tick_size=float(tick_size))
        limit_units = _on_band_step(int(ud), inst.price_steps)
        # int / int is correctly rounded, as float(Decimal(units) / scale) is when the quotient is
        # exact (scales are powers of ten): the same float, without two Decimals per order.
        limit_price = limit_units / scale

    if limit_units is not None and qty_1e8 * limit_units > MAX_NOTIONAL_1E8 * scale:
        raise GraphError(f"{where}.limit_price", f"{where}: qty {_fmt(qd)} at limit_price {_fmt(limit_units / Decimal(scale))} "
                         f"is over the ${_fmt(Decimal(MAX_NOTIONAL_1E8) / QTY_1E8)} of notional an order may have",
                         code="notional_out_of_range", max_notional=MAX_NOTIONAL_1E8 // QTY_1E8)

    # minimum notional
    never_crosses = False
    if limit_units is not None and inst.min_notional > 0:
        notional = qd * Decimal(limit_units) / scale
        minimum = Decimal(repr(float(inst.min_notional)))
        if notional < minimum:
            if rules.min_notional == "reject":
                raise GraphError(f"{where}.qty", f"{where} notional ${_fmt(notional)} is under {venue}'s "
                                 f"minimum ${_fmt(minimum)} for {symbol!r}", code="under_min_notional",
                                 min_notional=float(minimum))
            never_crosses = True

    # activation
    activation = raw.get("activation")
    targeted = nid in targets
    if activation is None:
        activation = "triggered" if targeted else "root"
    if activation not in ("root", "triggered"):
        raise GraphError(f"{where}.activation", f"{where}.activation must be 'root' or 'triggered'",
                         code="invalid_activation")
    if activation == "root" and targeted:
        raise GraphError(f"{where}.activation", f"node {nid!r} is the target of an edge, so its activation "
                         "must be 'triggered' (or left out)", code="invalid_activation")
    if activation == "triggered" and not targeted:
        raise GraphError(f"{where}.activation", f"node {nid!r} is 'triggered' but no edge leads to it, so it "
                         "could never fire; make it 'root' or add an edge", code="invalid_activation")

    # book terms: a NO token is the YES book mirrored
    buy = side == "buy"
    if inst.outcome == "no":
        book_side = Side.ASK if buy else Side.BID
        book_limit = None if limit_units is None else scale - limit_units
    else:
        book_side = Side.BID if buy else Side.ASK
        book_limit = limit_units

    return Node(
        node_id=nid, idx=i, symbol=symbol, venue=venue, instrument_type=itype, side=side,
        qty_1e8=qty_1e8, qty_units=qty_units, limit_price=limit_price,
        limit_units=limit_units, book_symbol=inst.book_symbol, book_side=book_side,
        book_limit=book_limit, price_scale=scale, size_scale=size_scale, urgency=urgency,
        activation=activation, never_crosses=never_crosses,
    )


def simple_order(inst: InstrumentLike, side: str, qty_1e8: int, px_1e8: int, urgency: str,
                 paper: bool) -> GraphRequest | None:
    """A one-node limit order from integers (× 1e8) — the WASM algos' ``seq.submit`` — checked
    with integer arithmetic, or None when the general parser must decide.

    This is a shortcut, never a second set of rules: it accepts only what
    :func:`parse_graph` accepts unchanged (on-tick, in-range, aligned, at or above
    every minimum) and builds the same node; anything else (an off-tick price to
    round, a market order, a minimum to enforce or rest under) returns None, and
    the caller runs :func:`parse_graph`, whose answer or error then stands. A
    property test compares the two on random orders.
    """
    if not inst.active or side not in ("buy", "sell") or urgency not in URGENCIES:
        return None
    scale, size_scale, tick = inst.price_scale, inst.size_scale, inst.tick
    if not 0 < qty_1e8 < MAX_QTY_1E8 or px_1e8 <= 0:
        return None
    q_units, q_rem = divmod(qty_1e8 * size_scale, QTY_1E8)
    limit_units, p_rem = divmod(px_1e8 * scale, QTY_1E8)
    if q_rem or p_rem or limit_units % tick or limit_units < tick:
        return None
    if inst.instrument_type == "prediction" and limit_units > scale - tick:
        return None
    if qty_1e8 * limit_units > MAX_NOTIONAL_1E8 * scale:
        return None
    if _on_band_step(limit_units, inst.price_steps) != limit_units:
        return None
    rules = VENUE_RULES.get(inst.venue, NO_RULES)
    # Minimums: compared exactly (×1e8 integers of the decimal the general path reads).
    if rules.min_order_size and inst.min_order_size and qty_1e8 * 10**8 < _e16(inst.min_order_size):
        return None
    if inst.min_notional > 0 and qty_1e8 * limit_units * 10**8 < _e16(inst.min_notional) * scale:
        return None
    buy = side == "buy"
    if inst.outcome == "no":
        book_side, book_limit = (Side.ASK if buy else Side.BID), scale - limit_units
    else:
        book_side, book_limit = (Side.BID if buy else Side.ASK), limit_units
    # Positional (the field order of Node): with keywords this call took ~2 µs more (of 7.6), on the algos' path.
    node = Node("o", 0, inst.symbol, inst.venue, inst.instrument_type, side, qty_1e8, q_units,
                limit_units / scale, limit_units, inst.book_symbol, book_side, book_limit, scale, size_scale,
                urgency, "root", False)
    return GraphRequest((node,), (), paper)


@functools.lru_cache(maxsize=4096)
def _e16(value: float) -> int:
    """A venue minimum (a float from the catalogue) × 1e16, exactly as its decimal repr."""
    return int(Decimal(repr(float(value))) * 10**16)
