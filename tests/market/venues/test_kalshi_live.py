"""The Kalshi live connector against a protocol-faithful fake Kalshi (tests/venues/kalshi.py)
on loopback: discovery, books, deltas, resyncs, stalls, reconnects, rate limits, auth."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from decimal import Decimal
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from sequence.market import MarketService
from sequence.market.book import Side
from sequence.market.clock import ManualClock, RealClock
from sequence.market.events import BookReset, LevelUpdate, TickSizeChange, Trade
from sequence.market.venues.live import LIVE_VENUES, LiveConfig, live_venue
from sequence.market.venues.live.kalshi import (
    KalshiLive,
    KalshiStream,
    kalshi_headers,
    parse_event,
    parse_market,
    parse_orderbook,
    tick_of,
    ticker_of,
)
from sequence.market.venues.sim_kalshi import SimKalshi
from tests.venues.harness import FakeServer, eventually
from tests.venues.kalshi import FakeKalshi

pytestmark = pytest.mark.anyio

KEY_ID = "a952bcbe-ec3b-4b5b-b8f9-11dae589608c"


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@pytest.fixture
def fake(rsa_key: rsa.RSAPrivateKey) -> FakeKalshi:
    f = FakeKalshi(ping_s=0.1)
    f.add_key(KEY_ID, rsa_key.public_key())
    return f


@pytest.fixture
def server(fake: FakeKalshi) -> Iterator[FakeServer]:
    with FakeServer(fake.app) as s:
        yield s


def config(server: FakeServer, key: rsa.RSAPrivateKey | None, **kw: Any) -> LiveConfig:
    base: dict[str, Any] = dict(
        venue="kalshi", api_url=server.url + "/trade-api/v2", ws_url=server.ws_url + "/trade-api/ws/v2",
        key_id=KEY_ID if key is not None else None, private_key_pem=pem(key) if key is not None else None,
        stall_s=0.5, backoff_initial_s=0.05, backoff_max_s=0.2, catalogue_every_s=3600, poll_s=0.1,
    )
    base.update(kw)
    return LiveConfig(**base)


@contextlib.asynccontextmanager
async def running(server: FakeServer, key: rsa.RSAPrivateKey | None, *, page_limit: int | None = None,
                  **kw: Any) -> AsyncIterator[tuple[MarketService, KalshiLive]]:
    conn = KalshiLive(config(server, key, **kw), clock=RealClock())
    if page_limit is not None:
        conn.page_limit = page_limit
    svc = MarketService([conn], clock=RealClock())
    await svc.start()
    try:
        await eventually(lambda: conn.stats.catalogue_refreshed is not None)
        yield svc, conn
    finally:
        await svc.stop()
        svc.close()


def sym(ticker: str) -> str:
    return f"{ticker}-YES"


def book_matches(svc: MarketService, server: FakeServer, fake: FakeKalshi, *tickers: str) -> bool:
    """Every level of every book equals the fake's (YES book: bids, asks = 1 − NO bids)."""
    for t in tickers:
        q = svc.quote(sym(t), depth=100)
        f = server.call(fake.quote_levels, t)
        if q["bids"] != f["bids"] or q["asks"] != f["asks"]:
            return False
    return True


def tickers(fake: FakeKalshi, prefix: str) -> list[str]:
    return [m.ticker for m in fake.open_markets() if m.ticker.startswith(prefix)]


def two_sided(fake: FakeKalshi) -> list[str]:
    return [m.ticker for m in fake.open_markets() if m.yes and m.no]


# -- auth -----------------------------------------------------------------------------------------
def test_headers_are_rsa_pss_over_ts_method_and_path_without_query(rsa_key: rsa.RSAPrivateKey) -> None:
    h = kalshi_headers(KEY_ID, rsa_key, "get", "/trade-api/v2/portfolio/orders?limit=5", ts_ms=1703123456789)
    assert h["KALSHI-ACCESS-KEY"] == KEY_ID and h["KALSHI-ACCESS-TIMESTAMP"] == "1703123456789"
    sig = base64.b64decode(h["KALSHI-ACCESS-SIGNATURE"])
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
    rsa_key.public_key().verify(sig, b"1703123456789GET/trade-api/v2/portfolio/orders", pss, hashes.SHA256())
    # A whole URL and a PEM string work too; the query is never signed.
    h2 = kalshi_headers(KEY_ID, pem(rsa_key), "GET", "wss://external-api-ws.kalshi.com/trade-api/ws/v2?x=1",
                        ts_ms=5)
    rsa_key.public_key().verify(base64.b64decode(h2["KALSHI-ACCESS-SIGNATURE"]), b"5GET/trade-api/ws/v2", pss,
                                hashes.SHA256())
    now = int(h2["KALSHI-ACCESS-TIMESTAMP"])
    assert now == 5
    assert abs(int(kalshi_headers(KEY_ID, rsa_key, "GET", "/x")["KALSHI-ACCESS-TIMESTAMP"]) - time.time() * 1000) < 60_000


