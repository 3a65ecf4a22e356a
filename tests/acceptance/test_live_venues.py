"""The platform on live market data, end to end, as a user runs it.

Three protocol-faithful local venues (Kalshi with RSA-signed WebSocket upgrades,
Polymarket's CLOB + Gamma, Coinbase Advanced Trade) run on loopback; ``sequence
up`` is started with ``SEQUENCE_VENUES=live`` and the venues' base URLs pointed at
them — the settings a user sets to target a venue's demo environment. Then:

* the product document's example strategy, deployed unchanged with the local
  ``seq_test_`` key, discovers the venues' real-shaped markets, reads their live
  books, streams prices and rests (then cancels) paper orders;
* a crossing paper order walks the live Coinbase book level by level: its fills
  are the venue's own levels;
* ``/v1/venues``, ``/v1/health`` and ``/metrics`` report each venue as live and
  connected;
* ``sequence market record --venues live`` records a live session that
  ``sequence up --replay`` can play back.
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

from sequence.market.recording import RecordingReader
from tests.acceptance.harness import EXAMPLES, SEED_TOML, Platform, clean_env, events, only
from tests.venues.coinbase import FakeCoinbase
from tests.venues.harness import FakeServer
from tests.venues.kalshi import FakeKalshi
from tests.venues.polymarket import FakePolymarket

pytestmark = pytest.mark.slow

KEY_ID = "0b5e2c6a-live-acceptance"


class Venues:
    """The three local venues and the environment that points the platform at them."""

    def __init__(self, root: Path) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.key_file = root / "kalshi.pem"
        self.key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
        self.kalshi = FakeKalshi(combos=50)
        self.kalshi.add_key(KEY_ID, key.public_key())
        self.polymarket = FakePolymarket()
        self.coinbase = FakeCoinbase()
        self.servers = {"kalshi": FakeServer(self.kalshi.app), "polymarket": self.polymarket.serve(),
                        "coinbase": FakeServer(self.coinbase.app)}
        for server in self.servers.values():
            if not server._thread.is_alive():
                server.start()

    def env(self) -> dict[str, str]:
        k, p, c = (self.servers[v] for v in ("kalshi", "polymarket", "coinbase"))
        return {
            "SEQUENCE_VENUES": "live",
            "SEQUENCE_KALSHI_API_URL": k.url + "/trade-api/v2",
            "SEQUENCE_KALSHI_WS_URL": k.ws_url + "/trade-api/ws/v2",
            "SEQUENCE_KALSHI_KEY_ID": KEY_ID,
            "SEQUENCE_KALSHI_PRIVATE_KEY_FILE": str(self.key_file),
            "SEQUENCE_POLYMARKET_API_URL": p.url,
            "SEQUENCE_POLYMARKET_GAMMA_URL": p.url + "/gamma",
            "SEQUENCE_POLYMARKET_WS_URL": p.ws_url + "/ws/market",
            "SEQUENCE_COINBASE_API_URL": c.url + "/api/v3/brokerage",
            "SEQUENCE_COINBASE_WS_URL": c.ws_url,
        }

    def close(self) -> None:
        for server in self.servers.values():
            server.stop()


@pytest.fixture(scope="module")
def venues(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Venues]:
    v = Venues(tmp_path_factory.mktemp("venues"))
    try:
        yield v
    finally:
        v.close()


@pytest.fixture(scope="module")
def platform(venues: Venues, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    p = Platform(tmp_path_factory.mktemp("live-platform"))
    p.env.update(venues.env())
    p.start()
    try:
        yield p
    finally:
        p.close()


def _test_key(platform: Platform) -> str:
    import tomllib

    cfg = tomllib.loads((platform.home / ".config" / "sequence" / "config.toml").read_text())
    key = cfg["test_api_key"]
    assert key.startswith("seq_test_")
    return str(key)


def _wait_listed(platform: Platform, timeout: float = 60.0) -> dict[str, Any]:
    """Until every live venue has listed its markets (the catalogue loads in the background)."""
    deadline = time.monotonic() + timeout
    with platform.http() as http:
        while True:
            venues = {v["venue"]: v["market"] for v in http.get("/v1/venues").json()["venues"]}
            if all(m.get("markets", 0) > 0 for m in venues.values()):
                return venues
            assert time.monotonic() < deadline, f"venues not listed: {venues}\n{platform.up_log()}"
            time.sleep(0.2)


def test_the_products_example_runs_unchanged_on_live_books_with_a_test_key(
        platform: Platform, venues: Venues, tmp_path: Path) -> None:
    listed = _wait_listed(platform)
    assert all(m["mode"] == "live" for m in listed.values()), listed
    assert listed["kalshi"]["note"] in (None, ""), listed  # signed WebSocket, not REST polling

    folder = tmp_path / "my-strategy"
    folder.mkdir()
    (folder / "main.py").write_bytes((EXAMPLES / "hosted_strategy_prediction.py").read_bytes())
    (folder / "Sequence.toml").write_text(SEED_TOML)
    test_env = {**platform.env, "SEQUENCE_API_KEY": _test_key(platform)}
    out = platform.cli("strategy", "deploy", str(folder), "--start", env=test_env).stdout
    assert "deployed" in out, out

    raw, recs = platform.follow("e2e-pred-test", timeout=120)
    context = f"\n--- logs ---\n{raw}\n--- sequence up ---\n{platform.up_log()}"
    assert not events(recs, "crash") and not events(recs, "fatal"), context

    # It found the local venues' markets (the fakes' tickers and token ids, not the simulators').
    disc = only(recs, "discovery_done")
    kalshi_markets = venues.servers["kalshi"].call(lambda: set(venues.kalshi.markets))
    assert disc["kalshi_slug"] in kalshi_markets, context
    poly_slugs = venues.servers["polymarket"].call(
        lambda: {s for e in venues.polymarket.events for s in (e.slug, *(m.slug for m in e.markets))})
    assert disc["polymarket_slug"] in poly_slugs, context

    # The levels it walked are the venues' live books.
    levels = events(recs, "book_level")
    for venue in ("kalshi", "polymarket"):
        assert any(lv["venue"] == venue and lv["side"] == "bid" for lv in levels), f"no {venue} bids{context}"
    assert any(isinstance(m.get("bid"), (int, float)) and m["bid"] > 0 for m in events(recs, "ws_msg")), context

    statuses = events(recs, "graph_status")
    assert len(statuses) == 2 and all(s["status"] == "active" for s in statuses), context
    assert len(events(recs, "graph_cancelled")) == 2, context
    assert recs[-1]["event"] == "done", context
    assert platform.inspect("e2e-pred-test")["status"] == "stopped"

    with platform.http() as http:
        for s in statuses:
            g = http.get(f"/v1/graphs/{s['graph_id']}").json()
            assert g["status"] == "cancelled" and g["sandbox"] is True, g  # a seq_test_ key: paper


def test_a_crossing_paper_order_walks_the_live_coinbase_book(platform: Platform, venues: Venues) -> None:
    _wait_listed(platform)
    server = venues.servers["coinbase"]
    headers = {"Authorization": f"Bearer {_test_key(platform)}"}
    with httpx.Client(base_url=platform.url, headers=headers, timeout=30) as http:
        q = http.get("/v1/quotes", params={"symbol": "BTC-USD", "depth": 5})
        assert q.status_code == 200, q.text
        # The quote is the venue's book, level for level.
        book = server.call(lambda: venues.coinbase.book_strings("BTC-USD"))
        asks = [(Decimal(p), Decimal(s)) for p, s in book["asks"][:3]]
        assert [Decimal(str(lv["price"])) for lv in q.json()["asks"][:3]] == [p for p, _ in asks]

        # Buy through the first two ask levels, limit at the third: two levels fill, the rest rests.
        half = (asks[1][1] / 2).quantize(Decimal("1e-8"))
        qty = asks[0][1] + half
        node = {"node_id": "leg", "symbol": "BTC-USD", "side": "buy", "qty": float(qty), "venue": "coinbase",
                "instrument_type": "spot", "limit_price": float(asks[1][0])}
        r = http.post("/v1/graphs", json={"nodes": [node]})
        assert r.status_code in (200, 201), r.text
        gid = r.json()["graph_id"]
        deadline = time.monotonic() + 10
        while True:
            fills = [f for f in http.get("/v1/fills", params={"limit": 50}).json()["fills"] if f["graph_id"] == gid]
            if sum(Decimal(str(f["qty"])) for f in fills) >= qty - Decimal("1e-8") or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert all(f["sandbox"] is True for f in fills), fills
    by_price = sorted((Decimal(str(f["price"])), Decimal(str(f["qty"]))) for f in fills)
    assert [p for p, _ in by_price] == [asks[0][0], asks[1][0]], (fills, asks)
    assert by_price == [(asks[0][0], asks[0][1]), (asks[1][0], half)], (fills, asks)


def test_venue_status_shows_each_live_connection(platform: Platform) -> None:
    listed = _wait_listed(platform)
    for venue, m in listed.items():
        assert m["mode"] == "live" and m["connected"] is True, (venue, m)
        assert m["markets"] > 0 and "private_key" not in str(m), (venue, m)
    health = httpx.get(platform.url + "/v1/health", timeout=10).json()
    assert {v: s["mode"] for v, s in health["venues"].items()} == dict.fromkeys(listed, "live"), health
    assert all(set(s) == {"mode", "state", "connected", "last_message_age_s"} for s in health["venues"].values())
    metrics = httpx.get(platform.url + "/metrics", timeout=10).text
    for venue in listed:
        assert f'sequence_venue_connected{{mode="live",venue="{venue}"}} 1.0' in metrics, metrics


def test_market_record_records_a_live_session_for_replay(venues: Venues, tmp_path: Path) -> None:
    import subprocess

    from tests.acceptance.harness import SEQUENCE

    out = tmp_path / "live.jsonl"
    env = clean_env(tmp_path / "home", {**venues.env(), "SEQUENCE_VENUES": "coinbase=live,kalshi=off,polymarket=off"})
    r = subprocess.run([str(SEQUENCE), "market", "record", "--out", "live.jsonl", "--top", "2", "--duration", "2"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "wrote live.jsonl" in r.stdout, r.stdout
    reader = RecordingReader(out)
    try:
        products = {m.book_symbol for m in reader.catalogue}
        assert len(products) == 2 and {m.venue for m in reader.catalogue} == {"coinbase"}, products
        # The books start as the venue's, so a replay starts where the session did.
        assert all(reader.books[p].top()[0] is not None for p in products), products
    finally:
        reader.close()

    # Bad input: a clear message, no traceback.
    bad = subprocess.run([str(SEQUENCE), "market", "record", "--out", "x.jsonl", "--venues", "kalshi=real"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr, bad.stderr
    assert "kalshi=real" in bad.stderr + bad.stdout
