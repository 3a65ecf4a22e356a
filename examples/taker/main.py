"""Taker: cross the spread by one tick, detect the fill, then flatten.

What it shows (the product document's "Submitting orders that actually fill"):

* the price comes from the live stream (``seq.stream``), not a stale quote;
* the limit is one tick *through* the touch (``seq.cross_price``) with
  ``urgency="high"`` — a BUY at exactly the ask is racy;
* the tick comes from the market (``seq.tick_size``), not a hard-coded guess;
* fills are detected with ``seq.wait_for_fills`` (the fills-delta pattern
  matched on ``node_order_id``), never by polling the graph status.

Log records: boot, chosen, price, submit, filled (or no_fill), done.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from sequence_markets import Sequence, SequenceError


def log(event: str, **fields: Any) -> None:
    print(json.dumps({"ts": round(time.time(), 3), "event": event, **fields}, default=str), flush=True)


def pick_symbol(seq: Sequence) -> str | None:
    """The configured symbol, else the most traded Kalshi YES with a two-sided book."""
    if os.environ.get("TAKER_SYMBOL"):
        return os.environ["TAKER_SYMBOL"]
    for m in seq.markets(venue="kalshi", limit=30, order="volume", active=True)["markets"]:
        tok = m.get("yes_token_id")
        if not tok:
            continue
        nbbo = seq.quote(tok)["nbbo"]
        if nbbo.get("bid") and nbbo.get("ask"):
            return str(tok)
    return None


def take(seq: Sequence, symbol: str, side: str, qty: float, reference: float, tick: float) -> list:
    """Submit one marketable node and wait (at most 8 s) for its fills."""
    price = seq.cross_price(side, reference, tick)
    node = seq.node(node_id=f"take-{side}", symbol=symbol, side=side, qty=qty, venue="kalshi",
                    instrument_type="prediction", limit_price=price, urgency="high")
    graph_id = seq.graph([node])["graph_id"]
    log("submit", side=side, qty=qty, reference=reference, limit_price=price, graph_id=graph_id)
    fills = seq.wait_for_fills(graph_id, symbol=symbol, timeout=8.0)
    if not fills:
        log("no_fill", side=side, graph_id=graph_id)  # it rests: cancel rather than leave it
        seq.cancel(graph_id)
        return []
    log("filled", side=side, graph_id=graph_id, count=len(fills),
        qty_1e8=sum(f["qty_1e8"] for f in fills),
        avg_price=round(sum(f["price"] * f["qty"] for f in fills) / sum(f["qty"] for f in fills), 4))
    return fills


def main() -> int:
    seq = Sequence()  # SEQUENCE_API_KEY and SEQUENCE_API_URL are injected by the runner
    log("boot", sandbox=os.environ.get("SEQUENCE_IS_SANDBOX"), run_id=os.environ.get("SEQUENCE_RUN_ID"))
    symbol = pick_symbol(seq)
    if symbol is None:
        log("fatal", reason="no two-sided Kalshi market")
        return 1
    tick = seq.tick_size(symbol)
    log("chosen", symbol=symbol, tick=tick)

    # The first message of a prices: channel is the current snapshot.
    top = next(iter(seq.stream([f"prices:{symbol}"], duration_s=10.0, max_msgs=1)), None)
    if top is None or not top["data"].get("ask"):
        log("fatal", reason="no ask to take")
        return 1
    log("price", bid=top["data"]["bid"], ask=top["data"]["ask"])

    bought = take(seq, symbol, "buy", 1.0, top["data"]["ask"], tick)
    if bought:
        # Flatten: sell what we bought one tick through the current bid.
        bid = seq.quote(symbol)["nbbo"]["bid"]
        if bid:
            take(seq, symbol, "sell", 1.0, bid, tick)
    log("done", filled=bool(bought))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SequenceError as exc:
        log("crash", error=f"{type(exc).__name__}: {exc}", request_id=exc.request_id)
        sys.exit(1)
