"""The Kalshi order adapter (execution/venues/kalshi.py) against the fake Kalshi
(tests/venues/kalshi.py) on loopback: the V2 create/cancel, lookups, fills, the user channel,
rejects, timeouts, rate limits and auth — plus the pure request mapping."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from sequence.execution.venues import (
    AuthFailed,
    OrderConfig,
    OrderRejected,
    OrderRequest,
    OutcomeUnknown,
    VenueFill,
    VenueOrder,
    client_order_id,
    order_venue,
)
from sequence.execution.venues.kalshi import (
    KalshiOrders,
    order_body,
    split_client_id,
    venue_client_id,
    yes_leg,
)
from sequence.market.venues.live.kalshi import kalshi_headers
from tests.venues.harness import FakeServer, eventually
from tests.venues.kalshi import API, WS_PATH, FakeKalshi, taker_fee

pytestmark = pytest.mark.anyio

KEY_ID = "5b1e0c55-3f0e-4b7a-9d4e-0c9f8f0a7e21"
D = Decimal
PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)


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
    f = FakeKalshi(combos=0, ping_s=0.2, drop_delay_s=1.5)
    f.add_key(KEY_ID, rsa_key.public_key())
    return f


@pytest.fixture
def server(fake: FakeKalshi) -> Iterator[FakeServer]:
    with FakeServer(fake.app) as s:
        yield s
    assert fake.legacy_calls == 0  # the retired V1 order path is never used


@pytest.fixture
def ticker(fake: FakeKalshi) -> str:
    """A linear-cent market (the NBA game, Boston)."""
    return next(m.ticker for m in fake.open_markets() if m.ticker.startswith("KXNBAGAME") and m.ticker.endswith("-BOS"))


def config(server: FakeServer, **kw: Any) -> OrderConfig:
    base: dict[str, Any] = dict(venue="kalshi", api_url=server.url + API, user_ws_url=server.ws_url + WS_PATH,
                                timeout_s=2.0)
    base.update(kw)
    return OrderConfig(**base)


@contextlib.asynccontextmanager
async def venue(server: FakeServer, key: rsa.RSAPrivateKey | str, **kw: Any) -> AsyncIterator[KalshiOrders]:
    creds = {"api_key_id": KEY_ID, "private_key_pem": key if isinstance(key, str) else pem(key)}
    v = order_venue(creds, config(server, **kw))
    assert isinstance(v, KalshiOrders)
    v.retry_initial_s, v.retry_max_s = 0.01, 0.05
    v.reconnect_initial_s, v.reconnect_max_s = 0.05, 0.2
    try:
        yield v
    finally:
        await v.close()


async def book(server: FakeServer, fake: FakeKalshi, ticker: str, yes: dict[str, int], no: dict[str, int]) -> None:
    """Replace the market's two bid ladders (YES bids; NO bids = YES asks at 1 − p)."""
    for side, levels in (("yes", yes), ("no", no)):
        await server.acall(fake.clear_side, ticker, side)
        for p, c in levels.items():
            await server.acall(fake.set_level, ticker, side, p, c)


def req(ticker: str, node: str, side: str, qty: str, price: str | None, outcome: str = "yes", **kw: Any) -> OrderRequest:
    return OrderRequest(client_order_id(f"graph:g1:{node}:1"), ticker, side, D(qty),  # type: ignore[arg-type]
                        D(price) if price is not None else None, outcome=outcome, **kw)  # type: ignore[arg-type]


def now_ms() -> int:
    return int(time.time() * 1000)


async def collect(v: KalshiOrders, out: list[VenueOrder | VenueFill]) -> None:
    async for ev in v.events():
        out.append(ev)