async def test_fake_refuses_what_kalshi_refuses(server: FakeServer, fake: FakeKalshi, rsa_key: rsa.RSAPrivateKey,
                                                other_key: rsa.RSAPrivateKey) -> None:
    ws_url = server.ws_url + "/trade-api/ws/v2"
    path = "/trade-api/ws/v2"
    now = int(time.time() * 1000)
    refused = {
        "no headers": {},
        "another key's signature": kalshi_headers(KEY_ID, other_key, "GET", path),
        "unknown key": kalshi_headers("nobody", rsa_key, "GET", path),
        "stale timestamp": kalshi_headers(KEY_ID, rsa_key, "GET", path, ts_ms=now - 60_000),
        "signed POST": kalshi_headers(KEY_ID, rsa_key, "POST", path),
    }
    for why, headers in refused.items():
        with pytest.raises(InvalidStatus) as exc:
            async with connect(ws_url, additional_headers=headers):
                pass
        assert exc.value.response.status_code == 401, why
    # A signature that covers the query string is refused; the same URL signed without it is not.
    raw = kalshi_headers(KEY_ID, rsa_key, "GET", path)
    ts = raw["KALSHI-ACCESS-TIMESTAMP"]
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
    with_query = base64.b64encode(rsa_key.sign(f"{ts}GET{path}?v=1".encode(), pss, hashes.SHA256())).decode()
    with pytest.raises(InvalidStatus) as exc:
        async with connect(ws_url + "?v=1", additional_headers={**raw, "KALSHI-ACCESS-SIGNATURE": with_query}):
            pass
    assert exc.value.response.status_code == 401
    async with connect(ws_url + "?v=1", additional_headers=kalshi_headers(KEY_ID, rsa_key, "GET", ws_url + "?v=1")) as ws:
        await ws.send('{"id": 1, "cmd": "list_subscriptions"}')
        assert '"type":"ok"' in str(await ws.recv())
    assert len(fake.ws_refused) == len(refused) + 1
    assert "stale KALSHI-ACCESS-TIMESTAMP" in fake.ws_refused and "bad signature" in fake.ws_refused

    api = server.url + "/trade-api/v2"
    async with httpx.AsyncClient() as http:
        assert (await http.get(api + "/portfolio/balance")).status_code == 401
        signed = kalshi_headers(KEY_ID, rsa_key, "GET", "/trade-api/v2/portfolio/balance?subaccount=0")
        assert (await http.get(api + "/portfolio/balance?subaccount=0", headers=signed)).status_code == 200
        # Filter statuses are not returned statuses; limits are the documented ones.
        r = await http.get(api + "/markets", params={"status": "active"})
        assert r.status_code == 400 and "invalid status" in r.json()["error"]["message"]
        assert (await http.get(api + "/markets", params={"limit": 1001})).status_code == 400
        assert (await http.get(api + "/events", params={"limit": 201})).status_code == 400
        ticker = fake.open_markets()[0].ticker
        assert (await http.get(f"{api}/markets/{ticker}/orderbook", params={"depth": 101})).status_code == 400
        # Too many requests: a 429 without Retry-After.
        server.call(fake.throttle, 1)
        r = await http.get(api + "/markets")
        assert r.status_code == 429 and "retry-after" not in r.headers
        # Unfiltered, the listing is flooded with combo markets.
        r = await http.get(api + "/markets", params={"limit": 200, "status": "open"})
        assert all(m["ticker"].startswith("KXMVE") for m in r.json()["markets"])


async def test_websocket_commands_answer_as_documented(server: FakeServer, fake: FakeKalshi,
                                                       rsa_key: rsa.RSAPrivateKey) -> None:
    path = "/trade-api/ws/v2"
    t1, t2 = two_sided(fake)[:2]
    async with connect(server.ws_url + path, additional_headers=kalshi_headers(KEY_ID, rsa_key, "GET", path)) as ws:
        async def ask(cmd: dict[str, Any]) -> dict[str, Any]:
            await ws.send(json.dumps(cmd))
            return json.loads(await ws.recv())  # type: ignore[no-any-return]

        assert (await ask({"id": 1, "cmd": "nope"}))["msg"]["code"] == 5
        assert (await ask({"id": 2, "cmd": "subscribe"}))["msg"]["code"] == 2
        assert (await ask({"id": 3, "cmd": "subscribe", "params": {}}))["msg"]["code"] == 3
        assert (await ask({"id": 4, "cmd": "subscribe", "params": {"channels": ["nope"]}}))["msg"]["code"] == 8
        assert (await ask({"id": 5, "cmd": "subscribe", "params": {"channels": ["orderbook_delta"]}}))["msg"]["code"] == 14
        err = await ask({"id": 6, "cmd": "subscribe", "params": {"channels": ["orderbook_delta"],
                                                                 "market_tickers": ["NOPE-1"]}})
        assert err["msg"]["code"] == 16 and err["msg"]["market_ticker"] == "NOPE-1"
        sub = await ask({"id": 7, "cmd": "subscribe", "params": {"channels": ["orderbook_delta"],
                                                                 "market_tickers": [t1]}})
        assert sub == {"id": 7, "type": "subscribed", "msg": {"channel": "orderbook_delta", "sid": 1}}
        snap = json.loads(await ws.recv())
        assert snap["type"] == "orderbook_snapshot" and snap["sid"] == 1 and snap["seq"] == 1
        assert snap["msg"]["market_ticker"] == t1
        prices = [float(p) for p, _ in snap["msg"]["yes_dollars_fp"]]
        assert prices == sorted(prices)  # ascending, best last
        assert (await ask({"id": 8, "cmd": "update_subscription", "params": {
            "sids": [1, 2], "market_tickers": [t2], "action": "add_markets"}}))["msg"]["code"] == 12
        assert (await ask({"id": 9, "cmd": "update_subscription", "params": {
            "sids": [1], "market_tickers": [t2]}}))["msg"]["code"] == 15
        assert (await ask({"id": 10, "cmd": "update_subscription", "params": {
            "sids": [1], "market_tickers": [t2], "action": "nope"}}))["msg"]["code"] == 13
        assert (await ask({"id": 11, "cmd": "update_subscription", "params": {
            "sids": [9], "market_tickers": [t2], "action": "add_markets"}}))["msg"]["code"] == 7
        ok = await ask({"id": 12, "cmd": "update_subscription", "params": {
            "sids": [1], "market_tickers": [t2], "action": "add_markets"}})
        assert ok == {"id": 12, "sid": 1, "seq": 1, "type": "ok", "msg": {"market_tickers": [t1, t2]}}
        snap2 = json.loads(await ws.recv())
        assert snap2["seq"] == 2 and snap2["msg"]["market_ticker"] == t2
        assert (await ask({"id": 13, "cmd": "unsubscribe", "params": {}}))["msg"]["code"] == 4
        assert (await ask({"id": 14, "cmd": "unsubscribe", "params": {"sids": [1]}})) == {
            "id": 14, "sid": 1, "seq": 2, "type": "unsubscribed"}


