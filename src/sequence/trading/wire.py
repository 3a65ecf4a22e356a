"""What the API sends for trading objects, built from store rows (API.md).

Graphs (``POST``/``GET /v1/graphs``), their nodes, fills (``GET /v1/fills`` and
the ``fills`` channel), positions (``GET /v1/positions``) and the ``graphs``
channel's updates (built from the nodes an engine step changed). Quantities leave as numbers and as exact ``*_1e8``
integers; times as ISO-8601 with milliseconds; paper trading keeps the wire
name ``sandbox``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fractions import Fraction
from typing import Any

from sequence.market.clock import iso

from .fees import USD_1E8
from .graphs import LIVE_NODE, QTY_1E8, GraphStatus, Node
from .positions import Position


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
        "status": row["status"] if replay else GraphStatus.active.value,
        "node_count": row["node_count"],
        "edge_count": row["edge_count"],
        "sandbox": bool(row["sandbox"]),
        "created_at": iso(row["created_at"]),
        "idempotent_replay": replay,
    }


def graph_update_json(graph_id: str, status: str, nodes: Iterable[Node], ts: float) -> dict[str, Any]:
    """A ``graphs`` channel message: the graph's status and the nodes one step changed."""
    return {
        "graph_id": graph_id,
        "status": status,
        "nodes": [{"node_id": n.node_id, "status": n.status,
                   "filled_qty": _num(n.filled_1e8, QTY_1E8), "filled_qty_1e8": n.filled_1e8,
                   "reason": n.reason} for n in nodes],
        "ts": iso(ts),
        "update_ts": ts,
    }


def _money(v: int | None) -> float | None:
    return None if v is None else v / USD_1E8


def position_json(pos: Position, *, symbol: str, venue: str, paper: bool, mark: Fraction | None,
                  updated_at: str | None = None) -> dict[str, Any]:
    """The ``GET /v1/positions`` row."""
    avg = pos.avg_price
    unreal = pos.unrealized_1e8(mark)
    total = None if unreal is None else pos.realized_1e8 + unreal - pos.fees_1e8
    return {
        "symbol": symbol,
        "venue": venue,
        "sandbox": paper,
        "net_qty": pos.net_1e8 / USD_1E8,
        "net_qty_1e8": pos.net_1e8,
        "avg_price": None if avg is None else round(float(avg), 10),
        "mark": None if mark is None else float(mark),
        "realized_pnl": _money(pos.realized_1e8),
        "unrealized_pnl": _money(unreal),
        "fees": _money(pos.fees_1e8),
        "total_pnl": _money(total),
        "fill_count": pos.fill_count,
        "updated_at": updated_at,
    }


__all__ = ["ack_json", "fill_json", "graph_json", "graph_update_json", "node_json", "position_json"]
