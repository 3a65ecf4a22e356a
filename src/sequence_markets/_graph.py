"""Execution graphs and prices: pure functions, no I/O."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence


def node(
    node_id: str,
    symbol: str,
    side: str,
    qty: float,
    venue: Optional[str] = None,
    instrument_type: str = "spot",
    limit_price: Optional[float] = None,
    urgency: str = "normal",
    **extra: Any,
) -> Dict[str, Any]:
    """One graph node as the wire wants it. ``venue`` and ``limit_price`` are
    left out when ``None``; ``extra`` keys are passed through unchanged."""
    built: Dict[str, Any] = {
        "node_id": node_id,
        "symbol": symbol,
        "side": side,
        "qty": qty,
        "instrument_type": instrument_type,
        "urgency": urgency,
    }
    if venue is not None:
        built["venue"] = venue
    if limit_price is not None:
        built["limit_price"] = limit_price
    built.update(extra)
    return built


def graph_body(
    nodes: Sequence[Mapping[str, Any]],
    edges: Optional[Iterable[Mapping[str, Any]]] = None,
    sandbox: Optional[bool] = None,
) -> Dict[str, Any]:
    """The ``POST /v1/graphs`` body.

    Every node that is no edge's target gets ``activation="root"`` (it fires
    on submit), the others ``"triggered"``; a node that already names its
    activation keeps it. Inputs are copied, never modified, so one node dict
    can be reused across graphs.
    """
    if isinstance(nodes, Mapping):
        raise TypeError("graph() takes a list of nodes, not a single node dict")
    edge_list: List[Dict[str, Any]] = [dict(edge) for edge in (edges or ())]
    targets = {edge.get("to") for edge in edge_list}
    node_list: List[Dict[str, Any]] = []
    for item in nodes:
        copied = dict(item)
        if "activation" not in copied:
            copied["activation"] = "triggered" if copied.get("node_id") in targets else "root"
        node_list.append(copied)
    body: Dict[str, Any] = {"nodes": node_list, "edges": edge_list}
    if sandbox is not None:
        body["sandbox"] = bool(sandbox)
    return body


def cross_price(side: str, reference: float, tick: float) -> float:
    """A limit price one tick through ``reference``, aligned to ``tick``.

    What strategies call ``force_cross_price``: BUY → one tick above (the ask), SELL →
    one tick below (the bid), rounded to the nearest tick and never below one
    tick. Computed in decimal, so ``cross_price("buy", 0.29, 0.01)`` is
    exactly ``0.3``, not ``0.30000000000000004``.
    """
    if side not in ("buy", "sell"):
        raise ValueError(f"side must be 'buy' or 'sell', not {side!r}")
    try:
        ref = Decimal(repr(float(reference)))
        step = Decimal(repr(float(tick)))
    except (InvalidOperation, TypeError, ValueError) as exc:
        raise ValueError(f"reference and tick must be numbers: {reference!r}, {tick!r}") from exc
    if not step.is_finite() or step <= 0:
        raise ValueError(f"tick must be a positive number, not {tick!r}")
    if not ref.is_finite():
        raise ValueError(f"reference must be a finite number, not {reference!r}")
    raw = ref + step if side == "buy" else ref - step
    ticks = (raw / step).to_integral_value(rounding=ROUND_HALF_EVEN)
    return float(max(step, ticks * step))


def fills_of_graph(fills: Iterable[Any], graph_id: str) -> List[Dict[str, Any]]:
    """The fills whose ``node_order_id`` starts with ``graph:{graph_id}:``."""
    prefix = f"graph:{graph_id}:"
    return [
        fill
        for fill in fills
        if isinstance(fill, dict) and str(fill.get("node_order_id") or "").startswith(prefix)
    ]