# -- parsers ----------------------------------------------------------------------------------------
ROW = {
    "ticker": "KXHIGHNY-26SEP01-T90", "event_ticker": "KXHIGHNY-26SEP01", "market_type": "binary",
    "title": "Will the high temp in NYC be >90° on Sep 1, 2026?", "yes_sub_title": "91° or above",
    "status": "active", "close_time": "2026-09-02T04:59:00Z",
    "yes_bid_dollars": "0.4100", "yes_ask_dollars": "0.4300", "no_bid_dollars": "0.5700",
    "no_ask_dollars": "0.5900", "last_price_dollars": "0.4200", "volume_fp": "12345.00",
    "open_interest_fp": "800.00", "liquidity_dollars": "5120.5000",
    "price_level_structure": "tapered_deci_cent",
    "price_ranges": [{"start": "0.0000", "end": "0.1000", "step": "0.0010"},
                     {"start": "0.1000", "end": "0.9000", "step": "0.0100"},
                     {"start": "0.9000", "end": "1.0000", "step": "0.0010"}],
}


def test_parse_market_builds_the_simulators_shape() -> None:
    spec = parse_market(ROW)
    sim = SimKalshi(ManualClock()).catalogue().markets[0]
    assert spec.book_symbol == "KXHIGHNY-26SEP01-T90-YES" and spec.yes_token_id == spec.book_symbol
    assert spec.no_token_id == "KXHIGHNY-26SEP01-T90-NO" and spec.aliases == ("KXHIGHNY-26SEP01-T90",)
    assert spec.symbols == (spec.yes_token_id, spec.no_token_id, "KXHIGHNY-26SEP01-T90")
    assert set(spec.extra) == set(sim.extra)
    assert (spec.venue, spec.instrument_type, spec.price_scale, spec.size_scale) == (
        sim.venue, sim.instrument_type, sim.price_scale, sim.size_scale)
    assert (spec.min_notional, spec.min_order_size) == (sim.min_notional, sim.min_order_size)
    assert spec.tick == 10  # the finest step: 0.001 at the tails
    assert spec.extra["price_ranges"] == ROW["price_ranges"]
    assert spec.active and spec.extra["status"] == "active"
    assert (spec.listed_best_bid, spec.listed_best_ask, spec.listed_liquidity) == (0.41, 0.43, 5120.5)
    assert spec.volume == 12345.0 and spec.outcome_name == "91° or above"
    empty = parse_market({**ROW, "yes_bid_dollars": "0.0000", "yes_ask_dollars": "1.0000", "status": "inactive"})
    assert empty.listed_best_bid is None and empty.listed_best_ask is None and not empty.active
    ev = parse_event({"title": "Highest temperature in NYC", "category": "Climate"}, "KXHIGHNY-26SEP01",
                     [spec, replace(spec, slug="B", close_time="2026-09-03T00:00:00Z")])
    assert ev.markets == (spec.slug, "B") and ev.multi_outcome and ev.category == "Climate"
    assert ev.close_time == "2026-09-03T00:00:00Z"


def test_tick_from_price_ranges_and_structures() -> None:
    assert tick_of([{"start": "0.00", "end": "1.00", "step": "0.01"}]) == 100
    assert tick_of(None, "linear_cent") == 100
    assert tick_of(None, "deci_cent") == 10
    assert tick_of(None, "tapered_deci_cent") == 10
    assert tick_of(None, "center_deci_edge_centi_cent") == 1
    assert tick_of(None, "center_half_edge_quint_cent") == 20
    assert tick_of(None, "something_new") == 100
    assert parse_market({**ROW, "price_ranges": None, "price_level_structure": "deci_cent"}).extra[
        "price_ranges"] == [{"start": "0.00", "end": "1.00", "step": "0.001"}]