# -- the request mapping (pure) ----------------------------------------------------------------------
def test_mapping_yes_and_no_to_the_yes_leg() -> None:
    assert yes_leg("yes", "buy", D("0.40")) == ("bid", D("0.40"))
    assert yes_leg("yes", "sell", D("0.40")) == ("ask", D("0.40"))
    assert yes_leg("no", "buy", D("0.40")) == ("ask", D("0.60"))
    assert yes_leg("no", "sell", D("0.40")) == ("bid", D("0.60"))
    r = req("KXT-1", "n1", "buy", "3", "0.40", outcome="no")
    assert order_body(r) == {
        "ticker": "KXT-1", "client_order_id": r.client_order_id + ":bn", "side": "ask", "count": "3.00",
        "price": "0.6000",
        "time_in_force": "good_till_canceled", "post_only": False, "self_trade_prevention_type": "taker_at_cross",
    }
    body = order_body(req("KXT-1", "n2", "sell", "10", "0.125", outcome="no", tif="ioc", post_only=True))
    assert (body["side"], body["price"], body["count"], body["time_in_force"], body["post_only"]) == \
        ("bid", "0.8750", "10.00", "immediate_or_cancel", True)
    body = order_body(req("KXT-1", "n3", "buy", "1", "0.0455", tif="fok", extra={"self_trade_prevention_type": "maker"}))
    assert (body["side"], body["price"], body["time_in_force"], body["self_trade_prevention_type"]) == \
        ("bid", "0.0455", "fill_or_kill", "maker")
    assert order_body(req("KXT-1", "n4", "buy", "2", "0.123456"))["price"] == "0.123456"
    with pytest.raises(OrderRejected) as exc:
        order_body(req("KXT-1", "n5", "buy", "1", None))
    assert exc.value.code == "invalid_order"
    for price in ("0", "1", "1.2"):
        with pytest.raises(OrderRejected):
            order_body(req("KXT-1", "n6", "buy", "1", price))
    with pytest.raises(OrderRejected):
        order_body(req("KXT-1", "n7", "buy", "1", "0.1234567"))
    with pytest.raises(OrderRejected):
        order_body(req("KXT-1", "n8", "buy", "1.001", "0.5"))
    # The same node attempt is the same client order id on every retry.
    assert client_order_id("graph:g1:n1:1") == r.client_order_id != client_order_id("graph:g1:n1:2")
    # The id sent carries the intent (a NO buy and a YES sell are both asks at the venue).
    assert [venue_client_id("c", side, outcome) for side, outcome in
            (("buy", "yes"), ("buy", "no"), ("sell", "yes"), ("sell", "no"))] == ["c:by", "c:bn", "c:sy", "c:sn"]
    assert split_client_id(r.client_order_id + ":sn") == (r.client_order_id, ("sell", "no"))
    assert split_client_id("plain-id") == ("plain-id", None)
    assert split_client_id(venue_client_id("x" * 63, "buy", "no")) == ("x" * 63, None)  # too long to carry it


# -- the fake refuses what Kalshi refuses ----------------------------------------------------------------
async def test_fake_checks_signatures_strings_and_answers_410_on_the_v1_path(
        server: FakeServer, fake: FakeKalshi, rsa_key: rsa.RSAPrivateKey, ticker: str) -> None:
    path = API + "/portfolio/fills"
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get(path)).status_code == 401
        good = kalshi_headers(KEY_ID, rsa_key, "GET", path)  # signs the path only
        assert (await http.get(path + "?limit=5", headers=good)).status_code == 200
        ts = str(now_ms())  # a signature that covers the query string is refused
        sig = rsa_key.sign((ts + "GET" + path + "?limit=5").encode(), PSS, hashes.SHA256())
        bad = dict(good, **{"KALSHI-ACCESS-TIMESTAMP": ts, "KALSHI-ACCESS-SIGNATURE": base64.b64encode(sig).decode()})
        assert (await http.get(path + "?limit=5", headers=bad)).status_code == 401
        # counts and prices must be fixed-point strings
        create = API + "/portfolio/events/orders"
        body = {"ticker": ticker, "side": "bid", "count": 1, "price": "0.10", "time_in_force": "good_till_canceled",
                "self_trade_prevention_type": "taker_at_cross"}
        r = await http.post(create, content=json.dumps(body), headers=kalshi_headers(KEY_ID, rsa_key, "POST", create))
        assert r.status_code == 400 and "fixed-point" in r.json()["message"]
        body.update(count="1.00", price=0.1)
        r = await http.post(create, content=json.dumps(body), headers=kalshi_headers(KEY_ID, rsa_key, "POST", create))
        assert r.status_code == 400 and "dollar string" in r.json()["message"]
        body.update(price="0.10", self_trade_prevention_type=None)
        r = await http.post(create, content=json.dumps(body), headers=kalshi_headers(KEY_ID, rsa_key, "POST", create))
        assert r.status_code == 400
        assert fake.creates == 0
        # the V1 create answers 410 (and is counted)
        v1 = API + "/portfolio/orders"
        r = await http.post(v1, content="{}", headers=kalshi_headers(KEY_ID, rsa_key, "POST", v1))
        assert r.status_code == 410 and r.json()["code"] == "deprecated_v1_order_endpoint"
    assert fake.legacy_calls == 1
    fake.legacy_calls = 0


