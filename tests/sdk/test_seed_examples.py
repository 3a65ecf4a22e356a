"""The seed document's code, verbatim, against the SDK.

Each block below is copied unchanged from seed/hosted-strategies.md (only
the module-level imports are supplied as globals). They run over real HTTP
against a small fake market, so what a strategy author copies works.
"""

from __future__ import annotations

import json
import time as real_time
import types
from collections.abc import Iterator
from typing import Any

import pytest

from ._fakes import API_KEY, FakeMarket
from ._httpserver import LocalHTTPServer

DISCOVERY = '''
def _probe_two_sided(seq, symbol):
    """Return the quote dict if the book has a real bid > 0, else None."""
    try:
        q = seq.quote(symbol, depth=3)
    except SequenceError:
        return None
    bid = ((q or {}).get("nbbo") or {}).get("bid") or 0
    return q if bid > 0 else None


def find_kalshi_tradable(seq):
    r = seq.markets(venue="kalshi", limit=30, order="volume", active=True)
    for m in (r or {}).get("markets", []):
        if (m.get("liquidity") or 0) < 100:
            continue
        for side, token_field in (("yes", "yes_token_id"), ("no", "no_token_id")):
            tok = m.get(token_field)
            if tok and _probe_two_sided(seq, tok) is not None:
                return {**m, "_chosen_side": side, "_chosen_symbol": tok}
    return None


def find_polymarket_tradable(seq):
    # `expand=outcomes` flattens multi-outcome events (e.g. "World Cup
    # Winner") into one row per outcome with `yes_token_id` populated.
    r = seq.markets(
        venue="polymarket", limit=200, order="volume", active=True,
        expand="outcomes",
    )
    for m in (r or {}).get("markets", []):
        if m.get("is_placeholder_outcome") or (m.get("liquidity") or 0) < 1000:
            continue
        tok = m.get("yes_token_id")
        if tok and _probe_two_sided(seq, tok) is not None:
            return {**m, "_chosen_side": "yes", "_chosen_symbol": tok}
    return None
'''

SUBMISSION = '''
def safe_resting_price(best_bid: float) -> float:
    """Half of best_bid, floored at 1¢, rounded down to whole cents.

    Both venues use 0.01 as their default tick — a 50% discount lands
    well below any cross even if the bid moves while submitting."""
    if best_bid is None or best_bid <= 0:
        return 0.01
    half_cents = int(best_bid * 100 / 2)
    return max(0.01, half_cents / 100.0)


def submit_test_graph(seq, venue, label, symbol, qty, best_bid):
    price = safe_resting_price(best_bid)
    log("graph_submit_intent", venue=venue, label=label, qty=qty,
        limit_price=price, best_bid=best_bid,
        notional_usd=round(qty * price, 4))
    node = seq.node(
        node_id="leg",
        symbol=symbol,
        side="buy",
        qty=qty,
        venue=venue,
        instrument_type="prediction",   # <- required for Kalshi & Polymarket
        limit_price=price,
    )
    return seq.graph([node]).get("graph_id")
'''

MAIN = """
def main() -> int:
    base_url = os.environ.get("SEQUENCE_API_URL", "https://api.sequencemkts.com").rstrip("/")
    api_key = os.environ.get("SEQUENCE_API_KEY")
    log("boot", sequence_api_url=base_url, has_api_key=bool(api_key),
        strategy_id=os.environ.get("SEQUENCE_STRATEGY_ID"),
        run_id=os.environ.get("SEQUENCE_RUN_ID"))
    if not api_key:
        log("fatal", reason="SEQUENCE_API_KEY not injected")
        return 1

    seq = Sequence(api_key, base_url)
    log("health_check", ok=seq.health())

    kalshi = find_kalshi_tradable(seq)
    poly = find_polymarket_tradable(seq)
    if not kalshi or not poly:
        log("fatal", reason="discovery_incomplete")
        return 1
    log("discovery_done",
        kalshi_slug=kalshi["slug"], kalshi_chosen_side=kalshi["_chosen_side"],
        polymarket_slug=poly["slug"], polymarket_outcome=poly.get("outcome_name"))

    # WS subscribe — bounded so the strategy stays finite
    for msg in ws_subscribe(base_url, api_key, [
        f"prices:{kalshi['_chosen_symbol']}",
        f"prices:{poly['_chosen_symbol']}",
    ], duration_s=12.0, max_msgs=8):
        ch, data = msg.get("channel") or "", msg.get("data") or {}
        if ch and data:
            log("ws_msg", channel=ch[:60], bid=data.get("bid"),
                ask=data.get("ask"), mid=data.get("mid"))

    # Walk both books (logs top-5 levels per side per venue)
    kalshi_q = walk_book(seq, "kalshi", kalshi["_chosen_symbol"])
    poly_q = walk_book(seq, "polymarket", poly["_chosen_symbol"])

    # Submit + cancel both graphs
    submitted = []
    for venue, mkt, q, qty in [
        ("kalshi", kalshi, kalshi_q, 1.0),
        ("polymarket", poly, poly_q, 5.0),
    ]:
        bid = (q.get("nbbo") or {}).get("bid") or 0
        if bid > 0:
            gid = submit_test_graph(seq, venue, mkt["slug"],
                                    mkt["_chosen_symbol"], qty, float(bid))
            if gid:
                submitted.append((venue, gid))

    time.sleep(4)
    for venue, gid in submitted:
        log("graph_status", venue=venue, graph_id=gid,
            status=(seq.graph_status(gid) or {}).get("status"))

    for venue, gid in submitted:
        seq.cancel(gid)
        log("graph_cancelled", venue=venue, graph_id=gid)

    log("done", graphs_submitted=len(submitted))
    return 0
"""

