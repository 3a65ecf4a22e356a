"""The Polymarket order adapter against the fake venue (tests/venues/polymarket.py) over loopback.

A throwaway wallet per test (``eth_account.Account.create()``); the fake checks
L1/L2 auth, the V2 EIP-712 order signature and the venue's order rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from py_clob_client_v2.order_utils import ExchangeOrderBuilderV2

from sequence.execution.venues import order_venue
from sequence.execution.venues.base import (
    AuthFailed,
    OrderConfig,
    OrderError,
    OrderRejected,
    OrderRequest,
    OutcomeUnknown,
    VenueFill,
    VenueOrder,
    client_order_id,
)
from sequence.execution.venues.polymarket import (
    PolymarketOrders,
    SignedOrder,
    order_salt,
    reject_code,
)
from tests.venues.harness import FakeServer
from tests.venues.polymarket import FakeMarket, FakePolymarket

pytestmark = pytest.mark.anyio

_n = itertools.count()


def wallet() -> tuple[str, str]:
    acct = Account.create()
    return acct.key.hex(), acct.address


def request(m: FakeMarket, side: Any, qty: str, price: str, *, tif: Any = "gtc", no: bool = False,
            post_only: bool = False, coid: str | None = None, **extra: Any) -> OrderRequest:
    opts = {"tick_size": m.book.tick, "neg_risk": m.neg_risk, **extra}
    return OrderRequest(coid or client_order_id(f"graph:g:n{next(_n)}:1"), m.no if no else m.yes, side,
                        Decimal(qty), Decimal(price), tif, post_only, "no" if no else "yes",
                        {k: v for k, v in opts.items() if v is not None})


async def until(server: FakeServer, probe: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll *probe* on the server's loop until it is truthy; its value."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await server.acall(probe)
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not reached within {timeout:g} s: {probe}")
        await asyncio.sleep(0.01)


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not reached within {timeout:g} s: {check}")
        await asyncio.sleep(0.01)


@dataclass
class Venue:
    fake: FakePolymarket
    server: FakeServer
    orders: PolymarketOrders
    address: str
    key: str
    seen: list[VenueOrder | VenueFill] = field(default_factory=list)
    listener: asyncio.Task[None] | None = None

    async def listen(self) -> None:
        """Collect the user channel into :attr:`seen` (returns once subscribed)."""
        async def run() -> None:
            async for ev in self.orders.events():
                self.seen.append(ev)

        self.listener = asyncio.create_task(run())
        await until(self.server, lambda: len(self.fake.user_conns))

    def fills(self) -> list[VenueFill]:
        return [e for e in self.seen if isinstance(e, VenueFill)]

    def updates(self, order_id: str) -> list[VenueOrder]:
        return [e for e in self.seen if isinstance(e, VenueOrder) and e.venue_order_id == order_id]


@contextlib.asynccontextmanager
async def venue(fake: FakePolymarket | None = None, *, register: bool = True, timeout_s: float = 5.0,
                creds: dict[str, str] | None = None, **kw: Any) -> AsyncIterator[Venue]:
    fake = fake or FakePolymarket()
    server = fake.serve()
    key, address = wallet()
    given = dict(server.call(fake.register, address)) if register else {}
    config = OrderConfig("polymarket", server.url, server.ws_url + "/ws/user", timeout_s=timeout_s)
    orders = PolymarketOrders({"private_key": key, **given, **(creds or {})}, config,
                              heartbeat_s=0.05, ping_s=0.05, backoff_s=(0.02, 0.1), **kw)
    v = Venue(fake, server, orders, address, key)
    try:
        yield v
    finally:
        if v.listener is not None:
            v.listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, OrderError):
                await v.listener
        await orders.close()
        server.stop()


# -- pure -----------------------------------------------------------------------------------------
async def test_the_same_request_always_yields_the_same_order_id() -> None:
    fake = FakePolymarket()
    key, address = wallet()
    config = OrderConfig("polymarket", "http://127.0.0.1:9")
    a = PolymarketOrders({"private_key": key}, config)
    b = PolymarketOrders({"private_key": key}, config)  # another process, after a restart
    try:
        req = request(fake.market("Spain"), "buy", "10", "0.12", created_ms=1_796_000_000_000)
        first = a.build(req)
        assert first.order_id == a.build(req).order_id == b.build(req).order_id
        assert first.body == b.build(req).body  # byte-identical: RFC 6979 signatures
        assert first.order_id.startswith("0x") and len(first.order_id) == 66
        assert first.body["order"]["salt"] == order_salt(req.client_order_id) < 2**48
        assert first.body["order"]["timestamp"] == "1796000000000"
        # another attempt, price, tick/neg-risk or timestamp is another order
        other = request(fake.market("Spain"), "buy", "10", "0.12", created_ms=1_796_000_000_000)
        assert a.build(other).order_id != first.order_id
        assert a.build(replace(req, price=Decimal("0.13"))).order_id != first.order_id
        assert a.build(req, neg_risk=False).order_id != first.order_id
        # the signature recovers to the wallet, over the official client's V2 typed data
        signer = Account.recover_message(encode_typed_data(full_message=dict(first.typed_data)),
                                         signature=first.body["order"]["signature"])
        assert signer == address == first.body["order"]["maker"] == first.body["order"]["signer"]
        assert first.typed_data["domain"]["name"] == "Polymarket CTF Exchange"
        # the very signature the official client makes with its own Signer (hex key, parsed per call)
        official = ExchangeOrderBuilderV2(first.typed_data["domain"]["verifyingContract"], 137, a.signer)
        assert official.build_order_signature(dict(first.typed_data)) == first.body["order"]["signature"]
        assert first.typed_data["domain"]["version"] == "2"
        # refused here, never rounded by the client: a price off the tick, a size finer than 0.01
        with pytest.raises(OrderRejected) as off:
            a.build(request(fake.market("Spain"), "buy", "10", "0.125"))
        assert off.value.code == "price_off_tick"
        with pytest.raises(OrderRejected) as fine:
            a.build(request(fake.market("Spain"), "buy", "10.001", "0.12"))
        assert fine.value.code == "invalid_qty"
        with pytest.raises(OrderRejected) as po:
            a.build(request(fake.market("Spain"), "buy", "10", "0.12", tif="ioc", post_only=True))
        assert po.value.code == "post_only_tif"
    finally:
        await a.close()
        await b.close()


def test_reject_codes_and_the_registry() -> None:
    assert reject_code("invalid amount for a marketable BUY order ($0.3), min size: $1") == "below_min_notional"
    assert reject_code("order is invalid. Size (3) lower than the minimum: 5") == "below_min_size"
    assert reject_code("order is invalid. Duplicated. Same order has already been placed") == "duplicate_order"
    assert reject_code("not enough balance / allowance") == "insufficient_balance"
    assert reject_code("something new") == "venue_rejected"
    key, _ = wallet()
    adapter = order_venue({"private_key": key}, OrderConfig("polymarket", "http://127.0.0.1:9"))
    assert isinstance(adapter, PolymarketOrders) and adapter.venue == "polymarket"
    with pytest.raises(AuthFailed):
        PolymarketOrders({"private_key": "0xnot-a-key"}, OrderConfig("polymarket", "http://127.0.0.1:9"))


# -- against the fake -------------------------------------------------------------------------------
async def test_check_derives_l2_keys_with_l1_wallet_auth() -> None:
    async with venue(register=False) as v:
        info = await v.orders.check()
        assert info.account == v.address and info.balances == {"pUSD": Decimal(1000)}
        made = await v.server.acall(lambda: [k.address for k in v.fake.api_keys.values()])
        assert made == [v.address]  # created once (no key to derive yet)
        again = PolymarketOrders({"private_key": v.key}, v.orders.config)
        try:
            assert (await again.check()).account == v.address  # derived: the same key
            assert again.api_key == v.orders.api_key
        finally:
            await again.close()
        assert await v.server.acall(lambda: v.fake.order_refusals) == [
            ("GET /auth/derive-api-key", "Could not derive api key!")]


async def test_a_resting_order_is_open_found_by_lookup_and_cancelled() -> None:
    async with venue() as v:
        await v.listen()
        spain = v.fake.market("Spain")
        req = request(spain, "buy", "10", "0.12")
        ack = await v.orders.place(req)
        assert ack.status == "open" and ack.client_order_id == req.client_order_id
        assert ack.venue_order_id == await v.orders.order_id(req)
        assert ack.filled_qty == 0 and ack.remaining_qty == 10
        [open_] = await v.orders.open_orders()
        assert open_.venue_order_id == ack.venue_order_id and open_.client_order_id == req.client_order_id
        assert open_.symbol == spain.yes and open_.remaining_qty == 10
        found = await v.orders.lookup(req.client_order_id)
        assert found is not None and found.status == "open" and found.venue_order_id == ack.venue_order_id
        done = await v.orders.cancel(ack.venue_order_id)
        assert done.status == "cancelled" and done.client_order_id == req.client_order_id
        assert await v.orders.open_orders() == []
        again = await v.orders.cancel(ack.venue_order_id)  # already gone: its final state, no error
        assert again.status == "cancelled"
        with pytest.raises(OrderRejected) as unknown:
            await v.orders.cancel("0x" + "ab" * 32)
        assert unknown.value.code == "unknown_order"
        await eventually(lambda: [u.status for u in v.updates(ack.venue_order_id)] == ["open", "cancelled"])
        assert v.updates(ack.venue_order_id)[0].client_order_id == req.client_order_id


async def test_a_crossing_order_fills_across_levels_with_trade_ids_prices_and_fees() -> None:
    async with venue(FakePolymarket(fee_rate_bps=200)) as v:
        await v.listen()
        spain = v.fake.market("Spain")  # asks 0.17 x 120, 0.18 x 157.5 …; a neg-risk market
        req = request(spain, "buy", "200", "0.18")
        ack = await v.orders.place(req)
        assert ack.status == "filled" and ack.filled_qty == 200 and ack.remaining_qty == 0
        fills = await v.orders.fills(0)
        assert [(f.price, f.qty, f.fee) for f in sorted(fills, key=lambda f: f.price)] == [
            (Decimal("0.17"), Decimal(120), Decimal("0.408000")),  # 2% x min(p, 1 - p) x shares
            (Decimal("0.18"), Decimal(80), Decimal("0.288000"))]
        assert len({f.fill_id for f in fills}) == 2
        trade_ids = await v.server.acall(lambda: set(v.fake.trades))
        assert {f.fill_id for f in fills} == trade_ids  # taker fills: the venue's trade ids
        for f in fills:
            assert f.venue_order_id == ack.venue_order_id and f.client_order_id == req.client_order_id
            assert f.side == "buy" and f.is_taker and f.symbol == spain.yes and f.outcome == "yes"
        asks = await v.server.acall(lambda: v.fake.levels(spain.yes)[1])
        assert asks[0] == ("0.18", "77.5")  # the book moved
        # the user channel: the same fills (one per status message, same ids), MATCHED → CONFIRMED
        await until(v.server, lambda: all(t.status == "CONFIRMED" for t in v.fake.trades.values()))
        await eventually(lambda: len(v.fills()) == 6)
        assert {f.fill_id for f in v.fills()} == trade_ids
        assert [u.status for u in v.updates(ack.venue_order_id)] == ["open", "filled"]


async def test_a_sub_dollar_marketable_buy_is_refused_with_the_venues_reason() -> None:
    async with venue() as v:
        btc = v.fake.market("Will Bitcoin reach $150,000 by December 31, 2026?")  # best ask 0.06
        with pytest.raises(OrderRejected) as refused:
            await v.orders.place(request(btc, "buy", "5", "0.06"))  # $0.30 would cross
        assert refused.value.code == "below_min_notional"
        assert refused.value.reason == "invalid amount for a marketable BUY order ($0.3), min size: $1"
        rest = await v.orders.place(request(btc, "buy", "5", "0.03"))  # resting: only 5 shares needed
        assert rest.status == "open"
        assert await v.server.acall(lambda: len(v.fake.trades)) == 0


async def test_fewer_than_min_order_size_shares_are_refused() -> None:
    async with venue() as v:
        with pytest.raises(OrderRejected) as refused:
            await v.orders.place(request(v.fake.market("Spain"), "buy", "3", "0.10"))
        assert refused.value.code == "below_min_size"
        assert refused.value.reason == "order is invalid. Size (3) lower than the minimum: 5"


async def test_a_price_off_the_tick_is_refused() -> None:
    async with venue() as v:
        spain = v.fake.market("Spain")
        with pytest.raises(OrderRejected) as here:
            await v.orders.place(request(spain, "buy", "10", "0.125"))
        assert here.value.code == "price_off_tick"
        assert await v.server.acall(lambda: v.fake.order_posts) == []  # never sent
        # a stale, finer tick (the market's is 0.005): the venue refuses
        nochange = v.fake.market("No change")
        with pytest.raises(OrderRejected) as venue_side:
            await v.orders.place(request(nochange, "buy", "10", "0.853", tick_size="0.001"))
        assert venue_side.value.code == "price_off_tick"
        assert "breaks minimum tick size rule: 0.005" in venue_side.value.reason


async def test_a_lost_reply_is_outcome_unknown_then_found_by_lookup_and_never_sent_twice() -> None:
    async with venue(timeout_s=0.3) as v:
        spain = v.fake.market("Spain")
        req = request(spain, "buy", "10", "0.12", created_ms=1_796_000_000_000)
        v.server.call(v.fake.drop_next_reply)
        with pytest.raises(OutcomeUnknown):
            await v.orders.place(req)
        found = await v.orders.lookup(req.client_order_id)
        assert found is not None and found.status == "open"
        assert found.venue_order_id == await v.orders.order_id(req)  # the same hash
        with pytest.raises(OrderRejected) as dup:
            await v.orders.place(req)  # a retry of the same attempt
        assert dup.value.code == "duplicate_order"
        assert await v.server.acall(lambda: len(v.fake.orders)) == 1  # never two orders
        assert await v.server.acall(lambda: len(v.fake.order_posts)) == 2
        # a 5xx is unknown too; the order existed all along
        other = request(spain, "sell", "10", "0.30")
        v.server.call(v.fake.drop_next_reply, 1, "500")
        with pytest.raises(OutcomeUnknown):
            await v.orders.place(other)
        assert (await v.orders.lookup(other.client_order_id)) is not None
        # a request never sent: the venue does not know it
        unsent = request(spain, "buy", "10", "0.11")
        await v.orders.track(unsent)
        assert await v.orders.lookup(unsent.client_order_id) is None
        with pytest.raises(OrderError):
            await v.orders.lookup("never-signed")


async def test_a_restarted_adapter_finds_the_order_from_the_request() -> None:
    async with venue() as v:
        req = request(v.fake.market("Spain"), "buy", "10", "0.12", created_ms=1_796_000_000_123)
        ack = await v.orders.place(req)
        fresh = PolymarketOrders(v.orders.credentials, v.orders.config)
        try:
            assert await fresh.track(req) == ack.venue_order_id
            found = await fresh.lookup(req.client_order_id)
            assert found is not None and found.client_order_id == req.client_order_id
            [open_] = await fresh.open_orders()
            assert open_.client_order_id == req.client_order_id
        finally:
            await fresh.close()


async def test_duplicate_trade_messages_carry_the_same_fill_id() -> None:
    async with venue() as v:
        await v.listen()
        v.server.call(v.fake.duplicate_trades, True)
        v.server.call(v.fake.hold_trades, True)
        ack = await v.orders.place(request(v.fake.market("Spain"), "buy", "50", "0.17"))
        assert ack.status == "filled"
        await eventually(lambda: len(v.fills()) == 2)
        a, b = v.fills()
        assert a == b and a.fill_id == await v.server.acall(lambda: next(iter(v.fake.trades)))


async def test_a_failed_trade_is_not_a_fill() -> None:
    async with venue() as v:
        await v.listen()
        v.server.call(v.fake.fail_next_trades, 1)
        await v.orders.place(request(v.fake.market("Spain"), "buy", "50", "0.17"))
        await until(v.server, lambda: [t.status for t in v.fake.trades.values()] == ["FAILED"])
        assert await v.orders.fills(0) == []  # REST backfill: FAILED is never a fill
        # the user channel reported the MATCHED fill before the failure: kept for reconciliation
        await eventually(lambda: len(v.orders.failed_fills) == 1)
        assert [f.fill_id for f in v.fills()] == [v.orders.failed_fills[0].fill_id]


async def test_confirmed_only_counts_trades_once_on_chain() -> None:
    async with venue(confirmed_only=True) as v:
        await v.listen()
        v.server.call(v.fake.hold_trades, True)
        spain = v.fake.market("Spain")
        await v.orders.place(request(spain, "buy", "50", "0.17"))
        [trade_id] = await v.server.acall(lambda: list(v.fake.trades))
        assert await v.orders.fills(0) == []  # MATCHED: not yet
        await v.server.acall(v.fake.advance, trade_id, "FAILED")
        assert await v.orders.fills(0) == []
        v.server.call(v.fake.hold_trades, False)
        await v.orders.place(request(spain, "buy", "50", "0.17"))
        await until(v.server, lambda: sum(t.status == "CONFIRMED" for t in v.fake.trades.values()) == 1)
        [fill] = await v.orders.fills(0)
        await eventually(lambda: len(v.fills()) == 2)  # MINED and CONFIRMED, one id
        assert {f.fill_id for f in v.fills()} == {fill.fill_id} and v.orders.failed_fills == []


async def test_a_maker_fill_when_our_resting_order_is_taken() -> None:
    async with venue(FakePolymarket(fee_rate_bps=200)) as v:
        await v.listen()
        req = request(v.fake.market("Spain"), "sell", "40", "0.90", no=True)  # the NO token: bid 0.83
        ack = await v.orders.place(req)
        assert ack.status == "open"
        trade_id = await v.server.acall(v.fake.take, ack.venue_order_id, "15")
        [fill] = await v.orders.fills(0)
        assert fill.fill_id == f"{trade_id}:{ack.venue_order_id}" and not fill.is_taker
        assert (fill.side, fill.price, fill.qty, fill.fee, fill.outcome) == ("sell", Decimal("0.9"), 15, 0, "no")
        assert fill.client_order_id == req.client_order_id
        found = await v.orders.lookup(req.client_order_id)
        assert found is not None and found.status == "open" and (found.filled_qty, found.remaining_qty) == (15, 25)
        await eventually(lambda: any(e.fill_id == fill.fill_id for e in v.fills()))


async def test_fak_fills_what_it_can_fok_all_or_nothing_post_only_never_crosses() -> None:
    async with venue() as v:
        spain = v.fake.market("Spain")
        fak = await v.orders.place(request(spain, "buy", "300", "0.17", tif="ioc"))  # 120 at 0.17
        assert (fak.status, fak.filled_qty, fak.remaining_qty) == ("cancelled", 120, 0)
        with pytest.raises(OrderRejected) as fok:
            await v.orders.place(request(spain, "buy", "500", "0.18", tif="fok"))  # 157.5 left
        assert fok.value.code == "fok_not_filled"
        with pytest.raises(OrderRejected) as post:
            await v.orders.place(request(spain, "buy", "10", "0.18", post_only=True))
        assert post.value.code == "post_only_would_cross"
        with pytest.raises(OrderRejected) as nothing:
            await v.orders.place(request(spain, "buy", "10", "0.10", tif="ioc"))
        assert nothing.value.code == "no_match"
        resting = await v.orders.place(request(spain, "buy", "10", "0.10", post_only=True))
        assert resting.status == "open"


async def test_tick_and_neg_risk_are_asked_when_not_given() -> None:
    async with venue() as v:
        england = v.fake.market("England")  # neg-risk, its NO token listed first
        req = request(england, "buy", "10", "0.05", tick_size=None, neg_risk=None)
        assert "tick_size" not in req.extra
        ack = await v.orders.place(req)  # signed for the neg-risk exchange, or refused
        assert ack.status == "open"
        asked = await v.server.acall(lambda: [p for p, _ in v.fake.requests])
        assert "/tick-size" in asked and "/neg-risk" in asked


async def test_open_orders_and_fills_read_every_page() -> None:
    async with venue(FakePolymarket(page_size=2)) as v:
        spain = v.fake.market("Spain")
        placed = [await v.orders.place(request(spain, "buy", "10", p)) for p in ("0.10", "0.11", "0.12", "0.13", "0.14")]
        assert {o.venue_order_id for o in await v.orders.open_orders()} == {o.venue_order_id for o in placed}
        for _ in range(3):
            await v.orders.place(request(spain, "buy", "10", "0.19"))
        fills = await v.orders.fills(0)
        assert len(fills) == 3 and fills == sorted(fills, key=lambda f: (f.ts_ms, f.fill_id))


async def test_stopping_the_heartbeat_lets_the_venue_cancel_our_orders() -> None:
    async with venue(FakePolymarket(heartbeat_timeout_s=0.3)) as v:
        await v.listen()
        ack = await v.orders.place(request(v.fake.market("Spain"), "buy", "10", "0.12"))
        v.orders.start_keep_alive()
        await until(v.server, lambda: len(v.fake.heartbeats))
        beats = await v.server.acall(lambda: sum(p == "/v1/heartbeats" for p, _ in v.fake.requests))
        await until(v.server, lambda: sum(p == "/v1/heartbeats" for p, _ in v.fake.requests) > beats + 10)
        assert await v.server.acall(lambda: v.fake.heartbeat_cancels) == []  # fed: nothing cancelled
        assert (await v.orders.lookup(ack.client_order_id or "")) is not None
        await v.orders.stop_keep_alive()
        assert await until(v.server, lambda: v.fake.heartbeat_cancels) == [ack.venue_order_id]
        found = await v.orders.lookup(ack.client_order_id or "")
        assert found is not None and found.status == "cancelled"
        await eventually(lambda: [u.status for u in v.updates(ack.venue_order_id)] == ["open", "cancelled"])
        await v.orders.heartbeat()  # the expired chain is refused: a new one starts
        assert await v.server.acall(lambda: len(v.fake.heartbeats)) == 1
        assert ("POST /v1/heartbeats", "Invalid Heartbeat ID") in await v.server.acall(lambda: v.fake.order_refusals)


async def test_a_bad_l2_secret_is_auth_failed() -> None:
    async with venue(creds={"api_secret": "c2VjcmV0LW5vdC10aGUtb25lLXRoZS12ZW51ZS1oYXM="}) as v:
        with pytest.raises(AuthFailed):
            await v.orders.check()
        with pytest.raises(AuthFailed):
            await v.orders.place(request(v.fake.market("Spain"), "buy", "10", "0.12"))
        with pytest.raises(AuthFailed):
            async for _ in v.orders.events():
                pass
        refusals = await v.server.acall(lambda: v.fake.order_refusals)
        assert ("GET /balance-allowance", "Unauthorized/Invalid api key") in refusals
        assert ("WS /ws/user", "invalid auth") in refusals
        assert await v.server.acall(lambda: v.fake.orders) == {}


async def test_an_order_signed_by_another_wallet_is_refused() -> None:
    async with venue() as v:
        spain = v.fake.market("Spain")
        req = request(spain, "buy", "10", "0.12")
        signed = v.orders.build(req)
        other_key, _ = wallet()
        forged = Account.sign_message(encode_typed_data(full_message=dict(signed.typed_data)), private_key=other_key)
        body = {**signed.body, "order": {**signed.body["order"], "signature": "0x" + forged.signature.hex()}}
        with pytest.raises(OrderRejected) as refused:
            await v.orders.submit(SignedOrder(signed.client_order_id, signed.order_id, body, signed.typed_data), req)
        assert refused.value.code == "invalid_signature" and refused.value.reason == "invalid signature"
        # signed for the wrong exchange (neg_risk wrong): the venue recovers someone else
        with pytest.raises(OrderRejected) as wrong_domain:
            await v.orders.place(request(spain, "buy", "10", "0.12", neg_risk=False))
        assert wrong_domain.value.code == "invalid_signature"
        assert await v.server.acall(lambda: v.fake.orders) == {}


async def test_the_user_channel_reconnects_after_a_drop() -> None:
    async with venue() as v:
        await v.listen()
        first = await v.orders.place(request(v.fake.market("Spain"), "buy", "10", "0.12"))
        await eventually(lambda: bool(v.updates(first.venue_order_id)))
        assert await v.server.acall(v.fake.disconnect_user) == 1
        await until(v.server, lambda: len(v.fake.user_conns))
        second = await v.orders.place(request(v.fake.market("Spain"), "buy", "10", "0.11"))
        await eventually(lambda: bool(v.updates(second.venue_order_id)))
        assert await v.server.acall(lambda: len(v.fake.user_received)) == 2  # an auth message per connection
        pings = await until(v.server, lambda: sum(c.pings for c in v.fake.user_conns))
        assert pings >= 1


# -- batch cancel (the kill switch) -----------------------------------------------------------------
def _paths(v: Venue) -> Callable[[], list[str]]:
    return lambda: [p for p, _ in v.fake.requests]


async def test_cancel_many_cancels_every_open_order_in_one_request() -> None:
    async with venue() as v:
        await v.listen()
        spain = v.fake.market("Spain")
        reqs = [request(spain, "buy", "10", p) for p in ("0.10", "0.11", "0.12", "0.13", "0.14")]
        acks = [await v.orders.place(r) for r in reqs]
        ids = [a.venue_order_id for a in acks]
        before = len(await v.server.acall(_paths(v)))
        out = await v.orders.cancel_many(ids)
        assert (await v.server.acall(_paths(v)))[before:] == ["/orders"]  # one request, nothing read back
        assert await v.server.acall(lambda: v.fake.cancel_batches) == [ids]
        assert all(isinstance(o, VenueOrder) for o in out)
        assert [(o.venue_order_id, o.status, o.client_order_id, o.symbol, o.remaining_qty)
                for o in out if isinstance(o, VenueOrder)] == [
            (a.venue_order_id, "cancelled", r.client_order_id, spain.yes, 0) for a, r in zip(acks, reqs, strict=True)]
        assert await v.orders.open_orders() == []
        for oid in ids:
            await eventually(lambda oid=oid: [u.status for u in v.updates(oid)] == ["open", "cancelled"])


async def test_cancel_many_answers_each_id_filled_cancelled_unknown_or_someone_elses() -> None:
    async with venue() as v:
        spain = v.fake.market("Spain")  # best ask 0.17
        resting = await v.orders.place(request(spain, "buy", "10", "0.12"))
        filled = await v.orders.place(request(spain, "buy", "10", "0.17"))  # crosses: filled at once
        gone = await v.orders.place(request(spain, "buy", "10", "0.11"))
        assert (await v.orders.cancel(gone.venue_order_id)).status == "cancelled"
        unknown = "0x" + "ab" * 32
        # another wallet's resting order on the same venue: not ours to cancel
        other_key, other_address = wallet()
        other_creds = await v.server.acall(v.fake.register, other_address)
        other = PolymarketOrders({"private_key": other_key, **other_creds}, v.orders.config)
        try:
            theirs = await other.place(request(spain, "buy", "10", "0.10"))
        finally:
            await other.close()
        before = len(await v.server.acall(_paths(v)))
        ids = [resting.venue_order_id, filled.venue_order_id, unknown, gone.venue_order_id,
               theirs.venue_order_id, resting.venue_order_id.upper().replace("0X", "0x")]  # a repeat
        out = await v.orders.cancel_many(ids)
        assert len(out) == len(ids)
        a, b, c, d, e, f = out
        assert isinstance(a, VenueOrder) and a.status == "cancelled" and a.venue_order_id == resting.venue_order_id
        assert isinstance(b, VenueOrder) and (b.status, b.filled_qty, b.remaining_qty) == ("filled", 10, 0)
        assert b.client_order_id == filled.client_order_id
        assert isinstance(c, OrderRejected) and c.code == "unknown_order"
        assert c.reason == "order can't be found - already canceled or matched"
        assert isinstance(d, VenueOrder) and d.status == "cancelled" and d.client_order_id == gone.client_order_id
        assert isinstance(e, OrderRejected) and e.code == "unknown_order"
        assert f == a
        # one DELETE /orders (the repeat sent once); only the ids it did not cancel are read back
        assert await v.server.acall(lambda: v.fake.cancel_batches) == [
            [resting.venue_order_id, filled.venue_order_id, unknown, gone.venue_order_id, theirs.venue_order_id]]
        calls = (await v.server.acall(_paths(v)))[before:]
        assert calls[0] == "/orders" and sorted(calls[1:]) == sorted(
            "/data/order/" + i for i in (filled.venue_order_id, unknown, gone.venue_order_id, theirs.venue_order_id))
        assert await v.server.acall(lambda: [o.id for o in v.fake.orders.values() if o.status == "LIVE"]) == [
            theirs.venue_order_id]  # the other wallet's order still works
        assert await v.orders.cancel_many([]) == []


async def test_cancel_many_with_a_lost_answer_is_outcome_unknown_for_each_id() -> None:
    async with venue(timeout_s=0.3) as v:
        spain = v.fake.market("Spain")
        acks = [await v.orders.place(request(spain, "buy", "10", p)) for p in ("0.10", "0.11")]
        ids = [a.venue_order_id for a in acks]
        for mode in ("lost", "500"):
            v.server.call(v.fake.drop_next_cancel_reply, 1, mode)
            out = await v.orders.cancel_many(ids)
            assert len(out) == 2 and all(isinstance(o, OutcomeUnknown) for o in out)
        # the venue did cancel them: asking again finds their final state
        again = await v.orders.cancel_many(ids)
        assert [o.status for o in again if isinstance(o, VenueOrder)] == ["cancelled", "cancelled"]


async def test_cancel_many_splits_lists_longer_than_the_venues_maximum(monkeypatch: pytest.MonkeyPatch) -> None:
    from sequence.execution.venues import polymarket as adapter_module

    monkeypatch.setattr(adapter_module, "CANCEL_BATCH", 2)
    async with venue() as v:
        spain = v.fake.market("Spain")
        acks = [await v.orders.place(request(spain, "buy", "10", p)) for p in ("0.10", "0.11", "0.12", "0.13", "0.14")]
        ids = [a.venue_order_id for a in acks]
        out = await v.orders.cancel_many(ids)
        assert [o.venue_order_id for o in out if isinstance(o, VenueOrder) and o.status == "cancelled"] == ids
        assert sorted(await v.server.acall(lambda: v.fake.cancel_batches)) == sorted([ids[:2], ids[2:4], ids[4:]])


async def test_the_fake_refuses_a_batch_over_3000_ids_or_not_a_list() -> None:
    async with venue() as v:
        await v.orders.check()  # L2 keys in hand
        too_many = [f"0x{i:064x}" for i in range(3001)]
        for body in (too_many, {"orderIDs": []}):
            r = await v.orders._call("DELETE", "/orders", body=body)
            assert r.status_code == 400
        assert await v.server.acall(lambda: v.fake.cancel_batches) == []


# -- signing off the event loop ----------------------------------------------------------------------
async def test_orders_are_signed_in_a_worker_thread_not_on_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    signed_on: list[int] = []
    real = PolymarketOrders.build

    def spy(self: PolymarketOrders, req: OrderRequest, *args: Any, **kw: Any) -> SignedOrder:
        signed_on.append(threading.get_ident())
        return real(self, req, *args, **kw)

    monkeypatch.setattr(PolymarketOrders, "build", spy)
    async with venue() as v:
        spain = v.fake.market("Spain")
        req = request(spain, "buy", "10", "0.12", created_ms=1_796_000_000_000)
        ack = await v.orders.place(req)
        assert await v.orders.order_id(req) == ack.venue_order_id  # the same order, signed again
        await v.orders.learn(request(spain, "buy", "10", "0.11"))
        assert await v.orders.track(req) == ack.venue_order_id
        assert len(signed_on) == 4 and threading.get_ident() not in signed_on
