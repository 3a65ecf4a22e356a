"""Two legs on two venues, fired in parallel by one graph.

A graph with N nodes and no edges is N parallel orders that fire on submit:
here a Kalshi YES buy and a Polymarket YES buy, both crossing the spread by
one tick (``urgency="high"``). It shows:

* ``seq.stream`` on two channels at once, read until each has a price;
* the Polymarket $1 minimum notional: the quantity is sized to clear it
  (an order under it is accepted and rests forever, never crossing);
* ``seq.wait_for_fills`` for detection and ``seq.graph_status`` for the
  per-node picture afterwards (status never lags fills on this platform,
  but fills are still the thing to gate on).

Log records: boot, legs, prices, submit, filled, graph, done.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any

from sequence_markets import Sequence, SequenceError


def log(event: str, **fields: Any) -> None:
    print(json.dumps({"ts": round(time.time(), 3), "event": event, **fields}, default=str), flush=True)


def first_two_sided(seq: Sequence, venue: str, **filters: Any) -> dict[str, Any] | None:
    rows = seq.markets(venue=venue, limit=50, order="volume", active=True, **filters)["markets"]
    for m in rows:
        tok = m.get("yes_token_id")
        if tok and not m.get("is_placeholder_outcome"):
            nbbo = seq.quote(tok)["nbbo"]
            if nbbo.get("bid") and nbbo.get("ask"):
                return m
    return None


def latest_prices(seq: Sequence, symbols: list[str], timeout: float = 10.0) -> dict[str, dict[str, Any]]:
    """Read prices:<symbol> for every symbol until each has reported once."""
    seen: dict[str, dict[str, Any]] = {}
    for msg in seq.stream([f"prices:{s}" for s in symbols], duration_s=timeout, max_msgs=50):
        seen[msg["data"]["symbol"]] = msg["data"]
        if len(seen) == len(symbols):
            break
    return seen


def main() -> int:
    seq = Sequence()
    log("boot", run_id=os.environ.get("SEQUENCE_RUN_ID"), sandbox=os.environ.get("SEQUENCE_IS_SANDBOX"))
    kalshi = first_two_sided(seq, "kalshi")
    poly = first_two_sided(seq, "polymarket", expand="outcomes")
    if not kalshi or not poly:
        log("fatal", reason="no two-sided markets")
        return 1
    k_sym, p_sym = kalshi["yes_token_id"], poly["yes_token_id"]
    log("legs", kalshi=kalshi["slug"], polymarket=poly["slug"])

    prices = latest_prices(seq, [k_sym, p_sym])
    if len(prices) < 2:
        log("fatal", reason="no prices from the stream", got=sorted(prices))
        return 1
    k_ask, p_ask = prices[k_sym]["ask"], prices[p_sym]["ask"]
    log("prices", kalshi_ask=k_ask, polymarket_ask=p_ask)

    k_price = seq.cross_price("buy", k_ask, seq.tick_size(k_sym))
    p_price = seq.cross_price("buy", p_ask, seq.tick_size(p_sym))
    # Clear the $1 minimum with headroom, and Polymarket's minimum order size.
    min_usd = float(os.environ.get("POLYMARKET_MIN_NOTIONAL_USD", "1.0"))
    p_qty = float(max(poly.get("min_order_size") or 1, math.ceil(min_usd * 1.25 / p_price)))
    k_qty = float(os.environ.get("KALSHI_QTY", "1"))

    resp = seq.graph(
        nodes=[
            seq.node(node_id="kalshi-leg", symbol=k_sym, side="buy", qty=k_qty, venue="kalshi",
                     instrument_type="prediction", limit_price=k_price, urgency="high"),
            seq.node(node_id="polymarket-leg", symbol=p_sym, side="buy", qty=p_qty, venue="polymarket",
                     instrument_type="prediction", limit_price=p_price, urgency="high"),
        ],
        edges=[],  # no edges -> both nodes are roots -> they fire in parallel
    )
    gid = resp["graph_id"]
    log("submit", graph_id=gid, node_count=resp.get("node_count"), edge_count=resp.get("edge_count"),
        kalshi_limit=k_price, polymarket_limit=p_price, polymarket_qty=p_qty,
        polymarket_notional=round(p_qty * p_price, 4))

    # Wait until both legs have fills (or 8 s pass).
    legs: dict[str, list[dict[str, Any]]] = {}
    deadline = time.monotonic() + 8.0
    while len(legs) < 2 and time.monotonic() < deadline:
        # wait_for_fills returns every fill of this graph so far (>= 1), or [] on timeout.
        legs = {}
        for f in seq.wait_for_fills(gid, timeout=max(0.0, deadline - time.monotonic())):
            legs.setdefault(f["node_id"], []).append(f)
        if len(legs) < 2:
            time.sleep(0.2)
    for node_id, fills in sorted(legs.items()):
        log("filled", node_id=node_id, venue=fills[0]["venue"], count=len(fills),
            qty=sum(f["qty"] for f in fills))

    g = seq.graph_status(gid)
    log("graph", graph_id=gid, status=g.get("status"),
        nodes={n["node_id"]: n.get("status") for n in g.get("nodes", [])})
    if g.get("status") == "active":
        seq.cancel(gid)  # never leave a half-filled leg working
    log("done", legs_filled=len(legs))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SequenceError as exc:
        log("crash", error=f"{type(exc).__name__}: {exc}", request_id=exc.request_id)
        sys.exit(1)