def test_orderbook_is_the_yes_book_best_first() -> None:
    body = {"orderbook_fp": {"yes_dollars": [["0.3900", "5.00"], ["0.4100", "10.00"]],
                             "no_dollars": [["0.5500", "7.00"], ["0.5700", "20.00"]]}}
    reset = parse_orderbook("X-YES", body, 1, tick=100)
    assert reset.bids == ((4100, 1000), (3900, 500))  # YES bids, best first
    assert reset.asks == ((4300, 2000), (4500, 700))  # 1 − NO bids, best first
    assert reset.tick == 100
    one_sided = parse_orderbook("X-YES", {"orderbook_fp": {"yes_dollars": [], "no_dollars": [["0.9900", "1.00"]]}}, 1)
    assert one_sided.bids == () and one_sided.asks == ((100, 100),)
    assert parse_orderbook("X-YES", {"orderbook_fp": {"yes_dollars": None, "no_dollars": None}}, 1).asks == ()


def test_stream_snapshot_deltas_gap_and_subscriptions() -> None:
    s = KalshiStream(tick=lambda symbol: 100, now_ms=lambda: 7)
    book_cmd, trade_cmd = s.sync({"A", "B"})
    assert book_cmd == {"id": 1, "cmd": "subscribe", "params": {"channels": ["orderbook_delta"],
                                                                 "market_tickers": ["A", "B"]}}
    assert trade_cmd["params"] == {"channels": ["trade"], "market_tickers": ["A", "B"]}
    assert s.sync({"A", "B", "C"}) == []  # one command per channel in flight; the reply syncs again
    s.on_message({"id": 1, "type": "subscribed", "msg": {"channel": "orderbook_delta", "sid": 4}})
    events, resync = s.on_message({"type": "orderbook_snapshot", "sid": 4, "seq": 1, "msg": {
        "market_ticker": "A", "yes_dollars_fp": [["0.4000", "3.00"]], "no_dollars_fp": [["0.5500", "2.00"]]}})
    assert events == [BookReset(7, "A-YES", ((4000, 300),), ((4500, 200),), 100)] and not resync
    # A side with no bids may be left out of a snapshot.
    events, _ = s.on_message({"type": "orderbook_snapshot", "sid": 4, "seq": 2, "msg": {"market_ticker": "B"}})
    assert events == [BookReset(7, "B-YES", (), (), 100)]
    ev = s.delta({"type": "orderbook_delta", "sid": 4, "seq": 3, "msg": {
        "market_ticker": "A", "price_dollars": "0.4000", "delta_fp": "-1.00", "side": "yes", "ts_ms": 99}})
    assert ev == LevelUpdate(99, "A-YES", Side.BID, 4000, 200)  # absolute: 3 − 1
    ev = s.delta({"type": "orderbook_delta", "sid": 4, "seq": 4, "msg": {
        "market_ticker": "A", "price_dollars": "0.5500", "delta_fp": "-2.00", "side": "no"}})
    assert ev == LevelUpdate(7, "A-YES", Side.ASK, 4500, 0)  # removed
    # A message of another subscription is not ours.
    assert s.delta({"type": "orderbook_delta", "sid": 9, "seq": 1, "msg": {}}) is None
    # seq 6 after 4: a message was lost. Both books are discarded and re-snapshotted.
    assert s.delta({"type": "orderbook_delta", "sid": 4, "seq": 6, "msg": {
        "market_ticker": "A", "price_dollars": "0.4000", "delta_fp": "1.00", "side": "yes"}}) is None
    assert s.outbox == [{"id": 3, "cmd": "update_subscription", "params": {
        "sids": [4], "market_tickers": ["A", "B"], "action": "get_snapshot"}}]
    assert s.delta({"type": "orderbook_delta", "sid": 4, "seq": 7, "msg": {
        "market_ticker": "A", "price_dollars": "0.4000", "delta_fp": "1.00", "side": "yes"}}) is None
    s.on_message({"id": 3, "sid": 4, "seq": 7, "type": "ok", "msg": {"market_tickers": ["A", "B"]}})
    events, resync = s.on_message({"type": "orderbook_snapshot", "sid": 4, "seq": 8, "msg": {
        "market_ticker": "A", "yes_dollars_fp": [["0.4000", "4.00"]]}})
    assert resync and events == [BookReset(7, "A-YES", ((4000, 400),), (), 100)]
    # Releasing one market deletes it; releasing the last one unsubscribes.
    s.on_message({"id": 2, "type": "subscribed", "msg": {"channel": "trade", "sid": 5}})
    cmds = s.sync({"A"})
    assert {c["params"]["action"] for c in cmds} == {"delete_markets"}
    assert all(c["params"]["market_tickers"] == ["B"] for c in cmds)
    for c in cmds:
        s.on_message({"id": c["id"], "sid": c["params"]["sids"][0], "seq": 8, "type": "ok",
                      "msg": {"market_tickers": ["A"]}})
    cmds = s.sync(set())
    assert [c["cmd"] for c in cmds] == ["unsubscribe", "unsubscribe"]