# -- account and auth ---------------------------------------------------------------------------------
async def test_check_reads_the_balance_in_dollars(server: FakeServer, fake: FakeKalshi,
                                                  rsa_key: rsa.RSAPrivateKey) -> None:
    await server.acall(fake.set_balance, "1234.56")
    async with venue(server, rsa_key) as v:
        info = await v.check()
    assert info.balances["USD"] == D("1234.56")
    assert KEY_ID in info.account
    assert "PRIVATE KEY" not in repr(v)


async def test_a_bad_key_is_auth_failed(server: FakeServer, fake: FakeKalshi, other_key: rsa.RSAPrivateKey,
                                        ticker: str) -> None:
    async with venue(server, other_key) as v:
        with pytest.raises(AuthFailed):
            await v.check()
        with pytest.raises(AuthFailed):
            await v.place(req(ticker, "n1", "buy", "1", "0.10"))
        with pytest.raises(AuthFailed):
            async for _ in v.events():
                pass
    async with venue(server, "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n") as v:
        with pytest.raises(AuthFailed):
            await v.check()
    assert fake.creates == 0 and fake.ws_refused


# -- resting, crossing, partial fills ---------------------------------------------------------------------
async def test_resting_limit_buys_yes_and_no(server: FakeServer, fake: FakeKalshi, rsa_key: rsa.RSAPrivateKey,
                                             ticker: str) -> None:
    await book(server, fake, ticker, yes={"0.40": 10}, no={"0.55": 10})  # YES 0.40 / 0.45
    async with venue(server, rsa_key) as v:
        yes = await v.place(req(ticker, "y", "buy", "5", "0.38"))
        no = await v.place(req(ticker, "n", "buy", "4", "0.50", outcome="no"))  # a YES ask at 0.50: rests
        assert (yes.status, yes.remaining_qty, yes.filled_qty) == ("open", D(5), D(0))
        assert (no.status, no.remaining_qty) == ("open", D(4))
        m = fake.markets[ticker]
        assert m.yes[D("0.38")] == 5 and m.no[D("0.50")] == 4  # in the book at their limits
        o = fake.orders[no.venue_order_id]
        assert (o.side, o.price, o.initial) == ("ask", D("0.50"), D(4))
        opened = {o.venue_order_id: o for o in await v.open_orders()}
        assert set(opened) == {yes.venue_order_id, no.venue_order_id}
        assert opened[yes.venue_order_id].client_order_id == yes.client_order_id
        found = await v.lookup(no.client_order_id)
        assert found is not None and (found.venue_order_id, found.status, found.remaining_qty) == \
            (no.venue_order_id, "open", D(4))
        assert await v.lookup(client_order_id("graph:g1:never:1")) is None


