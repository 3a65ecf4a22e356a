"""The algo manager over a real store (SQLite and PostgreSQL) and a simulated market:
one coordinator runs a deployment at a time; a coordinator that stops renewing is
fenced before another may take the deployment; a trap backs off like a failed run;
a redeploy restarts the algo with the new module; fills reach the module."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import wasmtime

from sequence.algos import abi
from sequence.algos.manager import AlgoManager
from sequence.execution.engine import TradingEngine
from sequence.market.book import Side
from sequence.market.events import LevelUpdate
from sequence.market.service import MarketService
from sequence.store.store import Store
from sequence.store.trading import TradingStore
from tests.execution.conftest import async_test

LEASE = 1.2

BUYER = wasmtime.wat2wasm("""
(module
 (import "seq" "submit" (func $submit (param i32 i32 i64 i64 i32) (result i64)))
 (import "seq" "log" (func $log (param i32 i32)))
 (memory (export "memory") 1)
 (data (i32.const 0) "filled")
 (global $done (mut i32) (i32.const 0))
 (global $fills (export "fills") (mut i32) (i32.const 0))
 (func (export "on_quote") (param $s i32) (param $bp i64) (param $bq i64) (param $ap i64) (param $aq i64)
   (if (i32.and (i32.eqz (global.get $done)) (i64.gt_s (local.get $ap) (i64.const 0)))
     (then (global.set $done (i32.const 1))
           (drop (call $submit (local.get $s) (i32.const 0) (local.get $ap) (i64.const 1000000) (i32.const 0))))))
 (func (export "on_fill") (param i64 i32 i32 i64 i64) (call $log (i32.const 0) (i32.const 6))))
""")
# 300 resting paper buys at $1 (far under the market) on its first quote.
RESTER = wasmtime.wat2wasm("""
(module
 (import "seq" "submit" (func $submit (param i32 i32 i64 i64 i32) (result i64)))
 (memory (export "memory") 1)
 (global $done (mut i32) (i32.const 0))
 (func (export "on_quote") (param $s i32) (param i64 i64 i64 i64) (local $n i32)
   (if (i32.eqz (global.get $done)) (then
     (global.set $done (i32.const 1))
     (local.set $n (i32.const 300))
     (loop $l
       (drop (call $submit (local.get $s) (i32.const 0) (i64.const 100000000) (i64.const 100000000) (i32.const 0)))
       (local.set $n (i32.sub (local.get $n) (i32.const 1)))
       (br_if $l (local.get $n)))))))
""")
# Counts its quotes in an exported global.
COUNTER = wasmtime.wat2wasm("""
(module (memory (export "memory") 1)
 (global $n (export "quotes") (mut i32) (i32.const 0))
 (func (export "on_quote") (param i32 i64 i64 i64 i64) (global.set $n (i32.add (global.get $n) (i32.const 1)))))
""")
TRAP = wasmtime.wat2wasm("""
(module (memory (export "memory") 1) (func (export "on_quote") (param i32 i64 i64 i64 i64) unreachable))
""")


async def until(pred: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout:.0f} s")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def coordinator(store: Store, owner: str, order_rate: int = 100) -> AsyncIterator[AlgoManager]:
    """One coordinator's market, engine and algo manager over the shared store."""
    market = MarketService.simulated(seed=7, venues=("coinbase",))
    engine = TradingEngine(TradingStore(store.db), market)
    mgr = AlgoManager(store, market, engine, lease_seconds=LEASE, owner=owner, order_rate=order_rate)
    await market.start()
    await engine.start()
    await mgr.start()
    try:
        yield mgr
    finally:
        await mgr.stop()
        await engine.stop()
        await market.stop()
        market.close()


def deploy(store: Store, client_id: str, wasm: bytes, name: str = "algo", start: bool = True) -> str:
    row, _ = store.deploy_algo(client_id, "key", name, wasm, hashlib.sha256(wasm).hexdigest(), ["BTC-USD"], {},
                               True, start)
    return str(row["deployment_id"])


