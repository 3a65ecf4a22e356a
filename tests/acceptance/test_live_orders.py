"""Real orders end to end, as a user does it: ``sequence up --venues live`` against the local
venue servers, ``sequence connect`` with venue keys (checked with the venue before they are
sealed), graphs with a ``seq_live_`` key that reach the venue and fill there, risk limits and
the kill switch — and a ``seq_test_`` key that sends nothing to any venue.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from eth_account import Account

from tests.acceptance.harness import Platform
from tests.acceptance.test_live_venues import Venues

pytestmark = pytest.mark.slow


class Live:
    """The platform on the three local venues, with this client's venue credentials connected."""

    def __init__(self, venues: Venues, root: Path) -> None:
        self.venues = venues
        self.platform = Platform(root)
        self.platform.env.update(venues.env())
        self.platform.env.update({
            "SEQUENCE_POLYMARKET_USER_WS_URL": venues.servers["polymarket"].ws_url + "/ws/user",
            "SEQUENCE_COINBASE_USER_WS_URL": venues.servers["coinbase"].ws_url,
        })
        self.platform.start()
        self.root = root

    def http(self, key: str | None = None) -> httpx.Client:
        key = key or self.platform.api_key
        return httpx.Client(base_url=self.platform.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)

    def test_key(self) -> str:
        import tomllib

        cfg = tomllib.loads((self.platform.home / ".config" / "sequence" / "config.toml").read_text())
        return str(cfg["test_api_key"])

    def orders_at(self, venue: str) -> int:
        fake = {"coinbase": self.venues.coinbase, "polymarket": self.venues.polymarket,
                "kalshi": self.venues.kalshi}[venue]
        return int(self.venues.servers[venue].call(lambda: len(fake.orders)))


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    venues = Venues(tmp_path_factory.mktemp("venues"))
    try:
        lv = Live(venues, tmp_path_factory.mktemp("live-orders"))
        try:
            yield lv
        finally:
            lv.platform.close()
    finally:
        venues.close()


def _connect(live: Live, venue: str) -> str:
    """`sequence connect VENUE` with keys the local venue knows (a PEM through --set-file)."""
    server = live.venues.servers[venue]
    if venue == "kalshi":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        server.call(live.venues.kalshi.add_key, "trading-key", key.public_key())
        (live.root / "kalshi-trading.pem").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        args = ["--set", "api_key_id=trading-key", "--set-file", "private_key_pem=kalshi-trading.pem"]
    elif venue == "coinbase":
        creds = server.call(live.venues.coinbase.new_key)
        pem = live.root / "coinbase.pem"
        pem.write_text(creds["private_key_pem"])
        args = ["--set", f"api_key_name={creds['api_key_name']}", "--set-file", "private_key_pem=coinbase.pem"]
    else:
        acct = Account.create()
        given = server.call(live.venues.polymarket.register, acct.address)
        args = ["--set", f"private_key={acct.key.hex()}", *[a for k, v in given.items() for a in ("--set", f"{k}={v}")]]
    return live.platform.cli("connect", venue, *args, cwd=live.root).stdout