async def test_a_crossing_buy_fills_across_two_levels(server: FakeServer, fake: FakeKalshi,
                                                      rsa_key: rsa.RSAPrivateKey, ticker: str) -> None:
    await book(server, fake, ticker, yes={"0.42": 2, "0.41": 5}, no={"0.55": 3, "0.54": 4})
    since = now_ms() - 1000
    async with venue(server, rsa_key) as v:
        buy = await v.place(req(ticker, "b", "buy", "5", "0.46"))  # YES asks 0.45 x3, 0.46 x4
        assert (buy.status, buy.filled_qty, buy.remaining_qty) == ("filled", D(5), D(0))
        no = await v.place(req(ticker, "n", "buy", "3", "0.60", outcome="no"))  # YES ask 0.40: hits 0.42, 0.41
        assert no.status == "filled"
        fills = await v.fills(since)
    venue_ids = [f["fill_id"] for f in fake.fill_log]
    assert [f.fill_id for f in fills] == venue_ids  # the venue's ids, oldest first
    yes_fills = [f for f in fills if f.venue_order_id == buy.venue_order_id]
    assert [(f.price, f.qty, f.side, f.outcome, f.is_taker) for f in yes_fills] == [
        (D("0.45"), D(3), "buy", "yes", True), (D("0.46"), D(2), "buy", "yes", True)]
    assert [f.fee for f in yes_fills] == [taker_fee(D(3), D("0.45")), taker_fee(D(2), D("0.46"))] == \
        [D("0.06"), D("0.04")]
    no_fills = [f for f in fills if f.venue_order_id == no.venue_order_id]
    # NO orders report NO prices: YES bids 0.42 / 0.41 are NO at 0.58 / 0.59.
    assert [(f.price, f.qty, f.side, f.outcome) for f in no_fills] == [
        (D("0.58"), D(2), "buy", "no"), (D("0.59"), D(1), "buy", "no")]
    assert all(f.client_order_id == no.client_order_id and f.symbol == ticker for f in no_fills)
    # A restarted adapter (no request at hand) reads the same fills the same way.
    async with venue(server, rsa_key) as fresh:
        again = await fresh.fills(since)
    assert again == fills
    assert fake.markets[ticker].no == {D("0.54"): D(2)}


async def test_partial_fill_then_rest_then_fills_later(server: FakeServer, fake: FakeKalshi,
                                                       rsa_key: rsa.RSAPrivateKey, ticker: str) -> None:
    await book(server, fake, ticker, yes={"0.40": 10}, no={"0.55": 2})  # only 2 offered at 0.45
    since = now_ms() - 1000
    async with venue(server, rsa_key) as v:
        o = await v.place(req(ticker, "p", "buy", "5", "0.45"))
        assert (o.status, o.filled_qty, o.remaining_qty) == ("open", D(2), D(3))
        assert fake.markets[ticker].yes[D("0.45")] == 3  # the rest rests at its limit
        await server.acall(fake.fill_resting, o.venue_order_id, "1")  # a counterparty takes one
        found = await v.lookup(o.client_order_id)
        assert found is not None and (found.filled_qty, found.remaining_qty) == (D(3), D(2))
        # Someone bids NO at 0.56 (a YES ask at 0.44): it trades with our 0.45 bid at 0.45.
        await server.acall(fake.set_level, ticker, "no", "0.56", 5)
        found = await v.lookup(o.client_order_id)
        assert found is not None and (found.status, found.filled_qty, found.remaining_qty) == ("filled", D(5), D(0))
        assert fake.markets[ticker].no[D("0.56")] == 3
        fills = await v.fills(since)
        assert [(f.qty, f.price, f.is_taker) for f in fills] == [
            (D(2), D("0.45"), True), (D(1), D("0.45"), False), (D(2), D("0.45"), False)]
        # An IOC takes what is there and the rest is cancelled.
        ioc = await v.place(req(ticker, "i", "buy", "10", "0.44", tif="ioc"))
        assert (ioc.status, ioc.filled_qty, ioc.remaining_qty) == ("cancelled", D(3), D(0))
        assert ioc.reason and "immediate_or_cancel" in ioc.reason