def crash(mgr: AlgoManager) -> None:
    """The coordinator stops renewing (its supervisor dies) but its process lives on."""
    for task in mgr._tasks:
        task.cancel()


@async_test
async def test_one_coordinator_runs_it_and_a_silent_one_is_fenced_before_another_takes_over(
        store: Store) -> None:
    cid = store.create_client("acme")
    dep = deploy(store, cid, BUYER)
    async with coordinator(store, "A") as a, coordinator(store, "B") as b:
        await until(lambda: dep in a.algos or dep in b.algos, "a coordinator runs it")
        await asyncio.sleep(LEASE)  # several passes of both supervisors
        assert (dep in a.algos) != (dep in b.algos), "exactly one coordinator runs it"
        first, second = (a, b) if dep in a.algos else (b, a)
        crash(first)
        await until(lambda: dep in second.algos, "the other coordinator takes it over", timeout=LEASE * 10)
        # It was fenced before: its lease could lapse only after its fence had passed.
        assert not first.fenced_ok()
        algo = first.algos[dep]
        assert algo.submit(0, 0, 100, 1_000_000, 0) == abi.E_STOPPED
        row = store.get_deployment(cid, dep)
        assert row["owner"] == second.owner and row["epoch"] == 2, row


@async_test
async def test_a_trap_backs_off_and_restarts_with_the_policy(store: Store) -> None:
    cid = store.create_client("acme")
    dep = deploy(store, cid, TRAP)
    async with coordinator(store, "A") as a:
        await until(lambda: store.get_deployment(cid, dep)["restarts"] >= 2, "two restarts")
        row = store.get_deployment(cid, dep)
        assert "unreachable" in (row["last_reason"] or ""), row
        assert row["consecutive_failures"] >= 2
        assert row["next_attempt_at"] is None or row["next_attempt_at"] > row["last_exit_at"]
        store.set_algo_desired(cid, dep, "stopped")
        await until(lambda: store.get_deployment(cid, dep)["status"] == "stopped", "stopped")
        await a.flush()
        lines = [r["line"] for r in store.read_algo_logs(dep)]
        assert sum(line.startswith("failed: trap") for line in lines) >= 2, lines


@async_test
async def test_fills_reach_the_module_and_a_redeploy_restarts_it(store: Store) -> None:
    cid = store.create_client("acme")
    dep = deploy(store, cid, BUYER)
    async with coordinator(store, "A") as a:
        await until(lambda: dep in a.algos and a.algos[dep].stats.fills >= 1, "a paper fill")
        algo = a.algos[dep]
        assert algo.stats.orders == 1 and not algo.orders  # filled: no longer open
        await a.flush()
        assert "filled" in [r["line"] for r in store.read_algo_logs(dep)]
        graphs = store.deployment_graphs(cid, dep)
        assert len(graphs) == 1 and graphs[0]["status"] == "completed" and graphs[0]["sandbox"], graphs
        # Redeploy the same name with other params: the running algo restarts (a new epoch).
        store.deploy_algo(cid, "key", "algo", BUYER, hashlib.sha256(BUYER).hexdigest(), ["BTC-USD"],
                          {"x": "1"}, True, True)
        a.poke()
        await until(lambda: dep in a.algos and a.algos[dep].epoch == 2, "restarted with the new params")
        assert a.algos[dep].params == {"x": "1"}


@async_test
async def test_a_stopped_deployment_is_not_started_and_a_deleted_one_ends(store: Store) -> None:
    cid = store.create_client("acme")
    idle = deploy(store, cid, BUYER, name="idle", start=False)
    dep = deploy(store, cid, BUYER, name="busy")
    async with coordinator(store, "A") as a:
        await until(lambda: dep in a.algos, "started")
        assert idle not in a.algos
        store.delete_deployment(cid, dep)
        a.poke()
        await until(lambda: dep not in a.algos, "ended after delete")