def _fills(http: httpx.Client, gid: str, want: Decimal, timeout: float = 15.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        fills = [f for f in http.get("/v1/fills", params={"limit": 100}).json()["fills"] if f["graph_id"] == gid]
        if sum(Decimal(str(f["qty"])) for f in fills) >= want or time.monotonic() > deadline:
            return fills
        time.sleep(0.1)


def _node(http: httpx.Client, gid: str, timeout: float = 15.0, until: Any = None) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        g = http.get(f"/v1/graphs/{gid}").json()
        node = g["nodes"][0]
        if until is None or until(node) or time.monotonic() > deadline:
            return node
        time.sleep(0.1)


def test_connect_checks_credentials_with_the_venue_before_sealing_them(live: Live) -> None:
    bad = live.platform.cli("connect", "coinbase", "--set", "api_key_name=organizations/x/apiKeys/y",
                            "--set", "private_key_pem=not a key", check=False, cwd=live.root)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr, bad.stderr
    assert "coinbase" in bad.stderr and ("refused" in bad.stderr or "cannot be used" in bad.stderr), bad.stderr
    out = _connect(live, "coinbase")
    assert "credentials sealed" in out and "coinbase accepted them: account" in out, out
    out = _connect(live, "polymarket")
    assert "polymarket accepted them: account 0x" in out, out
    out = _connect(live, "kalshi")
    assert "kalshi accepted them: account" in out and "USD" in out, out


def test_a_live_key_order_reaches_the_venue_and_fills_there(live: Live) -> None:
    server, fake = live.venues.servers["coinbase"], live.venues.coinbase
    asks = server.call(lambda: sorted(fake.books["BTC-USD"]["offer"].items())[:2])
    before = live.orders_at("coinbase")
    qty = Decimal("0.0005")
    with live.http() as http:
        r = http.post("/v1/graphs", json={"nodes": [{
            "node_id": "buy", "symbol": "BTC-USD", "side": "buy", "qty": float(qty), "venue": "coinbase",
            "instrument_type": "spot", "limit_price": float(asks[0][0])}]})
        assert r.status_code in (200, 201), r.text
        gid = r.json()["graph_id"]
        assert r.json()["sandbox"] is False
        fills = _fills(http, gid, qty)
        assert live.orders_at("coinbase") == before + 1  # one order, at the venue
        (order,) = server.call(lambda: [o for o in fake.orders.values()][-1:])
        assert order.side == "BUY" and order.filled == qty and order.product_id == "BTC-USD"
        assert [(Decimal(str(f["price"])), Decimal(str(f["qty"])), f["sandbox"]) for f in fills] == [
            (asks[0][0], qty, False)], fills
        assert _node(http, gid, until=lambda n: n["status"] == "filled")["status"] == "filled"
        pos = [p for p in http.get("/v1/positions", params={"sandbox": "false"}).json()["positions"]
               if p["symbol"] == "BTC-USD"]
        assert pos and pos[0]["net_qty"] == pytest.approx(float(qty))


def test_a_test_key_sends_nothing_to_any_venue(live: Live) -> None:
    before = {v: live.orders_at(v) for v in ("coinbase", "polymarket", "kalshi")}
    with live.http(live.test_key()) as http:
        r = http.post("/v1/graphs", json={"sandbox": False, "nodes": [{
            "node_id": "buy", "symbol": "BTC-USD", "side": "buy", "qty": 0.0005, "venue": "coinbase",
            "instrument_type": "spot", "limit_price": 200000.0}]})
        assert r.status_code in (200, 201) and r.json()["sandbox"] is True, r.text  # forced to paper
        fills = _fills(http, r.json()["graph_id"], Decimal("0.0005"))
        assert fills and all(f["sandbox"] is True for f in fills)
    time.sleep(0.5)
    assert {v: live.orders_at(v) for v in before} == before


def test_a_risk_breach_stops_the_order_before_it_leaves(live: Live) -> None:
    before = live.orders_at("coinbase")
    with live.http() as http:
        assert http.put("/v1/risk", json={"max_order_notional": 10}).status_code == 200
        try:
            r = http.post("/v1/graphs", json={"nodes": [{
                "node_id": "buy", "symbol": "BTC-USD", "side": "buy", "qty": 0.001, "venue": "coinbase",
                "instrument_type": "spot", "limit_price": 1000.0}]})  # 1.00 notional: fine
            assert r.status_code in (200, 201), r.text
            ok = r.json()["graph_id"]
            r = http.post("/v1/graphs", json={"nodes": [{
                "node_id": "buy", "symbol": "BTC-USD", "side": "buy", "qty": 0.001, "venue": "coinbase",
                "instrument_type": "spot", "limit_price": 50000.0}]})  # 50.00 > 10
            node = _node(http, r.json()["graph_id"], until=lambda n: n["status"] == "rejected")
            assert node["status"] == "rejected" and node["reason"].startswith("risk_max_order_notional"), node
            assert _node(http, ok, until=lambda n: n["status"] == "working")["status"] == "working"
            assert live.orders_at("coinbase") == before + 1  # only the order inside the limit left
            http.delete(f"/v1/graphs/{ok}")
        finally:
            http.delete("/v1/risk")


def test_the_kill_switch_cancels_working_orders_at_every_venue(live: Live) -> None:
    cb_server, cb = live.venues.servers["coinbase"], live.venues.coinbase
    pm_server, pm = live.venues.servers["polymarket"], live.venues.polymarket
    spain = pm_server.call(lambda: pm.market("Spain"))
    k_server, k = live.venues.servers["kalshi"], live.venues.kalshi
    ticker = k_server.call(lambda: next(m.ticker for m in k.open_markets() if m.yes and m.no
                                        and m.structure == "linear_cent"))
    gids = []
    with live.http() as http:
        assert http.put("/v1/risk", json={"max_open_orders": 100, "max_orders_per_second": 100}).status_code == 200
        try:
            for i in range(6):
                r = http.post("/v1/graphs", json={"nodes": [{
                    "node_id": "rest", "symbol": "BTC-USD", "side": "buy", "qty": 0.001, "venue": "coinbase",
                    "instrument_type": "spot", "limit_price": 1000.0 + i}]})
                gids.append(r.json()["graph_id"])
                r = http.post("/v1/graphs", json={"nodes": [{
                    "node_id": "rest", "symbol": spain.yes, "side": "buy", "qty": 10, "venue": "polymarket",
                    "instrument_type": "prediction", "limit_price": 0.02}]})
                assert r.status_code in (200, 201), r.text
                gids.append(r.json()["graph_id"])
                if i < 3:  # Kalshi's basic tier: 10 writes a second
                    r = http.post("/v1/graphs", json={"nodes": [{
                        "node_id": "rest", "symbol": f"{ticker}-YES", "side": "buy", "qty": 2, "venue": "kalshi",
                        "instrument_type": "prediction", "limit_price": 0.01}]})
                    assert r.status_code in (200, 201), r.text
                    gids.append(r.json()["graph_id"])
            for gid in gids:
                assert _node(http, gid, until=lambda n: n["status"] == "working")["status"] == "working", gid
            time.sleep(0.5)  # the acks (venue order ids) land
            r = http.post("/v1/kill")
            assert r.status_code == 200, r.text
            report = r.json()
            assert report["real_orders_cancelled"] == 15 and report["not_cancelled"] == [], report
            for gid in gids:
                assert http.get(f"/v1/graphs/{gid}").json()["status"] == "cancelled"
            assert cb_server.call(lambda: [o.status for o in cb.orders.values() if o.status == "OPEN"]) == []
            assert pm_server.call(lambda: [o.id for o in pm.orders.values() if o.status == "LIVE"]) == []
            assert k_server.call(lambda: [o.order_id for o in k.orders.values() if o.status == "resting"]) == []
            before = live.orders_at("coinbase")
            r = http.post("/v1/graphs", json={"nodes": [{
                "node_id": "rest", "symbol": "BTC-USD", "side": "buy", "qty": 0.001, "venue": "coinbase",
                "instrument_type": "spot", "limit_price": 1000.0}]})
            node = _node(http, r.json()["graph_id"], until=lambda n: n["status"] == "rejected")
            assert node["reason"].startswith("kill_switch_engaged"), node
            assert live.orders_at("coinbase") == before
        finally:
            http.delete("/v1/kill")
            http.delete("/v1/risk")


BOT = """\
import json, time
from sequence_markets import Sequence
seq = Sequence()
node = seq.node(node_id="rest", symbol="BTC-USD", side="buy", qty=0.001, venue="coinbase",
                instrument_type="spot", limit_price=1000.0)
g = seq.graph([node])
print(json.dumps({"event": "placed", "graph_id": g["graph_id"], "sandbox": g.get("sandbox")}), flush=True)
while True:
    time.sleep(1)
"""


def test_stopping_a_strategy_cancels_its_real_orders_at_the_venue(live: Live, tmp_path: Path) -> None:
    folder = tmp_path / "bot"
    folder.mkdir()
    (folder / "main.py").write_text(BOT)
    (folder / "Sequence.toml").write_text('[strategy]\nname = "rester"\nruntime = "python"\n\n'
                                          '[hosted]\nentrypoint = "main.py"\n')
    with live.http() as http:
        # The kill-switch test's 16 orders may still be inside the client's one-second order-rate
        # window (default 5/s) when this strategy, deployed in ~0.1 s, places its order.
        assert http.put("/v1/risk", json={"max_orders_per_second": 100}).status_code == 200
        try:
            live.platform.deploy(folder)  # with the CLI's seq_live_ key: the strategy trades for real
            recs = live.platform.wait_for_records("rester", lambda rs: any(r.get("event") == "placed" for r in rs),
                                                  "the order placed")
            placed = next(r for r in recs if r.get("event") == "placed")
            assert placed["sandbox"] is False, placed
            gid = placed["graph_id"]
            node = _node(http, gid, until=lambda n: n["status"] == "working")
            assert node["status"] == "working", node
            time.sleep(0.5)  # the venue's ack lands
            server, fake = live.venues.servers["coinbase"], live.venues.coinbase
            assert server.call(lambda: sum(o.status == "OPEN" for o in fake.orders.values())) >= 1
            live.platform.cli("strategy", "stop", "rester")
            node = _node(http, gid, timeout=30, until=lambda n: n["status"] == "cancelled")
            assert node["status"] == "cancelled", node
        finally:
            http.delete("/v1/risk")
    assert server.call(lambda: [o.order_id for o in fake.orders.values() if o.status == "OPEN"]) == []


def test_an_order_whose_reply_is_lost_is_found_at_the_venue_not_sent_twice(live: Live) -> None:
    server, fake = live.venues.servers["coinbase"], live.venues.coinbase
    asks = server.call(lambda: sorted(fake.books["BTC-USD"]["offer"].items())[:1])
    before = live.orders_at("coinbase")
    server.call(fake.drop_next_reply, 8.0)  # the venue takes it; its answer comes after our 5 s timeout
    qty = Decimal("0.0003")
    with live.http() as http:
        r = http.post("/v1/graphs", json={"nodes": [{
            "node_id": "buy", "symbol": "BTC-USD", "side": "buy", "qty": float(qty), "venue": "coinbase",
            "instrument_type": "spot", "limit_price": float(asks[0][0])}]})
        assert r.status_code in (200, 201), r.text
        gid = r.json()["graph_id"]
        fills = _fills(http, gid, qty, timeout=40)
        node = _node(http, gid, timeout=40, until=lambda n: n["status"] == "filled")
    assert node["status"] == "filled", node
    assert [Decimal(str(f["qty"])) for f in fills] == [qty], fills  # the fill, once
    assert live.orders_at("coinbase") == before + 1  # one order at the venue, not two


def test_after_a_coordinator_restart_working_orders_are_reconciled_not_resent(live: Live) -> None:
    server, fake = live.venues.servers["coinbase"], live.venues.coinbase
    with live.http() as http:
        r = http.post("/v1/graphs", json={"nodes": [{
            "node_id": "rest", "symbol": "BTC-USD", "side": "buy", "qty": 0.002, "venue": "coinbase",
            "instrument_type": "spot", "limit_price": 1000.0}]})
        gid = r.json()["graph_id"]
        assert _node(http, gid, until=lambda n: n["status"] == "working")["status"] == "working"
    time.sleep(0.5)  # the venue's ack (its order id) lands
    before = live.orders_at("coinbase")
    oid = server.call(lambda: next(o.order_id for o in reversed(list(fake.orders.values())) if o.status == "OPEN"))
    assert live.platform.interrupt() in (0, 130)
    # While the coordinator is down, half of the order fills at the venue.
    server.call(fake.fill_resting, oid, "0.001")
    live.platform.start()
    with live.http() as http:
        node = _node(http, gid, timeout=30, until=lambda n: n["status"] == "partially_filled")
        assert node["status"] == "partially_filled" and node["filled_qty"] == pytest.approx(0.001), node
        fills = [f for f in http.get("/v1/fills", params={"limit": 100}).json()["fills"] if f["graph_id"] == gid]
        assert [(f["qty"], f["price"], f["sandbox"]) for f in fills] == [(0.001, 1000.0, False)], fills
        assert live.orders_at("coinbase") == before  # looked up, not sent again
        # Still working at the venue and here: the rest fills after the restart too.
        server.call(fake.fill_resting, oid)
        node = _node(http, gid, timeout=30, until=lambda n: n["status"] == "filled")
        assert node["status"] == "filled", node