async def test_cancel_and_cancel_of_a_finished_order(server: FakeServer, fake: FakeKalshi,
                                                     rsa_key: rsa.RSAPrivateKey, ticker: str) -> None:
    await book(server, fake, ticker, yes={"0.40": 10}, no={"0.55": 10})
    async with venue(server, rsa_key) as v:
        o = await v.place(req(ticker, "c", "buy", "4", "0.30"))
        await server.acall(fake.fill_resting, o.venue_order_id, "1")
        done = await v.cancel(o.venue_order_id)
        assert (done.status, done.filled_qty, done.remaining_qty) == ("cancelled", D(1), D(0))
        assert D("0.30") not in fake.markets[ticker].yes
        again = await v.cancel(o.venue_order_id)  # already gone: its final status, not an error
        assert (again.status, again.filled_qty) == ("cancelled", D(1))
        f = await v.place(req(ticker, "f", "buy", "2", "0.45"))
        assert f.status == "filled"
        final = await v.cancel(f.venue_order_id)
        assert (final.status, final.filled_qty) == ("filled", D(2))
        with pytest.raises(OrderRejected) as exc:
            await v.cancel("no-such-order")
        assert exc.value.code == "unknown_order"
        assert await v.open_orders() == []


async def test_cancel_many_uses_batches(server: FakeServer, fake: FakeKalshi, rsa_key: rsa.RSAPrivateKey,
                                        ticker: str) -> None:
    await book(server, fake, ticker, yes={"0.40": 10}, no={"0.55": 10})
    fake.writes_per_s, fake.write_burst = 1000.0, 100  # a higher tier than Basic on both sides
    async with venue(server, rsa_key, writes_per_s=1000.0, burst=100) as v:
        placed = [await v.place(req(ticker, f"k{i}", "buy", "1", "0.20")) for i in range(25)]
        f = await v.place(req(ticker, "kf", "buy", "1", "0.45"))  # filled: its final status comes back
        ids = [o.venue_order_id for o in placed] + [f.venue_order_id, "no-such-order"]
        out = await v.cancel_many(ids)
        assert fake.batch_cancels == 2  # 20 + 7
        assert [o.status for o in out[:25] if isinstance(o, VenueOrder)] == ["cancelled"] * 25
        assert isinstance(out[25], VenueOrder) and out[25].status == "filled"
        assert isinstance(out[26], OrderRejected) and out[26].code == "unknown_order"
        assert await v.open_orders() == []
    assert D("0.20") not in fake.markets[ticker].yes


# -- rejects --------------------------------------------------------------------------------------------------
async def test_rejects_carry_the_venues_reason(server: FakeServer, fake: FakeKalshi, rsa_key: rsa.RSAPrivateKey,
                                               ticker: str) -> None:
    await book(server, fake, ticker, yes={"0.40": 10}, no={"0.55": 10})
    await server.acall(fake.set_balance, "10")
    async with venue(server, rsa_key) as v:
        with pytest.raises(OrderRejected) as exc:
            await v.place(req(ticker, "big", "buy", "100", "0.30"))
        assert exc.value.code == "insufficient_balance" and "insufficient balance" in exc.value.reason
        with pytest.raises(OrderRejected) as exc:
            await v.place(req(ticker, "tick", "buy", "1", "0.405"))
        assert exc.value.code == "price_off_tick" and "not a valid price" in exc.value.reason
        with pytest.raises(OrderRejected) as exc:
            await v.place(req(ticker, "frac", "buy", "0.5", "0.30"))
        assert exc.value.code == "invalid_order" and "whole contracts" in exc.value.reason
        await server.acall(fake.reject_next, "trading is paused on this market", "market_closed")
        with pytest.raises(OrderRejected) as exc:
            await v.place(req(ticker, "paused", "buy", "1", "0.30"))
        assert exc.value.code == "market_closed" and exc.value.reason == "trading is paused on this market"
        # A refused order does not exist: the same id can be sent again.
        ok = await v.place(req(ticker, "tick", "buy", "1", "0.30"))
        assert ok.status == "open"
    assert fake.creates == 1