def test_stream_trades_lifecycle_and_refusals() -> None:
    s = KalshiStream(now_ms=lambda: 7)
    book_cmd, trade_cmd = s.sync({"A", "GONE"})
    s.on_message({"id": trade_cmd["id"], "type": "subscribed", "msg": {"channel": "trade", "sid": 2}})
    events, _ = s.on_message({"type": "trade", "sid": 2, "seq": 1, "msg": {
        "trade_id": "t", "market_ticker": "A", "yes_price_dollars": "0.3600", "no_price_dollars": "0.6400",
        "count_fp": "5.00", "taker_outcome_side": "yes", "taker_side": "yes", "ts": 1, "ts_ms": 1234}})
    assert events == [Trade(1234, "A-YES", Side.ASK, 3600, 500)]  # a YES taker lifts the YES asks
    events, _ = s.on_message({"type": "trade", "sid": 2, "seq": 2, "msg": {
        "market_ticker": "A", "yes_price_dollars": "0.3500", "count_fp": "1.00", "taker_book_side": "ask"}})
    assert events == [Trade(7, "A-YES", Side.BID, 3500, 100)]
    s.on_message({"type": "market_lifecycle_v2", "sid": 3, "msg": {
        "market_ticker": "A", "event_type": "price_level_structure_updated", "price_level_structure": "deci_cent"}})
    assert s.lifecycle == [{"market_ticker": "A", "event_type": "price_level_structure_updated",
                            "price_level_structure": "deci_cent"}]
    # The venue no longer has one market: it is left out, the rest subscribed.
    s.on_message({"id": book_cmd["id"], "type": "error", "msg": {"code": 16, "msg": "Market not found",
                                                                "market_ticker": "GONE"}})
    assert "GONE" in s.refused
    again, drop = s.sync({"A", "GONE"})
    assert again["params"] == {"channels": ["orderbook_delta"], "market_tickers": ["A"]}
    assert drop["params"] == {"sids": [2], "market_tickers": ["GONE"], "action": "delete_markets"}
    with pytest.raises(Exception, match="error 17"):
        s.on_message({"type": "error", "msg": {"code": 17, "msg": "Internal error"}})


def test_registry_and_rate_limit_defaults(rsa_key: rsa.RSAPrivateKey) -> None:
    assert LIVE_VENUES["kalshi"].endswith(":KalshiLive")
    cfg = LiveConfig(venue="kalshi", api_url="http://x/trade-api/v2", ws_url="ws://x/trade-api/ws/v2")
    conn = live_venue(cfg, RealClock())
    assert isinstance(conn, KalshiLive)
    assert (conn.limiter.rate, conn.limiter.burst) == (20.0, 20)  # Kalshi Basic: 20 reads/s
    mine = KalshiLive(replace(cfg, reads_per_s=5.0, burst=3), clock=RealClock())
    assert (mine.limiter.rate, mine.limiter.burst) == (5.0, 3)
    assert ticker_of("KXA-1-YES") == "KXA-1" and conn.ws_path == "/trade-api/ws/v2"