@async_test
async def test_stopping_an_algo_cancels_every_working_order_it_has(store: Store) -> None:
    cid = store.create_client("acme")
    row, _ = store.deploy_algo(cid, "key", "rester", RESTER, hashlib.sha256(RESTER).hexdigest(), ["BTC-USD"], {},
                               True, True)
    dep = str(row["deployment_id"])
    async with coordinator(store, "A", order_rate=100_000) as a:
        await until(lambda: dep in a.algos and len(a.algos[dep].orders) > 0, "resting orders")
        await a.flush()
        placed = a.algos[dep].stats.orders
        assert placed == 300, placed
        store.set_algo_desired(cid, dep, "stopped")
        a.poke()
        await until(lambda: dep not in a.algos, "stopped")
        await until(lambda: all(g["status"] == "cancelled" for g in store.deployment_graphs(cid, dep, limit=1000)),
                    "every order cancelled")
        assert len(store.deployment_graphs(cid, dep, limit=1000)) == placed


INIT_TRAP = wasmtime.wat2wasm("""
(module (memory (export "memory") 1) (func (export "init") unreachable)
 (func (export "on_quote") (param i32 i64 i64 i64 i64)))
""")


@async_test
async def test_a_trap_in_init_fails_the_algo_like_any_trap(store: Store) -> None:
    cid = store.create_client("acme")
    dep = deploy(store, cid, INIT_TRAP)
    async with coordinator(store, "A") as a:
        await until(lambda: store.get_deployment(cid, dep)["restarts"] >= 1, "a restart")
        assert "unreachable" in (store.get_deployment(cid, dep)["last_reason"] or "")
        assert dep not in a.algos or a.algos[dep].epoch >= 2


@async_test
async def test_a_quote_during_a_call_waits_for_it_and_one_with_nothing_waiting_goes_straight_in(
        store: Store) -> None:
    """A module is never re-entered: a quote that comes while a call runs is queued and
    delivered after it, in order; with the queue empty and no call running it is called at once."""
    cid = store.create_client("acme")
    dep = deploy(store, cid, COUNTER)
    async with coordinator(store, "A") as a:
        await until(lambda: dep in a.algos and a.algos[dep].stats.quotes >= 1, "its first quote")
        inst = a.algos[dep].instance
        assert inst is not None
        quotes = inst.instance.exports(inst.store)["quotes"]
        assert isinstance(quotes, wasmtime.Global)

        def seen() -> int:
            return int(quotes.value(inst.store))

        # No await below: the simulated market's own ticks cannot interleave.
        book = a.market.book("BTC-USD")
        bid = book.best(Side.BID)
        assert bid is not None
        before = seen()
        a._busy = True  # as inside a call into a module
        a.market.apply([LevelUpdate(book.ts_ms + 1, "BTC-USD", Side.BID, bid[0], bid[1] + 1)])
        assert seen() == before and len(a._queue) == 1  # queued, not called inside the running call
        a._busy = False
        a._pump()
        assert seen() == before + 1 and not a._queue
        a.market.apply([LevelUpdate(book.ts_ms + 1, "BTC-USD", Side.BID, bid[0], bid[1] + 2)])
        assert seen() == before + 2 and not a._queue  # straight in


@async_test
async def test_a_deleted_algo_ends_as_deleted_and_flags_3_is_an_argument_error(store: Store) -> None:
    cid = store.create_client("acme")
    dep = deploy(store, cid, COUNTER)
    async with coordinator(store, "A") as mgr:
        await until(lambda: dep in mgr.algos and mgr.algos[dep].instance is not None, "it runs")
        algo = mgr.algos[dep]
        # seq.submit's urgency bits: 0 normal, 1 low, 2 high; 3 is no urgency (it was taken as normal).
        assert algo.submit(0, 0, 100_000_000, 100_000_000, 3) == abi.E_ARGUMENT
        assert algo.stats.orders == 0 and algo.stats.refused == 1
        store.delete_deployment(cid, dep)
        mgr.poke()
        await until(lambda: dep not in mgr.algos, "it ends")
        assert algo.stopping == "deleted"  # not "lease lost": its lease was not renewed because it is gone