# -- exactly once -----------------------------------------------------------------------------------------
async def test_a_timed_out_submit_is_found_and_never_sent_twice(server: FakeServer, fake: FakeKalshi,
                                                                rsa_key: rsa.RSAPrivateKey, ticker: str) -> None:
    await book(server, fake, ticker, yes={"0.40": 10}, no={"0.55": 2})
    since = now_ms() - 1000
    r = req(ticker, "t", "buy", "5", "0.45")
    await server.acall(fake.drop_next_reply, 1)
    async with venue(server, rsa_key, timeout_s=0.5) as v:
        with pytest.raises(OutcomeUnknown):
            await v.place(r)
        assert fake.dropped == 1 and fake.creates == 1  # the venue took it
        found = await v.lookup(r.client_order_id)
        assert found is not None and (found.status, found.filled_qty, found.remaining_qty) == ("open", D(2), D(3))
        fills = await v.fills(since)
        assert [(f.client_order_id, f.venue_order_id, f.qty, f.price) for f in fills] == [
            (r.client_order_id, found.venue_order_id, D(2), D("0.45"))]
        # Sending it again: the venue refuses the duplicate id; the adapter answers with the order.
        again = await v.place(r)
        assert fake.duplicates == 1 and fake.creates == 1
        assert (again.venue_order_id, again.status) == (found.venue_order_id, "open")
    # A fresh adapter (a restart, nothing remembered) finds it too, by listing.
    async with venue(server, rsa_key) as fresh:
        found2 = await fresh.lookup(r.client_order_id)
        assert found2 is not None and found2.venue_order_id == found.venue_order_id
        assert [f.fill_id for f in await fresh.fills(since)] == [f.fill_id for f in fills]
    assert len([o for o in fake.orders.values() if o.client_order_id.startswith(r.client_order_id)]) == 1
    await eventually(lambda: fake.holding == 0)  # the held reply went out (to nobody) before the server stops


async def test_a_disconnect_or_5xx_mid_order_is_outcome_unknown_and_resolved_by_lookup(
        server: FakeServer, fake: FakeKalshi, rsa_key: rsa.RSAPrivateKey, ticker: str) -> None:
    await book(server, fake, ticker, yes={"0.40": 10}, no={"0.55": 10})
    async with venue(server, rsa_key) as v:
        # The venue takes the order, then the connection drops before the answer.
        cut = req(ticker, "cut", "buy", "2", "0.30")
        await server.acall(fake.sever_next, 1)
        with pytest.raises(OutcomeUnknown):
            await v.place(cut)
        assert fake.severed == 1
        found = await v.lookup(cut.client_order_id)
        assert found is not None and found.status == "open"
        # A 503 after taking it: the same.
        taken = req(ticker, "taken", "buy", "2", "0.31")
        await server.acall(fake.fail_next, 503, True)
        with pytest.raises(OutcomeUnknown):
            await v.place(taken)
        assert (await v.lookup(taken.client_order_id)) is not None
        # A 503 without taking it: lookup says it does not exist, so it may be sent again — once.
        lost = req(ticker, "lost", "buy", "2", "0.32")
        await server.acall(fake.fail_next, 503)
        with pytest.raises(OutcomeUnknown):
            await v.place(lost)
        assert await v.lookup(lost.client_order_id) is None
        sent = await v.place(lost)
        assert sent.status == "open"
        # A cancel whose answer is lost: the order is cancelled at the venue; asking again says so.
        await server.acall(fake.sever_next, 1)
        with pytest.raises(OutcomeUnknown):
            await v.cancel(sent.venue_order_id)
        final = await v.cancel(sent.venue_order_id)
        assert final.status == "cancelled"
    assert fake.creates == 3 and fake.duplicates == 0