# -- against the fake venue ------------------------------------------------------------------------------
async def test_discovery_is_paged_filtered_and_shaped_like_the_simulator(
        server: FakeServer, fake: FakeKalshi, rsa_key: rsa.RSAPrivateKey) -> None:
    async with running(server, rsa_key, page_limit=7) as (svc, conn):
        open_markets = fake.open_markets()
        listed = {m.slug for m in svc.catalogue.markets}
        assert listed == {m.ticker for m in open_markets}  # no combos, no settled markets
        calls = [q for p, q in fake.requests if p.endswith("/markets")]
        assert len(calls) == -(-len(open_markets) // 7)
        assert all(q["status"] == "open" and q["mve_filter"] == "exclude" and q["limit"] == "7" for q in calls)
        assert "cursor" not in calls[0] and all("cursor" in q for q in calls[1:])
        fed = next(m for m in open_markets if m.ticker.startswith("KXFED"))
        spec = svc.market(fed.ticker)
        assert spec.tick == 10 and spec.extra["price_level_structure"] == "tapered_deci_cent"
        assert spec.extra["price_ranges"] == fed.ranges
        assert svc.market(tickers(fake, "KXCPIYOY")[0]).tick == 10
        assert svc.market(tickers(fake, "KXBTCD")[0]).tick == 100
        # Events and their titles; listings show the venue's figures until a book is live.
        ev = fake.events[fed.event_ticker]
        events = {e.slug: e for e in svc.catalogue.events}
        assert events[ev.event_ticker].title == ev.title and events[ev.event_ticker].category == "Economics"
        row = next(r for r in svc.markets(venue="kalshi", limit=500)["markets"] if r["slug"] == fed.ticker)
        venue_row = fed.row()
        assert row["best_bid"] == (float(venue_row["yes_bid_dollars"]) or None)
        assert row["best_ask"] == (float(venue_row["yes_ask_dollars"]) if float(venue_row["yes_ask_dollars"]) < 1
                                   else None)
        assert row["tick_size"] == 0.001 and row["price_ranges"] == fed.ranges
        assert conn.status()["markets"] == len(open_markets)


async def test_many_events_come_from_the_paged_event_listing(server: FakeServer, fake: FakeKalshi,
                                                             rsa_key: rsa.RSAPrivateKey) -> None:
    few = KalshiLive(config(server, rsa_key, max_markets=9), clock=RealClock())
    many = KalshiLive(config(server, rsa_key), clock=RealClock())
    many.events_page_limit, many.events_one_by_one = 2, 3
    try:
        markets, events = await few.fetch_catalogue()
        assert len(markets) == 9 and {e.slug for e in events} == {m.event_slug for m in markets}
        one_by_one = [p for p, _ in fake.requests if "/events/" in p]
        assert len(one_by_one) == len(events)  # few events: fetched one by one
        fake.requests.clear()
        markets, events = await many.fetch_catalogue()
        paged = [q for p, q in fake.requests if p.endswith("/events")]
        assert len(paged) >= 3 and all(q["status"] == "open" and q["limit"] == "2" for q in paged)
        assert not [p for p, _ in fake.requests if "/events/" in p]
        assert {e.slug for e in events} == {m.event_ticker for m in fake.open_markets()}
        assert all(e.title == fake.events[e.slug].title for e in events)
    finally:
        await few.stop()
        await many.stop()


async def test_snapshot_then_deltas_keep_the_book_equal(server: FakeServer, fake: FakeKalshi,
                                                        rsa_key: rsa.RSAPrivateKey) -> None:
    t = two_sided(fake)[0]
    async with running(server, rsa_key) as (svc, conn):
        assert await svc.wait_ready(sym(t), 5)
        assert book_matches(svc, server, fake, t)
        assert conn.status()["state"] == "connected" and conn.status()["note"] is None
        m = fake.markets[t]
        best_yes, best_no = max(m.yes), max(m.no)
        await server.acall(fake.move, t, "yes", best_yes, "7")  # more at the best bid
        await server.acall(fake.set_level, t, "no", best_no, 0)  # the best NO bid (YES ask) goes
        await server.acall(fake.set_level, t, "yes", best_yes + fake_tick(fake, t), "3.00")  # a new best bid
        await eventually(lambda: book_matches(svc, server, fake, t))
        q = svc.quote(sym(t))
        assert q["nbbo"]["bid"] == float(best_yes + fake_tick(fake, t))
        # The NO token reads the same book mirrored.
        no = svc.quote(f"{t}-NO", depth=100)
        assert [lv["price"] for lv in no["bids"]] == [round(1 - lv["price"], 4) for lv in q["asks"][: len(no["bids"])]]
        # Only the book someone asked for is subscribed on the venue.
        assert server.call(fake.subscribed) == {t}
        assert conn.stats.resyncs == 0


def fake_tick(fake: FakeKalshi, ticker: str) -> Decimal:
    return Decimal("0.01") if fake.markets[ticker].structure == "linear_cent" else Decimal("0.001")


async def test_demand_adds_and_release_removes_markets_on_the_venue(server: FakeServer, fake: FakeKalshi,
                                                                    rsa_key: rsa.RSAPrivateKey) -> None:
    a, b = two_sided(fake)[:2]
    async with running(server, rsa_key) as (svc, _conn):
        assert await svc.wait_ready(sym(a), 5)
        assert await svc.wait_ready(sym(b), 5)
        assert server.call(fake.subscribed) == {a, b}
        assert book_matches(svc, server, fake, a, b)
        actions = [c["params"].get("action") for c in fake.commands if c.get("cmd") == "update_subscription"]
        assert "add_markets" in actions
        svc._states[sym(a)].used_at = 0.0  # idle for long: the sweep releases it, not b
        assert svc.sweep_idle() == [sym(a)]
        await eventually(lambda: server.call(fake.subscribed) == {b})
        assert any(c["params"].get("action") == "delete_markets" for c in fake.commands
                   if c.get("cmd") == "update_subscription")
        # The service's idle sweep releases the rest: the subscription goes.
        svc.idle_s = 0
        assert svc.sweep_idle() == [sym(b)]
        await eventually(lambda: server.call(fake.subscriptions, "orderbook_delta") == 0)
        assert any(c.get("cmd") == "unsubscribe" for c in fake.commands)
        # Asked for again: a fresh subscription and snapshot.
        svc.idle_s = 300
        assert await svc.wait_ready(sym(a), 5)
        assert server.call(fake.subscribed) == {a} and book_matches(svc, server, fake, a)


async def test_sequence_gap_discards_and_resnapshots(server: FakeServer, fake: FakeKalshi,
                                                     rsa_key: rsa.RSAPrivateKey) -> None:
    a, b = two_sided(fake)[:2]
    async with running(server, rsa_key) as (svc, conn):
        assert await svc.wait_ready(sym(a), 5) and await svc.wait_ready(sym(b), 5)
        ya = max(fake.markets[a].yes)
        await server.acall(fake.gap, a, "yes", ya, "999")  # lost on the way
        assert not book_matches(svc, server, fake, a)
        await server.acall(fake.move, b, "no", max(fake.markets[b].no), "1")  # the next seq reveals the gap
        await eventually(lambda: conn.stats.resyncs >= 2)  # both books of the subscription
        await eventually(lambda: book_matches(svc, server, fake, a, b))
        assert any(c["params"].get("action") == "get_snapshot" for c in fake.commands
                   if c.get("cmd") == "update_subscription")
        assert conn.stats.reconnects == 0
        await server.acall(fake.move, a, "yes", ya, "-1")  # deltas apply again afterwards
        await eventually(lambda: book_matches(svc, server, fake, a, b))


async def test_silent_stall_is_detected_and_the_socket_replaced(server: FakeServer, fake: FakeKalshi,
                                                                 rsa_key: rsa.RSAPrivateKey) -> None:
    t = two_sided(fake)[0]
    async with running(server, rsa_key) as (svc, conn):
        assert await svc.wait_ready(sym(t), 5)
        server.call(fake.stall)
        await server.acall(fake.move, t, "yes", max(fake.markets[t].yes), "5")  # not sent: silent socket
        await eventually(lambda: conn.stats.stalls >= 1 and conn.stats.reconnects >= 1)
        await eventually(lambda: conn.status()["state"] == "connected")
        await eventually(lambda: book_matches(svc, server, fake, t))
        assert fake.ws_accepted >= 2 and conn.stats.resyncs >= 1
        assert "Stalled" in (conn.stats.last_error or "")


async def test_venue_pings_keep_a_quiet_socket_alive(server: FakeServer, fake: FakeKalshi,
                                                     rsa_key: rsa.RSAPrivateKey) -> None:
    t = two_sided(fake)[0]
    async with running(server, rsa_key) as (svc, conn):
        assert await svc.wait_ready(sym(t), 5)
        start = server.call(fake.pings_sent)
        # No data for many stall windows (stall_s = 0.5, a ping every 0.1 s).
        await eventually(lambda: server.call(fake.pings_sent) >= start + 15)
        assert conn.stats.stalls == 0 and conn.stats.reconnects == 0 and fake.ws_accepted == 1


async def test_abrupt_disconnect_reconnects_and_rebuilds(server: FakeServer, fake: FakeKalshi,
                                                         rsa_key: rsa.RSAPrivateKey) -> None:
    a, b = two_sided(fake)[:2]
    async with running(server, rsa_key) as (svc, conn):
        assert await svc.wait_ready(sym(a), 5) and await svc.wait_ready(sym(b), 5)
        assert server.call(fake.disconnect) == 1
        await server.acall(fake.move, a, "yes", max(fake.markets[a].yes), "4")  # while we are away
        await server.acall(fake.clear_side, b, "no")
        await eventually(lambda: conn.stats.reconnects >= 1 and conn.status()["state"] == "connected")
        await eventually(lambda: book_matches(svc, server, fake, a, b))
        assert conn.stats.resyncs >= 2 and server.call(fake.subscribed) == {a, b}
        assert svc.quote(sym(b))["nbbo"]["ask"] is None


async def test_429_without_retry_after_is_retried(server: FakeServer, fake: FakeKalshi,
                                                  rsa_key: rsa.RSAPrivateKey) -> None:
    fake.throttle(3)
    async with running(server, rsa_key) as (svc, conn):
        assert fake.served_429 == 3 and conn.stats.throttled >= 3
        assert len(svc.catalogue.markets) == len(fake.open_markets())
        t = two_sided(fake)[0]
        server.call(fake.throttle, 2)
        reset = await conn.fetch_book(sym(t))
        assert fake.served_429 == 5
        assert [(p / 10_000, s / 100) for p, s in reset.bids] == [
            (lv["price"], lv["size"]) for lv in server.call(fake.quote_levels, t)["bids"]]


async def test_tick_size_change_mid_session(server: FakeServer, fake: FakeKalshi,
                                            rsa_key: rsa.RSAPrivateKey) -> None:
    t = next(x for x in two_sided(fake) if fake.markets[x].structure == "linear_cent")
    async with running(server, rsa_key) as (svc, _conn):
        assert await svc.wait_ready(sym(t), 5)
        assert svc.quote(sym(t))["tick_size"] == 0.01
        await server.acall(fake.set_structure, t, "deci_cent")
        await eventually(lambda: svc.quote(sym(t))["tick_size"] == 0.001)
        spec = svc.market(sym(t))
        assert spec.tick == 10 and spec.extra["price_level_structure"] == "deci_cent"
        assert spec.extra["price_ranges"] == [{"start": "0.0000", "end": "1.0000", "step": "0.0010"}]
        best = max(fake.markets[t].yes)
        await server.acall(fake.set_level, t, "yes", best + Decimal("0.003"), "12")  # a deci-cent price
        await eventually(lambda: book_matches(svc, server, fake, t))
        # Back to cents: the off-grid bid is cancelled by the venue, the book follows.
        await server.acall(fake.set_structure, t, "linear_cent")
        await eventually(lambda: svc.quote(sym(t))["tick_size"] == 0.01)
        await eventually(lambda: book_matches(svc, server, fake, t))
        assert svc.instrument(sym(t)).tick == 100


async def test_one_sided_books(server: FakeServer, fake: FakeKalshi, rsa_key: rsa.RSAPrivateKey) -> None:
    far = next(m.ticker for m in fake.open_markets() if not m.yes and m.no)
    near = two_sided(fake)[0]
    async with running(server, rsa_key) as (svc, _conn):
        assert await svc.wait_ready(sym(far), 5)
        q = svc.quote(sym(far), depth=100)
        assert q["bids"] == [] and q["nbbo"]["bid"] is None and q["asks"]
        assert book_matches(svc, server, fake, far)
        assert await svc.wait_ready(sym(near), 5)
        await server.acall(fake.clear_side, near, "yes")
        await eventually(lambda: book_matches(svc, server, fake, near))
        assert svc.quote(sym(near))["nbbo"]["bid"] is None


async def test_trades_count_volume_and_last_price(server: FakeServer, fake: FakeKalshi,
                                                  rsa_key: rsa.RSAPrivateKey) -> None:
    t = two_sided(fake)[0]
    async with running(server, rsa_key) as (svc, _conn):
        assert await svc.wait_ready(sym(t), 5)
        await eventually(lambda: server.call(fake.subscribed, "trade") == {t})
        before = svc.markets(venue="kalshi", limit=500)["markets"]
        vol0 = next(r["volume"] for r in before if r["slug"] == t)
        price = await server.acall(fake.trade, t, "yes", "3")
        await eventually(lambda: svc.quote(sym(t))["last_trade_price"] == float(price))
        await eventually(lambda: book_matches(svc, server, fake, t))
        after = next(r["volume"] for r in svc.markets(venue="kalshi", limit=500)["markets"] if r["slug"] == t)
        assert after == vol0 + 3


async def test_without_a_key_books_are_polled_over_rest(server: FakeServer, fake: FakeKalshi) -> None:
    a, b = two_sided(fake)[:2]
    async with running(server, None) as (svc, conn):
        status = conn.status()
        assert status["state"] == "polling" and status["connected"]
        assert status["note"] == ("no Kalshi API key: order books are polled over REST every 0.1 s "
                                  "(the WebSocket needs a key)")
        assert await svc.wait_ready(sym(a), 5)
        assert book_matches(svc, server, fake, a)
        await server.acall(fake.set_level, a, "yes", max(fake.markets[a].yes), "1")
        await server.acall(fake.clear_side, a, "no")
        await eventually(lambda: book_matches(svc, server, fake, a))
        assert await svc.wait_ready(sym(b), 5) and book_matches(svc, server, fake, b)
        conn.release(sym(a))
        n = len([p for p, _ in fake.requests if p.endswith(f"/markets/{a}/orderbook")])
        await eventually(lambda: len([p for p, _ in fake.requests if p.endswith(f"/markets/{b}/orderbook")]) > n + 3)
        assert len([p for p, _ in fake.requests if p.endswith(f"/markets/{a}/orderbook")]) <= n + 1
        assert fake.ws_accepted == 0 and fake.ws_refused == []


async def test_an_unreadable_key_polls_and_says_why(server: FakeServer, fake: FakeKalshi) -> None:
    t = two_sided(fake)[0]
    conn = KalshiLive(config(server, None, key_id=KEY_ID, private_key_pem="not a key"), clock=RealClock())
    svc = MarketService([conn], clock=RealClock())
    await svc.start()
    try:
        await eventually(lambda: conn.stats.catalogue_refreshed is not None and conn.status()["state"] == "polling")
        assert conn.status()["note"] == ("the Kalshi private key is not an unencrypted PEM RSA key: order books "
                                         "are polled over REST every 0.1 s (the WebSocket needs a key)")
        assert await svc.wait_ready(sym(t), 5) and book_matches(svc, server, fake, t)
    finally:
        await svc.stop()
        svc.close()


async def test_a_refused_key_falls_back_to_polling(server: FakeServer, fake: FakeKalshi,
                                                   other_key: rsa.RSAPrivateKey) -> None:
    t = two_sided(fake)[0]
    async with running(server, other_key) as (svc, conn):
        await eventually(lambda: conn.status()["state"] == "polling")
        assert "refused the API key" in (conn.status()["note"] or "")
        assert fake.ws_refused == ["bad signature"]
        assert await svc.wait_ready(sym(t), 5) and book_matches(svc, server, fake, t)


async def test_blast_of_deltas_for_benchmarks(server: FakeServer, fake: FakeKalshi,
                                              rsa_key: rsa.RSAPrivateKey) -> None:
    t = two_sided(fake)[0]
    async with running(server, rsa_key) as (svc, conn):
        assert await svc.wait_ready(sym(t), 5)
        seen: list[int] = []
        remove = svc.add_listener(lambda evs: seen.extend(1 for e in evs if isinstance(e, LevelUpdate)))
        sent = await server.acall(fake.blast, t, 3000)
        assert len(sent) == 3000 and all(a[0] <= b[0] for a, b in itertools.pairwise(sent))
        await eventually(lambda: len(seen) == 3000)
        remove()
        assert book_matches(svc, server, fake, t) and conn.stats.resyncs == 0
        _, price, count = sent[-1]
        assert svc.book(sym(t)).size_at(Side.BID, round(float(price) * 10_000)) == round(float(count) * 100)


def test_tick_change_from_the_catalogue_is_applied() -> None:
    conn = KalshiLive(LiveConfig(venue="kalshi", api_url="http://x", ws_url="ws://x/trade-api/ws/v2"),
                      clock=ManualClock())
    out: list[Any] = []

    class Sink:
        def apply(self, events: Any) -> int:
            out.extend(events)
            return len(events)

    conn._sink = Sink()
    spec = parse_market(ROW)
    conn.list_markets([spec])
    conn.list_markets([replace(spec, tick=100)])
    assert out[-1] == TickSizeChange(out[-1].ts_ms, spec.book_symbol, 100)