FORCE_CROSS = """
def _venue_tick(venue: str) -> float:
    # Kalshi is 0.01. Polymarket varies — most markets are 0.01 but
    # some run 0.001, and the displayed quote tick is the source of
    # truth. Use the smaller value to be safe.
    return 0.001 if venue == "polymarket" else 0.01


def force_cross_price(side: str, reference: float, tick: float) -> float:
    raw = reference + tick if side == "buy" else reference - tick
    return max(tick, round(raw / tick) * tick)
"""

PARALLEL_ROOTS = """
seq.graph(
    nodes=[
        seq.node(node_id="kalshi-leg", symbol=kalshi_ticker, side="buy",
                 qty=1.0, venue="kalshi", instrument_type="prediction",
                 limit_price=force_cross_price("buy", k_ask, 0.01),
                 urgency="high"),
        seq.node(node_id="polymarket-leg", symbol=poly_token_id, side="sell",
                 qty=8.0, venue="polymarket", instrument_type="prediction",
                 limit_price=force_cross_price("sell", p_bid, 0.001),
                 urgency="high"),
    ],
    edges=[],       # <- no edges -> both nodes are roots -> fire in parallel
    sandbox=False,  # <- True for paper-fill against live NBBO
)
"""

FILLS_DELTA = """
# Snapshot fills count before submitting
before = seq.fills(symbol=symbol, limit=10)
before_count = len((before if isinstance(before, list) else before.get("fills", [])) or [])

resp = seq.graph([buy_node])
graph_id = resp["graph_id"]

# Wait for fills delta, not graph_status
deadline = time.time() + 8.0
while time.time() < deadline:
    after = seq.fills(symbol=symbol, limit=10)
    after_list = after if isinstance(after, list) else after.get("fills", [])
    new_fills = [f for f in (after_list or [])
                 if f.get("node_order_id", "").startswith(f"graph:{graph_id}:")]
    if new_fills:
        log("filled", count=len(new_fills),
            qty_1e8=sum(f["qty_1e8"] for f in new_fills))
        break
    time.sleep(0.5)
"""


class Logs:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def __call__(self, event: str, **fields: Any) -> None:
        # The seed's log(): one JSON line per event (checked to serialize).
        json.dumps({"event": event, **fields}, default=str)
        self.records.append({"event": event, **fields})

    def events(self) -> list[str]:
        return [r["event"] for r in self.records]

    def one(self, event: str) -> dict[str, Any]:
        (record,) = [r for r in self.records if r["event"] == event]
        return record


@pytest.fixture
def served() -> Iterator[tuple[str, FakeMarket]]:
    market = FakeMarket()
    with LocalHTTPServer(market) as server:
        yield server.base_url, market


def _namespace(**extra: Any) -> dict[str, Any]:
    # What the seed's `import` lines provide.
    import os
    import sys

    from sequence_markets import Sequence, SequenceError

    fake_time = types.SimpleNamespace(time=real_time.time, sleep=lambda s: None)
    ns: dict[str, Any] = {
        "os": os,
        "sys": sys,
        "json": json,
        "time": fake_time,
        "Sequence": Sequence,
        "SequenceError": SequenceError,
        "log": Logs(),
    }
    ns.update(extra)
    return ns


def test_seed_import_line_works() -> None:
    exec("from sequence_markets import Sequence, SequenceError", {})