# -- rate limits ----------------------------------------------------------------------------------------
async def test_429_without_retry_after_is_retried_then_gives_up(server: FakeServer, fake: FakeKalshi,
                                                                rsa_key: rsa.RSAPrivateKey, ticker: str) -> None:
    await book(server, fake, ticker, yes={"0.40": 10}, no={"0.55": 10})
    async with venue(server, rsa_key) as v:
        await server.acall(fake.throttle, 2)
        o = await v.place(req(ticker, "r1", "buy", "1", "0.30"))
        assert o.status == "open" and v.throttled == 2 and fake.served_429 == 2
        await server.acall(fake.throttle, v.max_retries + 1)
        with pytest.raises(OrderRejected) as exc:
            await v.place(req(ticker, "r2", "buy", "1", "0.30"))
        assert exc.value.code == "rate_limited"
        await server.acall(fake.throttle, 0)
    assert fake.creates == 1


# -- the user channel --------------------------------------------------------------------------------------
async def test_duplicate_fill_messages_carry_the_same_fill_id(server: FakeServer, fake: FakeKalshi,
                                                              rsa_key: rsa.RSAPrivateKey, ticker: str) -> None:
    await book(server, fake, ticker, yes={"0.40": 10}, no={"0.55": 3})
    got: list[VenueOrder | VenueFill] = []
    async with venue(server, rsa_key) as v:
        task = asyncio.create_task(collect(v, got))
        try:
            await eventually(lambda: fake.subscriptions("fill") == 1 and fake.subscriptions("user_orders") == 1)
            await server.acall(fake.duplicate_fills, True)
            o = await v.place(req(ticker, "d", "buy", "2", "0.45", outcome="yes"))
            await eventually(lambda: len([e for e in got if isinstance(e, VenueFill)]) == 2
                             and any(isinstance(e, VenueOrder) and e.status == "filled" for e in got))
            fills = [e for e in got if isinstance(e, VenueFill)]
            assert fills[0].fill_id == fills[1].fill_id == fake.fill_log[0]["fill_id"]  # the engine dedupes
            assert (fills[0].venue_order_id, fills[0].client_order_id, fills[0].price, fills[0].qty) == \
                (o.venue_order_id, o.client_order_id, D("0.45"), D(2))
            assert [f.fill_id for f in await v.fills(0)] == [fills[0].fill_id]
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_events_reconnect_after_the_venue_drops_the_socket(server: FakeServer, fake: FakeKalshi,
                                                                  rsa_key: rsa.RSAPrivateKey, ticker: str) -> None:
    await book(server, fake, ticker, yes={"0.40": 10}, no={"0.55": 10})
    got: list[VenueOrder | VenueFill] = []
    async with venue(server, rsa_key) as v:
        task = asyncio.create_task(collect(v, got))
        try:
            await eventually(lambda: fake.subscriptions("fill") == 1)
            o = await v.place(req(ticker, "e", "buy", "3", "0.30", outcome="yes"))
            await eventually(lambda: any(isinstance(e, VenueOrder) and e.venue_order_id == o.venue_order_id
                                         for e in got))
            assert await server.acall(fake.disconnect) == 1
            await eventually(lambda: v.ws_connects == 2 and fake.subscriptions("fill") == 1)
            assert v.ws_reconnects >= 1
            await server.acall(fake.fill_resting, o.venue_order_id, "3")
            await eventually(lambda: any(isinstance(e, VenueFill) and e.venue_order_id == o.venue_order_id
                                         for e in got))
            fill = next(e for e in got if isinstance(e, VenueFill))
            assert (fill.qty, fill.price, fill.is_taker, fill.side, fill.outcome) == \
                (D(3), D("0.30"), False, "buy", "yes")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
