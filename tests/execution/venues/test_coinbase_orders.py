"""The Coinbase Advanced Trade order adapter against the local fake venue (loopback, a generated
P-256 key), and its pure pieces (JWT claims, order configurations, reject codes, parsers)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from websockets.asyncio.client import connect

from sequence.execution.venues.base import (
    AuthFailed,
    OrderConfig,
    OrderRejected,
    OrderRequest,
    OutcomeUnknown,
    VenueFill,
    VenueOrder,
    client_order_id,
)
from sequence.execution.venues.coinbase import (
    CoinbaseOrders,
    build_jwt,
    load_private_key,
    order_configuration,
    parse_fill,
    reject_code,
    reject_reason,
    ts_ms,
)
from tests.venues.coinbase import API, FakeCoinbase
from tests.venues.harness import FakeServer, eventually

BTC = "BTC-USD"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Venue:
    fake: FakeCoinbase
    server: FakeServer
    creds: dict[str, str]

    def call(self, fn: Any, *args: Any) -> Any:
        return self.server.call(fn, *args)

    def config(self, **kw: Any) -> OrderConfig:
        return OrderConfig(**{"venue": "coinbase", "api_url": self.server.url + API,
                              "user_ws_url": self.server.ws_url, "timeout_s": 5.0, **kw})

    def adapter(self, creds: dict[str, str] | None = None, cls: type[CoinbaseOrders] = CoinbaseOrders,
                **kw: Any) -> CoinbaseOrders:
        clock = kw.pop("clock", time.time)
        a = cls(creds or self.creds, self.config(**kw), clock=clock)
        a.retry_backoff_s = 0.01
        a.stall_s = 3.0
        a.backoff_initial_s, a.backoff_max_s = 0.05, 0.2
        a.fill_fetch_wait_s = 0.02
        return a

    def asks(self, pid: str = BTC) -> list[tuple[Decimal, Decimal]]:
        book = self.fake.books[pid]["offer"]
        return self.call(lambda: [(p, book[p]) for p in sorted(book)])  # type: ignore[no-any-return]

    def bids(self, pid: str = BTC) -> list[tuple[Decimal, Decimal]]:
        book = self.fake.books[pid]["bid"]
        return self.call(lambda: [(p, book[p]) for p in sorted(book, reverse=True)])  # type: ignore[no-any-return]


@pytest.fixture
def venue() -> Iterator[Venue]:
    fake = FakeCoinbase(heartbeat_s=0.1, fill_page=2, order_page=3, account_page=3)
    with FakeServer(fake.app) as server:
        creds = server.call(fake.new_key)
        yield Venue(fake, server, creds)


@contextlib.asynccontextmanager
async def adapter_of(v: Venue, **kw: Any) -> AsyncIterator[CoinbaseOrders]:
    a = v.adapter(**kw)
    try:
        yield a
    finally:
        await a.close()


def req(n: int | str, qty: str, price: str | None, side: str = "buy", tif: str = "gtc", *,
        symbol: str = BTC, post_only: bool = False) -> OrderRequest:
    return OrderRequest(client_order_id(f"graph:g1:n{n}:1"), symbol, side, Decimal(qty),  # type: ignore[arg-type]
                        None if price is None else Decimal(price), tif, post_only)  # type: ignore[arg-type]


class Listener:
    """Collects what :meth:`CoinbaseOrders.events` yields, in a task."""

    def __init__(self, adapter: CoinbaseOrders) -> None:
        self.items: list[VenueOrder | VenueFill] = []
        self._gen = adapter.events()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for item in self._gen:
            self.items.append(item)

    def orders(self, oid: str) -> list[VenueOrder]:
        return [i for i in self.items if isinstance(i, VenueOrder) and i.venue_order_id == oid]

    def fills(self) -> list[VenueFill]:
        return [i for i in self.items if isinstance(i, VenueFill)]

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self._gen.aclose()  # type: ignore[attr-defined]


# -- pure pieces -------------------------------------------------------------------------------------
def _ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def test_jwt_claims_and_headers():
    key = _ec_key()
    token = build_jwt("organizations/o/apiKeys/k", key, uri="POST api.coinbase.com/api/v3/brokerage/orders",
                      now=1_700_000_000.7)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256" and header["kid"] == "organizations/o/apiKeys/k"
    assert len(header["nonce"]) == 32 and int(header["nonce"], 16) >= 0
    claims = jwt.decode(token, key.public_key(), algorithms=["ES256"], options={"verify_exp": False,
                                                                                  "verify_nbf": False})
    assert claims == {"sub": "organizations/o/apiKeys/k", "iss": "cdp", "nbf": 1_700_000_000,
                      "exp": 1_700_000_120, "uri": "POST api.coinbase.com/api/v3/brokerage/orders"}
    ws = build_jwt("k", key, uri=None, now=1_700_000_000)
    assert "uri" not in jwt.decode(ws, options={"verify_signature": False})
    # a fresh nonce every time
    assert jwt.get_unverified_header(ws)["nonce"] != header["nonce"]


def test_ed25519_keys_sign_eddsa():
    key = ed25519.Ed25519PrivateKey.generate()
    token = build_jwt("k", key, uri="GET h/p", now=time.time())
    assert jwt.get_unverified_header(token)["alg"] == "EdDSA"
    jwt.decode(token, key.public_key(), algorithms=["EdDSA"])
    # Coinbase's own format for Ed25519 secrets: base64 of seed + public key
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    loaded = load_private_key(base64.b64encode(raw + pub).decode())
    assert isinstance(loaded, ed25519.Ed25519PrivateKey)
    with pytest.raises(AuthFailed):
        load_private_key("not a key")


def test_uri_claim_is_method_host_and_path_without_query():
    creds = FakeCoinbase(products=()).new_key()
    a = CoinbaseOrders(creds, OrderConfig("coinbase", "https://api.coinbase.com/api/v3/brokerage"))
    assert a.jwt_uri("GET", "/api/v3/brokerage/accounts") == "GET api.coinbase.com/api/v3/brokerage/accounts"
    local = CoinbaseOrders(creds, OrderConfig("coinbase", "http://127.0.0.1:8123/api/v3/brokerage/"))
    claims = jwt.decode(local.token("POST", "/api/v3/brokerage/orders"), options={"verify_signature": False})
    assert claims["uri"] == "POST 127.0.0.1:8123/api/v3/brokerage/orders"
    assert "private_key" not in repr(a) and "BEGIN" not in repr(a)


def test_order_configuration_mapping():
    assert order_configuration(req(1, "0.00100000", "95000.01")) == {
        "limit_limit_gtc": {"base_size": "0.00100000", "limit_price": "95000.01", "post_only": False}}
    assert order_configuration(req(1, "0.001", "95000", post_only=True)) == {
        "limit_limit_gtc": {"base_size": "0.001", "limit_price": "95000", "post_only": True}}
    assert order_configuration(req(1, "0.001", "95000", tif="ioc")) == {
        "sor_limit_ioc": {"base_size": "0.001", "limit_price": "95000"}}
    assert order_configuration(req(1, "0.001", "95000", tif="fok")) == {
        "limit_limit_fok": {"base_size": "0.001", "limit_price": "95000"}}
    assert order_configuration(req(1, "1E-8", None, side="sell", tif="ioc")) == {
        "market_market_ioc": {"base_size": "0.00000001"}}
    for bad in (req(1, "0.001", "95000", tif="ioc", post_only=True), req(1, "0.001", None, post_only=True),
                req(1, "0", "95000"), req(1, "0.001", "-1"), req(1, "0.001", None, tif="fok")):
        with pytest.raises(OrderRejected) as e:
            order_configuration(bad)
        assert e.value.code == "invalid_order"


def test_reject_codes_and_reasons():
    insufficient = {"error": "INSUFFICIENT_FUND", "message": "Insufficient balance in source account",
                    "error_details": "", "preview_failure_reason": "PREVIEW_INSUFFICIENT_FUND"}
    assert reject_code(insufficient) == "insufficient_balance"
    assert reject_reason(insufficient) == "Insufficient balance in source account (INSUFFICIENT_FUND)"
    assert reject_code({"error": "INVALID_LIMIT_PRICE_POST_ONLY"}) == "post_only_would_cross"
    assert reject_code({"error": "UNKNOWN_FAILURE_REASON",
                        "preview_failure_reason": "PREVIEW_INVALID_BASE_SIZE_TOO_SMALL"}) == "below_min_size"
    assert reject_code({"new_order_failure_reason": "INVALID_PRICE_PRECISION"}) == "price_off_tick"
    assert reject_code({"error": "SOMETHING_NEW"}) == "venue_rejected"
    assert reject_reason({"error": "UNKNOWN_FAILURE_REASON", "message": "",
                          "preview_failure_reason": "PREVIEW_INVALID_QUOTE_SIZE_TOO_SMALL"}) == \
        "PREVIEW_INVALID_QUOTE_SIZE_TOO_SMALL"


def test_parsers():
    assert ts_ms("2024-03-01T12:00:00.123456789Z") == 1709294400123
    assert ts_ms("2024-03-01T12:00:00Z") == 1709294400000
    assert ts_ms("") == 0 and ts_ms(None) == 0
    f = parse_fill({"trade_id": "t1", "order_id": "o1", "price": "100", "size": "50", "size_in_quote": True,
                    "commission": "0.3", "liquidity_indicator": "MAKER", "side": "SELL", "product_id": BTC,
                    "trade_time": "2024-03-01T12:00:00Z"}, "c1")
    assert (f.fill_id, f.qty, f.fee, f.is_taker, f.side, f.client_order_id) == ("t1", Decimal("0.5"),
                                                                                Decimal("0.3"), False, "sell", "c1")


# -- against the fake ----------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_check_reads_every_account_page(venue: Venue):
    async with adapter_of(venue) as a:
        info = await a.check()
    assert info.account.startswith("portfolio ")
    assert info.balances["USD"] == Decimal("100000") and info.balances["BTC"] == Decimal("2")
    assert set(info.balances) == {"USD", "BTC", "ETH", "SOL", "DOGE"}  # the empty wallets left out
    assert sum(1 for p, _ in venue.fake.requests if p.endswith("/accounts")) == 3  # 8 accounts, 3 a page
    assert venue.fake.auth_failures == []


@pytest.mark.anyio
async def test_resting_limit_order_is_open_and_found(venue: Venue):
    best_bid = venue.bids()[0][0]
    async with adapter_of(venue) as a:
        placed = []
        for n in range(4):  # more orders than one page of the order listing (3)
            r = req(n, "0.01", str(best_bid - 100 - n))
            placed.append((r, await a.place(r)))
        r0, ack = placed[0]
        assert ack.status == "open" and ack.client_order_id == r0.client_order_id and ack.remaining_qty == Decimal("0.01")
        opens = await a.open_orders()
        assert {o.venue_order_id for o in opens} == {o.venue_order_id for _, o in placed}
        assert all(o.status == "open" and o.remaining_qty == Decimal("0.01") and o.filled_qty == 0 for o in opens)
        found = await a.lookup(r0.client_order_id)
        assert found is not None and found.venue_order_id == ack.venue_order_id and found.status == "open"
    # a fresh adapter (a restarted coordinator) knows no ids: it lists and matches
    async with adapter_of(venue) as b:
        found = await b.lookup(r0.client_order_id)
        assert found is not None and found.venue_order_id == ack.venue_order_id and found.symbol == BTC
        assert await b.lookup(client_order_id("graph:g1:never:1")) is None
    _, hold = venue.call(venue.fake.balance, "USD")
    assert hold == sum(Decimal("0.01") * (best_bid - 100 - n) for n in range(4)) * Decimal("1.006")


@pytest.mark.anyio
async def test_crossing_order_fills_level_by_level(venue: Venue):
    asks = venue.asks()
    (p1, s1), (p2, s2), (p3, s3) = asks[:3]
    qty = s1 + s2 + s3 / 2
    qty = qty.quantize(Decimal("0.00000001"))
    async with adapter_of(venue) as a:
        ack = await a.place(req(1, f"{qty:f}", f"{p3:f}", tif="ioc"))
        order = await a.lookup(client_order_id("graph:g1:n1:1"))
        assert order is not None and order.status == "filled" and order.filled_qty == qty
        fills = await a.fills(0)
    assert [f.price for f in fills] == [p1, p2, p3]
    assert [f.qty for f in fills] == [s1, s2, qty - s1 - s2]
    assert all(f.venue_order_id == ack.venue_order_id and f.is_taker and f.side == "buy" for f in fills)
    assert [f.fee for f in fills] == [f.price * f.qty * Decimal("0.006") for f in fills]
    trade_ids = [row["trade_id"] for _, row in venue.fake.fills]
    assert sorted(f.fill_id for f in fills) == sorted(trade_ids) and len(set(trade_ids)) == 3
    assert [f.ts_ms for f in fills] == sorted(f.ts_ms for f in fills)  # oldest first (the venue: newest first)
    assert sum(1 for p, _ in venue.fake.requests if p.endswith("/fills")) == 2  # two per page
    after = venue.asks()
    assert after[0] == (p3, s3 - (qty - s1 - s2))  # two levels gone, the third smaller


@pytest.mark.anyio
async def test_gtc_crossing_order_fills_then_rests(venue: Venue):
    (p1, s1), (p2, _) = venue.asks()[:2]
    async with adapter_of(venue) as a:
        ack = await a.place(req(1, f"{s1 + Decimal('0.01'):f}", f"{p1:f}"))
        order = await a.lookup(ack.client_order_id or "")
    assert order is not None and order.status == "open"
    assert order.filled_qty == s1 and order.remaining_qty == Decimal("0.01")
    assert venue.asks()[0][0] == p2


@pytest.mark.anyio
async def test_market_ioc_sell(venue: Venue):
    (b1, s1), (b2, _) = venue.bids()[:2]
    qty = s1 + Decimal("0.001")
    async with adapter_of(venue) as a:
        ack = await a.place(req(1, f"{qty:f}", None, side="sell", tif="ioc"))
        order = await a.lookup(ack.client_order_id or "")
        fills = await a.fills(0)
    assert venue.fake.posted[-1]["order_configuration"] == {"market_market_ioc": {"base_size": f"{qty:f}"}}
    assert order is not None and order.status == "filled" and order.filled_qty == qty
    assert [(f.price, f.qty, f.side) for f in fills] == [(b1, s1, "sell"), (b2, Decimal("0.001"), "sell")]
    assert venue.call(venue.fake.balance, "BTC") == (Decimal(2) - qty, 0)


@pytest.mark.anyio
async def test_business_rejects_are_http_200_success_false(venue: Venue):
    ask = venue.asks()[0][0]
    cases = [
        (req(1, "10", f"{ask:f}"), "insufficient_balance", "Insufficient balance in source account"),
        (req(2, "0.001", "95000.005"), "price_off_tick", "not a multiple of 0.01"),
        (req(3, "0.000000001", "90000"), "size_off_increment", "not a multiple"),
        (req(4, "0.00001", "50000"), "below_min_size", "below the minimum"),
        (req(5, "1", "1", symbol="RNDR-USD"), "trading_disabled", "disabled"),
        (req(6, "1", "1", symbol="NOPE-USD"), "unknown_instrument", "ProductID is invalid"),
    ]
    async with adapter_of(venue) as a:
        for r, code, words in cases:
            with pytest.raises(OrderRejected) as e:
                await a.place(r)
            assert e.value.code == code and words in e.value.reason, (r, e.value.code, e.value.reason)
            assert await a.lookup(r.client_order_id) is None
        # on the wire: HTTP 200, success false, the venue's error_response
        body = {"client_order_id": "x", "product_id": BTC, "side": "BUY",
                "order_configuration": {"limit_limit_gtc": {"base_size": "10", "limit_price": f"{ask:f}"}}}
        r = await a.http.post(venue.server.url + API + "/orders", json=body,
                              headers={"Authorization": f"Bearer {a.token('POST', API + '/orders')}"})
    assert r.status_code == 200 and r.json()["success"] is False
    assert r.json()["error_response"]["error"] == "INSUFFICIENT_FUND"
    assert venue.fake.orders == {}


@pytest.mark.anyio
async def test_post_only_crossing_is_refused(venue: Venue):
    ask = venue.asks()[0][0]
    async with adapter_of(venue) as a:
        with pytest.raises(OrderRejected) as e:
            await a.place(req(1, "0.01", f"{ask:f}", post_only=True))
        assert e.value.code == "post_only_would_cross"
        ok = await a.place(req(2, "0.01", f"{ask - Decimal('0.01'):f}", post_only=True))
        assert ok.status == "open"
    assert venue.fake.posted[-1]["order_configuration"]["limit_limit_gtc"]["post_only"] is True
    assert len(venue.fake.orders) == 1 and venue.asks()[0][0] == ask


@pytest.mark.anyio
async def test_lost_reply_is_outcome_unknown_then_found_and_never_doubled(venue: Venue):
    (p1, s1), (p2, _) = venue.asks()[:2]
    r = req(7, f"{s1 + Decimal('0.002'):f}", f"{p2:f}", tif="ioc")
    venue.call(venue.fake.drop_next_reply, 1.5)
    async with adapter_of(venue, timeout_s=0.3) as a:
        with pytest.raises(OutcomeUnknown):
            await a.place(r)
    async with adapter_of(venue) as b:  # what the engine does next: look it up
        found = await b.lookup(r.client_order_id)
        assert found is not None and found.status == "filled" and found.filled_qty == s1 + Decimal("0.002")
        fills = [f for f in await b.fills(0) if f.venue_order_id == found.venue_order_id]
        assert [(f.price, f.client_order_id) for f in fills] == [(p1, r.client_order_id), (p2, r.client_order_id)]
        # sending it again anyway: the venue answers with the same order, nothing new is created
        again = await b.place(r)
        assert again.venue_order_id == found.venue_order_id
    assert len(venue.fake.orders) == 1 and venue.fake.duplicates == [r.client_order_id]
    assert len(venue.fake.fills) == 2


@pytest.mark.anyio
async def test_server_error_on_place_is_outcome_unknown(venue: Venue):
    venue.call(venue.fake.fail_next, 1, 503)
    async with adapter_of(venue) as a:
        with pytest.raises(OutcomeUnknown):
            await a.place(req(1, "0.01", "90000"))
        assert sum(1 for p, _ in venue.fake.requests if p.endswith("/orders")) == 1  # never retried
        venue.call(venue.fake.fail_next, 2, 503)
        assert await a.lookup(client_order_id("graph:g1:n1:1")) is None  # reads are retried
        venue.call(venue.fake.fail_next, 5, 503)
        with pytest.raises(OutcomeUnknown):  # no answer: ask again (the router's lookup loop does)
            await a.lookup(client_order_id("graph:g1:n1:1"))


@pytest.mark.anyio
async def test_rate_limit_is_retried_then_refused(venue: Venue):
    async with adapter_of(venue) as a:
        venue.call(venue.fake.fail_next, 2)
        ack = await a.place(req(1, "0.01", "90000"))
        assert ack.status == "open" and len(venue.fake.orders) == 1
        venue.call(venue.fake.fail_next, 2)
        assert len(await a.open_orders()) == 1
        venue.call(venue.fake.fail_next, 10)
        with pytest.raises(OrderRejected) as e:
            await a.place(req(2, "0.01", "90000"))
        assert e.value.code == "rate_limited"
        venue.call(venue.fake.fail_next, 0)
    assert len(venue.fake.orders) == 1 and a.stats["rate_limited"] == 2 + 2 + 4


@pytest.mark.anyio
async def test_bad_jwts_are_refused(venue: Venue):
    async with adapter_of(venue, clock=lambda: time.time() - 600) as a:  # expired two minutes after
        with pytest.raises(AuthFailed):
            await a.check()
    assert venue.fake.auth_failures[-1] == "JWT expired"

    class WrongUri(CoinbaseOrders):
        def jwt_uri(self, method: str, path: str) -> str:
            return f"GET api.coinbase.com{path}"  # another host, and GET for a POST

    async with contextlib.AsyncExitStack() as stack:
        w = venue.adapter(cls=WrongUri)
        stack.push_async_callback(w.close)
        with pytest.raises(AuthFailed):
            await w.place(req(1, "0.01", "90000"))
        assert "uri claim" in venue.fake.auth_failures[-1]
        stranger = venue.adapter(creds=FakeCoinbase(products=()).new_key("organizations/o/apiKeys/stranger"))
        stack.push_async_callback(stranger.close)
        with pytest.raises(AuthFailed):  # a key the venue never issued
            await stranger.open_orders()
        assert venue.fake.auth_failures[-1].startswith("unknown API key")
        forged = {**FakeCoinbase(products=()).new_key(), "api_key_name": venue.creds["api_key_name"]}
        impostor = venue.adapter(creds=forged)
        stack.push_async_callback(impostor.close)
        with pytest.raises(AuthFailed):  # our key's name, another private key
            await impostor.check()
        assert "Signature verification failed" in venue.fake.auth_failures[-1]
    assert venue.fake.orders == {}
    # a JWT whose lifetime is over 120 s
    key = load_private_key(venue.creds["private_key_pem"])
    name = venue.creds["api_key_name"]
    token = build_jwt(name, key, uri=f"GET 127.0.0.1:{venue.server.port}{API}/accounts", now=time.time(),
                      lifetime_s=300)
    async with httpx.AsyncClient() as http:
        r = await http.get(venue.server.url + API + "/accounts", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and "lifetime" in venue.fake.auth_failures[-1]


@pytest.mark.anyio
async def test_cancel_resting_filled_and_unknown(venue: Venue):
    (p1, s1) = venue.asks()[0]
    async with adapter_of(venue) as a:
        resting = await a.place(req(1, "0.01", "90000"))
        assert venue.call(venue.fake.balance, "USD")[1] > 0
        done = await a.cancel(resting.venue_order_id)
        assert done.status == "cancelled" and done.remaining_qty == 0 and done.client_order_id == resting.client_order_id
        assert venue.call(venue.fake.balance, "USD") == (Decimal(100000), 0)  # the hold is released
        again = await a.cancel(resting.venue_order_id)
        assert again.status == "cancelled"
        filled = await a.place(req(2, f"{s1:f}", f"{p1:f}", tif="ioc"))
        gone = await a.cancel(filled.venue_order_id)
        assert gone.status == "filled" and gone.filled_qty == s1
        with pytest.raises(OrderRejected) as e:
            await a.cancel("00000000-0000-4000-8000-000000000000")
        assert e.value.code == "unknown_order"
        assert await a.open_orders() == []


@pytest.mark.anyio
async def test_cancel_many_in_one_request(venue: Venue):
    async with adapter_of(venue) as a:
        acks = [await a.place(req(n, "0.01", str(90000 - n))) for n in range(5)]
        out = await a.cancel_many([o.venue_order_id for o in acks])
    assert [o.status for o in out] == ["cancelled"] * 5
    assert sum(1 for p, _ in venue.fake.requests if p.endswith("/batch_cancel")) == 1


@pytest.mark.anyio
async def test_user_channel_orders_fills_reconnect_and_duplicates(venue: Venue):
    async with adapter_of(venue) as a:
        listener = Listener(a)
        try:
            await eventually(lambda: venue.call(lambda: any(c.user and not c.closed for c in venue.fake.conns)))
            sub = next(m for m in venue.fake.received if isinstance(m, dict) and m.get("channel") == "user")
            assert sub["type"] == "subscribe" and isinstance(sub["jwt"], str)
            assert "uri" not in jwt.decode(sub["jwt"], options={"verify_signature": False})

            ack = await a.place(req(1, "0.01", "90000"))
            oid = ack.venue_order_id
            await eventually(lambda: bool(listener.orders(oid)))
            assert listener.orders(oid)[-1].status == "open"

            t1 = await venue.server.acall(venue.fake.fill_resting, oid, "0.004")
            await eventually(lambda: len(listener.fills()) == 1)
            f1 = listener.fills()[0]
            assert (f1.fill_id, f1.venue_order_id, f1.qty, f1.price, f1.is_taker) == (
                t1, oid, Decimal("0.004"), Decimal(90000), False)
            assert f1.fee == Decimal("0.004") * 90000 * Decimal("0.004")  # the maker fee
            assert f1.client_order_id == ack.client_order_id
            partial = listener.orders(oid)[-1]
            assert partial.status == "open" and partial.filled_qty == Decimal("0.004")
            assert partial.remaining_qty == Decimal("0.006")

            # the socket drops: the adapter reconnects and the snapshot restates the open order
            seen = len(listener.orders(oid))
            assert venue.call(venue.fake.disconnect) == 1
            await eventually(lambda: venue.call(lambda: venue.fake.connections) == 2
                             and len(listener.orders(oid)) > seen)
            assert a.stats["reconnects"] == 1

            # every user message twice: one fill, however often it is told
            venue.call(venue.fake.duplicate_user_messages, True)
            t2 = await venue.server.acall(venue.fake.fill_resting, oid)
            await eventually(lambda: listener.orders(oid)[-1].status == "filled" and len(listener.fills()) == 2)
            await asyncio.sleep(0.2)
            assert [f.fill_id for f in listener.fills()] == [t1, t2]
            assert a.stats["duplicates"] >= 1
            # fills from the channel and from the backfill share their ids
            assert {f.fill_id for f in await a.fills(0)} == {t1, t2}
        finally:
            await listener.stop()


@pytest.mark.anyio
async def test_user_channel_gap_resubscribes(venue: Venue):
    async with adapter_of(venue) as a:
        listener = Listener(a)
        try:
            await eventually(lambda: venue.call(lambda: any(c.user and not c.closed for c in venue.fake.conns)))
            venue.call(venue.fake.lose_next, 1)  # a heartbeat or an update lost: a sequence_num gap
            await eventually(lambda: a.stats["gaps"] == 1 and venue.call(lambda: venue.fake.connections) == 2)
            ack = await a.place(req(1, "0.01", "90000"))
            await eventually(lambda: bool(listener.orders(ack.venue_order_id)))
        finally:
            await listener.stop()


@pytest.mark.anyio
async def test_user_channel_stall_replaces_the_socket(venue: Venue):
    async with adapter_of(venue) as a:
        a.stall_s = 0.5  # heartbeats come every 0.1 s
        listener = Listener(a)
        try:
            await eventually(lambda: venue.call(lambda: any(c.user and not c.closed for c in venue.fake.conns)))
            venue.call(venue.fake.stall)  # open but silent, heartbeats too
            await eventually(lambda: a.stats["stalls"] >= 1 and venue.call(lambda: venue.fake.connections) >= 2)
            ack = await a.place(req(1, "0.01", "90000"))
            await eventually(lambda: bool(listener.orders(ack.venue_order_id)))
        finally:
            await listener.stop()


@pytest.mark.anyio
async def test_user_channel_refuses_a_bad_jwt(venue: Venue):
    key = load_private_key(venue.creds["private_key_pem"])
    expired = build_jwt(venue.creds["api_key_name"], key, uri=None, now=time.time() - 600)
    async with connect(venue.server.ws_url) as ws:
        await ws.send(json.dumps({"type": "subscribe", "channel": "user", "product_ids": [], "jwt": expired}))
        answer = json.loads(await ws.recv())
    assert answer["type"] == "error" and "authentication failure" in answer["reason"]