def test_seed_main_runs_end_to_end(
    served: tuple[str, FakeMarket], monkeypatch: pytest.MonkeyPatch
) -> None:
    base_url, market = served
    monkeypatch.setenv("SEQUENCE_API_URL", base_url)
    monkeypatch.setenv("SEQUENCE_API_KEY", API_KEY)

    def ws_subscribe(
        base_url: str, api_key: str, channels: list[str], *, duration_s: float, max_msgs: int
    ) -> Iterator[dict[str, Any]]:
        # The seed hand-rolls this; the SDK's stream() replaces it (tested elsewhere).
        yield {"type": "subscribed", "channels": channels}
        for channel in channels:
            yield {"channel": channel, "data": {"bid": 0.1, "ask": 0.2, "mid": 0.15}}

    def walk_book(seq: Any, venue: str, symbol: str) -> dict[str, Any]:
        q: dict[str, Any] = seq.quote(symbol, depth=5)
        return q

    ns = _namespace(ws_subscribe=ws_subscribe, walk_book=walk_book)
    exec(DISCOVERY + SUBMISSION + MAIN, ns)
    assert ns["main"]() == 0
    log: Logs = ns["log"]
    assert log.one("health_check")["ok"] is True
    done = log.one("discovery_done")
    assert done["kalshi_chosen_side"] == "no"  # YES book is one-sided: the fallback worked
    assert done["polymarket_outcome"] == "Brazil"
    assert len([e for e in log.events() if e == "ws_msg"]) == 2
    assert [r["status"] for r in log.records if r["event"] == "graph_status"] == [
        "active",
        "active",
    ]
    assert len([e for e in log.events() if e == "graph_cancelled"]) == 2
    assert {g["status"] for g in market.graphs.values()} == {"cancelled"}
    kalshi_node = market.graphs["graph_1"]["body"]["nodes"][0]
    assert kalshi_node == {
        "node_id": "leg",
        "symbol": "KXBTC-100K-NO",
        "side": "buy",
        "qty": 1.0,
        "venue": "kalshi",
        "instrument_type": "prediction",
        "limit_price": 0.43,
        "urgency": "normal",
        "activation": "root",
    }


def test_seed_probe_returns_none_for_unknown_symbols(served: tuple[str, FakeMarket]) -> None:
    base_url, _ = served
    ns = _namespace()
    exec(DISCOVERY, ns)
    with ns["Sequence"](API_KEY, base_url) as seq:
        assert ns["_probe_two_sided"](seq, "no-such-token") is None
        assert ns["_probe_two_sided"](seq, "KXBTC-100K-YES") is None  # one-sided
        assert ns["_probe_two_sided"](seq, "0xbrazil")["nbbo"]["bid"] == 0.151


def test_seed_parallel_roots_example(served: tuple[str, FakeMarket]) -> None:
    base_url, market = served
    ns = _namespace(
        kalshi_ticker="KXBTC-100K-NO", k_ask=0.88, poly_token_id="0xbrazil", p_bid=0.151
    )
    exec(FORCE_CROSS, ns)
    with ns["Sequence"](API_KEY, base_url) as seq:
        ns["seq"] = seq
        exec(PARALLEL_ROOTS, ns)
    body = market.graphs["graph_1"]["body"]
    assert [n["activation"] for n in body["nodes"]] == ["root", "root"]
    assert body["edges"] == [] and body["sandbox"] is False
    assert [n["urgency"] for n in body["nodes"]] == ["high", "high"]
    prices = [n["limit_price"] for n in body["nodes"]]
    assert prices == pytest.approx([0.89, 0.15])
    # The SDK helper gives the same prices without float residue.
    from sequence_markets import cross_price

    assert [cross_price("buy", 0.88, 0.01), cross_price("sell", 0.151, 0.001)] == [0.89, 0.15]


def test_seed_fills_delta_pattern_and_wait_for_fills_agree(served: tuple[str, FakeMarket]) -> None:
    base_url, market = served
    market.fill_on_submit = True
    with __import__("sequence_markets").Sequence(API_KEY, base_url) as seq:
        buy_node = seq.node(
            "leg",
            "0xbrazil",
            "buy",
            8.0,
            venue="polymarket",
            instrument_type="prediction",
            limit_price=0.154,
            urgency="high",
        )
        ns = _namespace(seq=seq, symbol="0xbrazil", buy_node=buy_node)
        exec(FILLS_DELTA, ns)
        assert ns["log"].one("filled") == {"event": "filled", "count": 1, "qty_1e8": 800000000}
        # The helper does the same in one call.
        second = seq.graph([buy_node])["graph_id"]
        found = seq.wait_for_fills(second, symbol="0xbrazil")
        assert [f["node_order_id"] for f in found] == [f"graph:{second}:leg:1"]
