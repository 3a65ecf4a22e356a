"""Runs WASM algo deployments inside the coordinator's market process (docs/algos.md).

:class:`AlgoManager` is one per coordinator. Its supervisor task takes the
deployments that want to run (a conditional UPDATE with a lease, so one
coordinator runs each), renews their lease, and starts, restarts or stops
instances as the store says. Everything else happens on the event loop, in
the market's own call path:

* the market service calls :meth:`AlgoManager._on_events` after each batch of
  book events; for each subscribed symbol whose top of book changed the
  algo's ``on_quote`` runs at once, and an order it places goes straight into
  the graph engine (:meth:`TradingEngine.submit_now`) — matched before the
  call returns, stored by the engine's writer behind it;
* the engine tells the manager of its algos' fills and ended graphs as each
  step is decided; they are queued and delivered (``on_fill``, ``on_order``)
  right after the call that is running, never inside the engine's step;
* timers (``seq.set_timer``) run on the market clock.

Every call into a module goes through one queue (:meth:`_pump`) — a quote
goes straight in only when the queue is empty and no call is running — so a
module is never re-entered and events reach it in the order they happened. A trap
stops the algo with its reason, cancels its working orders and schedules a
restart with the strategies' backoff (``lifecycle.restart_after_failure``).

Fencing: an algo places orders only while this coordinator's lease on it is
good — each renewal extends the fence to two thirds of a lease after the
renewal began; past that, orders answer ``E_STOPPED`` and the supervisor
stops the instances before another coordinator may take them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import anyio
import wasmtime

from sequence.market.book import BookView, Side
from sequence.market.clock import now_ms
from sequence.market.errors import MarketError
from sequence.store.ids import short_code
from sequence.store.keys import KEY_REVOKED
from sequence.trading.validation import GraphError, GraphRequest, simple_order

from . import abi
from .host import AlgoInstance, AlgoTrap, CompilerBusy, Limits, TokenBucket, compile_module

if TYPE_CHECKING:
    from sequence.execution.engine import TradingEngine
    from sequence.market.events import BookEvent
    from sequence.market.service import MarketService
    from sequence.store.store import Store

log = logging.getLogger(__name__)

E8 = 100_000_000
MAX_OPEN_ORDERS = 1000
MIN_TIMER_MS = 10
LOG_FLUSH_SECONDS = 0.2


def fixed(v: int) -> str:
    """A ×1e8 integer as an exact decimal string."""
    sign = "-" if v < 0 else ""
    q, r = divmod(abs(v), E8)
    return f"{sign}{q}.{r:08d}"


@dataclass
class _Order:
    handle: int
    graph_id: str
    syms: dict[str, int]  # node symbol -> index in the algo's symbols (absent: not one of them)
    cancelling: bool = False  # a cancel is under way: asking again changes nothing


@dataclass
class Stats:
    quotes: int = 0
    orders: int = 0
    refused: int = 0
    fills: int = 0
    timers: int = 0
    skipped: int = 0  # quotes and timer ticks not delivered: the algo was over its fuel a second


#: Fuel an algo may burn a second, in calls' worth (5 × 2,000,000 by default). Fuel is about
#: CPU time (an import is charged what it costs the host), so this bounds the share of the
#: market process one algo takes: without it one module on a 10 ms timer, logging in every
#: call, held the loop for most of each second, and ten of them starved every client.
BUDGET_CALLS_PER_SECOND = 5


class FuelBudget:
    """Fuel a second, refilled by the market clock (so a replay skips the same events)."""

    __slots__ = ("at", "cap", "left", "out", "rate")

    def __init__(self, rate: float) -> None:
        self.rate = self.cap = self.left = rate
        self.at: float | None = None
        self.out = False  # over budget: said once, until it recovers

    def ok(self, now_s: float) -> bool:
        if self.at is not None and now_s > self.at:
            self.left = min(self.cap, self.left + (now_s - self.at) * self.rate)
        self.at = now_s
        return self.left > 0


class Algo:
    """One running deployment: its instance and what its imports do (host.Actions)."""

    def __init__(self, mgr: AlgoManager, row: Mapping[str, Any], epoch: int, next_seq: int) -> None:
        self.mgr = mgr
        self.id: str = row["deployment_id"]
        self.name: str = row["name"]
        self.client_id: str = row["client_id"]
        self.key_id: str = row["key_id"]
        self.sha: str = row["wasm_sha256"]
        self.symbols: list[str] = list(row["symbols"])
        self.index = {s: i for i, s in enumerate(self.symbols)}  # unique: checked at deploy
        self.params: dict[str, str] = {str(k): str(v) for k, v in dict(row["params"]).items()}
        self.paper: bool = bool(row["sandbox"])
        self.epoch = epoch
        self.started_at = time.time()
        self.instance: AlgoInstance | None = None
        self.views: list[BookView] = []
        self.instruments: list[Any] = []
        self.px_mul: list[tuple[int, int]] = []  # (×1e8 numerator, denominator) of prices
        self.qty_mul: list[tuple[int, int]] = []
        self.last: list[tuple[int, int, int, int] | None] = [None] * len(self.symbols)
        self.orders: dict[int, _Order] = {}
        self.by_graph: dict[str, _Order] = {}
        self.next_handle = 1
        self.timer_ms = 0
        self.timer_due: int | None = None
        self.stopping: str | None = None
        self.order_rate = TokenBucket(mgr.settings_order_rate, max(1, int(mgr.settings_order_rate)))
        self._refusals = TokenBucket(10.0, 10)  # "order refused" lines a second (a module may refuse in a loop)
        self._refusals_dropped = 0
        self.log_seq = next_seq
        self.stats = Stats()
        self.budget = FuelBudget(mgr.limits.fuel * BUDGET_CALLS_PER_SECOND)

    # -- host.Actions ---------------------------------------------------------------------------
    def log(self, line: str, stream: str = "algo") -> None:
        self.mgr.add_log(self, line, stream)

    def now_ms(self) -> int:
        return now_ms(self.mgr.market.clock)

    def set_timer(self, interval_ms: int) -> None:
        if interval_ms <= 0:
            self.timer_ms, self.timer_due = 0, None
            self.mgr.timed.discard(self.id)
            return
        self.timer_ms = max(MIN_TIMER_MS, min(int(interval_ms), 86_400_000))
        self.timer_due = self.now_ms() + self.timer_ms
        self.mgr.timed.add(self.id)
        self.mgr.timers_changed()

    def book(self, sym: int, side: int, max_levels: int) -> list[tuple[int, int]]:
        if not 0 <= sym < len(self.views):
            return []
        view = self.views[sym]
        pn, pd = self.px_mul[sym]
        qn, qd = self.qty_mul[sym]
        return [(p * pn // pd, q * qn // qd)
                for p, q in view.depth(Side.BID if side == 0 else Side.ASK, max_levels)]

    def symbol_name(self, sym: int) -> str | None:
        return self.symbols[sym] if 0 <= sym < len(self.symbols) else None

    def refused(self, why: str) -> None:
        """An order the engine refused: counted, and said in the log (at most 10 lines a second)."""
        self.stats.refused += 1
        if not self._refusals.take(self.now_ms() / 1000):  # the market clock: a replay says the same
            self._refusals_dropped += 1
            return
        more = f" ({self._refusals_dropped} more refusal(s) not logged)" if self._refusals_dropped else ""
        self._refusals_dropped = 0
        self.log(f"order refused: {why}{more}", "system")

    def _can_order(self) -> int:
        now = time.monotonic()
        if self.stopping is not None or now >= self.mgr.fence_until:  # fenced_ok(), one clock read
            return abi.E_STOPPED
        if len(self.orders) >= MAX_OPEN_ORDERS:
            self.refused(f"{MAX_OPEN_ORDERS} orders are open")
            return abi.E_OPEN
        if not self.order_rate.take(self.now_ms() / 1000):  # the market clock, as the fuel budget
            self.stats.refused += 1
            return abi.E_RATE
        return 0

    def submit(self, sym: int, side: int, px_1e8: int, qty_1e8: int, flags: int) -> int:
        urgency = abi.URGENCY.get(flags & 3)  # 3 means nothing: an argument error, not "normal"
        if not 0 <= sym < len(self.symbols) or side not in (0, 1) or px_1e8 < 0 or qty_1e8 <= 0 or urgency is None:
            self.stats.refused += 1
            return abi.E_ARGUMENT
        err = self._can_order()
        if err:
            return err
        side_word = "buy" if side == 0 else "sell"
        try:
            inst = self.mgr.market.instrument(self.symbols[sym])  # cached; current tick
        except (MarketError, KeyError):
            self.refused(f"the market {self.symbols[sym]} is gone")
            return abi.E_REFUSED
        # Integers straight into a node when the order needs no rounding or minimum rule;
        # otherwise the API's own parser (and its error messages) decides.
        req = simple_order(inst, side_word, qty_1e8, px_1e8, urgency, self.paper) if px_1e8 else None
        if req is not None:
            return self._place_request(req)
        node: dict[str, Any] = {"node_id": "o", "symbol": self.symbols[sym], "side": side_word,
                                "qty": fixed(qty_1e8), "venue": inst.venue, "instrument_type": inst.instrument_type,
                                "urgency": urgency}
        if px_1e8:
            node["limit_price"] = fixed(px_1e8)
        return self._place({"nodes": [node], "sandbox": self.paper})

    def submit_graph(self, body: bytes) -> int:
        err = self._can_order()
        if err:
            return err
        try:
            parsed = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            self.refused("submit_graph: the graph is not valid JSON")
            return abi.E_ARGUMENT
        if isinstance(parsed, dict) and self.paper:
            parsed["sandbox"] = True
        return self._place(parsed)

    def _place(self, body: Any) -> int:
        try:
            req = self.mgr.engine.validate(body, force_paper=self.paper)
        except GraphError as exc:
            self.refused(f"{exc.field}: {exc}")
            return abi.E_REFUSED
        return self._place_request(req)

    def _place_request(self, req: GraphRequest) -> int:
        handle = self.next_handle
        index = self.index
        nodes = req.nodes
        if len(nodes) == 1:  # seq.submit: its symbol is one of the algo's
            sym = nodes[0].symbol
            syms = {sym: index[sym]} if sym in index else {}
        else:
            syms = {n.symbol: index[n.symbol] for n in nodes if n.symbol in index}
        order = _Order(handle, "", syms)

        def observer(channel: str, data: dict[str, Any]) -> None:
            self.mgr.observed(self, order, channel, data)

        try:
            g = self.mgr.engine.submit_now(req, client_id=self.client_id, key_id=self.key_id,
                                           deployment_id=self.id, observer=observer)
        except GraphError as exc:
            self.refused(f"{exc.field}: {exc}")
            return abi.E_REFUSED
        self.next_handle += 1
        order.graph_id = g.graph_id
        self.orders[handle] = order
        self.by_graph[g.graph_id] = order
        self.stats.orders += 1
        self.mgr.last_order_at = time.perf_counter()
        return handle

    def cancel(self, handle: int) -> int:
        order = self.orders.get(handle)
        if order is None:
            return -1
        # One cancel per order: a module calling cancel on one handle in a loop (thousands a
        # call) started as many engine tasks and held the event loop for minutes.
        if not order.cancelling:
            order.cancelling = True
            self.mgr.spawn(self.mgr.engine.cancel_graphs(self.client_id, [order.graph_id]))
        return 0


class AlgoManager:
    """See the module docstring."""

    def __init__(self, store: Store, market: MarketService, engine: TradingEngine, *, lease_seconds: float,
                 fuel: int = 2_000_000, memory_mb: int = 16, log_rate: int = 100, order_rate: int = 100,
                 owner: str | None = None) -> None:
        self.store = store
        self.market = market
        self.engine = engine
        self.lease_seconds = lease_seconds
        self.limits = Limits(fuel=fuel, init_fuel=fuel * 10, memory_bytes=memory_mb * 1024 * 1024,
                             log_rate=float(log_rate), log_burst=log_rate * 2)
        self.settings_order_rate = float(order_rate)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{short_code(6)}"
        self.algos: dict[str, Algo] = {}
        # Book symbol -> (algo, symbol index). Each list is replaced, never changed in place,
        # so a quote loop may iterate one while a call ends an algo.
        self._books: dict[str, list[tuple[Algo, int]]] = {}
        self.timed: set[str] = set()  # the algos with a timer set
        self._queue: deque[Callable[[], None]] = deque()
        self._busy = False
        self._pump_scheduled = False
        self._logs: list[dict[str, Any]] = []
        self._next_seq: dict[str, int] = {}  # deployment -> the next log seq it may use here
        # Deployments ended here, to give back in the store: id -> (reason, failed).
        self._released: dict[str, tuple[str | None, bool]] = {}
        self.fence_until = 0.0
        self._tasks: list[asyncio.Task[Any]] = []
        self._spawned: set[asyncio.Task[Any]] = set()
        self._wake = asyncio.Event()
        self._timer_wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._remove: list[Callable[[], None]] = []
        self.last_order_at = 0.0
        self.started = False

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self, *, supervise: bool = True) -> None:
        if self.started:
            return
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._timer_wake = asyncio.Event()
        self._remove.append(self.market.add_listener(self._on_events))
        self._remove.append(self.market.add_keeper(self._kept))
        self.started = True
        if supervise:
            self._tasks = [asyncio.create_task(self._supervise(), name="algos-supervisor"),
                           asyncio.create_task(self._timers(), name="algos-timers"),
                           asyncio.create_task(self._flusher(), name="algos-logs")]

    async def stop(self) -> None:
        """Stop every algo here and give its deployment back (queued: another coordinator, or
        this one after a restart, runs it again)."""
        if not self.started:
            return
        self.started = False
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for algo in list(self.algos.values()):
            self._end(algo, "the coordinator stopped", failed=False)
        if self._spawned:  # the cancels of their working orders
            await asyncio.wait(list(self._spawned), timeout=10)
        for remove in self._remove:
            with contextlib.suppress(ValueError):
                remove()
        self._remove = []
        await self._flush_logs()
        try:
            await self._release_pending()
        except Exception:
            log.exception("algos: could not release deployments at shutdown (their leases will lapse)")

    def poke(self) -> None:
        """Something changed in the store (deploy, start, stop, delete, a key revoked): look
        now. Thread-safe: the API's sync routes call it from their worker threads."""
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is not None and running is not loop:
            loop.call_soon_threadsafe(self._wake.set)
        else:
            self._wake.set()

    def fenced_ok(self) -> bool:
        return time.monotonic() < self.fence_until

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)

    def stats(self, dep_id: str) -> dict[str, Any] | None:
        """Live figures of a deployment running here (None if it runs elsewhere or not at all)."""
        algo = self.algos.get(dep_id)
        if algo is None or algo.instance is None:
            return None
        s = algo.stats
        return {"coordinator": self.owner, "epoch": algo.epoch, "quotes": s.quotes, "orders": s.orders,
                "orders_refused": s.refused, "fills": s.fills, "timers": s.timers, "skipped": s.skipped,
                "open_orders": len(algo.orders),
                "calls": algo.instance.calls, "fuel_used": algo.instance.fuel_used,
                "memory_bytes": algo.instance.memory_bytes, "timer_ms": algo.timer_ms or None}

    # -- the supervisor ---------------------------------------------------------------------------
    async def _supervise(self) -> None:
        every = max(0.2, min(self.lease_seconds / 4, 2.0))
        while True:
            try:
                await self.reconcile()
            except Exception:
                log.exception("algos: supervisor pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), every)
            self._wake.clear()

    async def reconcile(self) -> None:
        """One supervisor pass: renew, apply the store's wishes, take what wants to run."""
        began = time.monotonic()
        held_ids = list(self.algos)
        held = await anyio.to_thread.run_sync(lambda: self.store.renew_deployments(
            self.owner, held_ids, self.lease_seconds))
        self.fence_until = began + self.lease_seconds * 2 / 3
        states = await anyio.to_thread.run_sync(lambda: self.store.deployment_states(list(self.algos)))
        for dep_id in held_ids:
            # Not renewed: deleted (no row), or another coordinator took it.
            if dep_id not in held and dep_id in self.algos and dep_id in states:
                self._end(self.algos[dep_id], "lease lost (another coordinator took this deployment)",
                          failed=False, release=False)
        for dep_id, algo in list(self.algos.items()):
            st = states.get(dep_id)
            if st is None:
                self._end(algo, "deleted", failed=False, release=False)
            elif st["key_revoked"]:  # revoked: the store stopped it; say why
                self._end(algo, KEY_REVOKED, failed=False)
            elif st["desired_state"] != "running":
                self._end(algo, "stopped by request", failed=False)
            elif (st["wasm_sha256"] != algo.sha or list(st["symbols"]) != algo.symbols
                  or {str(k): str(v) for k, v in dict(st["params"]).items()} != algo.params
                  or bool(st["sandbox"]) != algo.paper):
                self._end(algo, "redeployed: restarting with the new module, symbols or params", failed=False)
        await self._release_pending()
        wanted = await anyio.to_thread.run_sync(lambda: self.store.wanted_deployments(self.owner))
        for row in wanted:
            # Ended here since the release above (a trap on the loop meanwhile): released next pass.
            if row["deployment_id"] in self.algos or row["deployment_id"] in self._released:
                continue
            epoch = await anyio.to_thread.run_sync(self.store.claim_deployment, row["deployment_id"],
                                                   self.owner, self.lease_seconds)
            if epoch is None:
                continue
            seq = await anyio.to_thread.run_sync(self.store.next_algo_log_seq, row["deployment_id"])
            # Lines of its last start here may still wait for the flusher: never reuse their seq.
            seq = max(seq, self._next_seq.get(row["deployment_id"], 0))
            # Compiled off the loop (a big module takes seconds; its deploy's compile is usually
            # still kept); an error is the start's, said by _begin.
            try:
                compiled: wasmtime.Module | str = (await anyio.to_thread.run_sync(functools.partial(
                    compile_module, bytes(row["wasm"]), self.limits.memory_bytes, wait=120)))[0]
            except (abi.AbiError, CompilerBusy) as exc:
                compiled = str(exc)
            self._begin(row, epoch, seq, compiled)
        await self._release_pending()

    # -- starting and ending ----------------------------------------------------------------------
    def _begin(self, row: Mapping[str, Any], epoch: int, next_seq: int, module: wasmtime.Module | str) -> None:
        """Start *row* with its compiled *module* (a string: why it could not be compiled)."""
        algo = Algo(self, row, epoch, next_seq)
        self.algos[algo.id] = algo
        try:
            if isinstance(module, str):
                raise abi.AbiError("wasm", module)
            for sym in algo.symbols:
                inst = self.market.instrument(sym)
                view = self.market.book(sym)
                algo.instruments.append(inst)
                algo.views.append(view)
                algo.px_mul.append(_ratio(view.price_scale))
                algo.qty_mul.append(_ratio(view.size_scale))
                self.market.ensure(sym)
        except (abi.AbiError, MarketError, KeyError) as exc:
            self._end(algo, f"cannot start: {exc}", failed=True)
            return
        mode = "paper" if algo.paper else "live where the venue is live"
        algo.log(f"started (epoch {epoch}) on {self.owner}: symbols {', '.join(algo.symbols)}; "
                 f"params {json.dumps(algo.params, sort_keys=True)}; {mode}", "system")
        try:
            # Its log rate by the market clock too: a replay drops the same lines every time.
            algo.instance = AlgoInstance(module, algo, self.limits, clock=lambda: algo.now_ms() / 1000)
        except AlgoTrap as exc:
            self._end(algo, exc.reason, failed=True)
            return
        for i, sym in enumerate(algo.symbols):
            book_symbol = self.market.instrument(sym).book_symbol
            self._books[book_symbol] = [*self._books.get(book_symbol, ()), (algo, i)]
        self._enqueue(lambda: self._init(algo))

    def _init(self, algo: Algo) -> None:
        inst = algo.instance
        if inst is None or algo.stopping:
            return
        self._guard(algo, inst.init)
        for i in range(len(algo.symbols)):  # the books as they are now
            self._quote(algo, i)

    def _end(self, algo: Algo, reason: str, *, failed: bool, release: bool = True,
             cancel_orders: bool = True) -> None:
        """Stop *algo* here: no more calls, its working orders cancelled, its deployment released
        (``failed``: with the restart backoff)."""
        if self.algos.get(algo.id) is not algo:
            return
        del self.algos[algo.id]
        self.timed.discard(algo.id)
        algo.stopping = reason
        for sym_book, entries in list(self._books.items()):
            kept = [e for e in entries if e[0] is not algo]
            if kept:
                self._books[sym_book] = kept
            else:
                del self._books[sym_book]
        algo.log(("failed: " if failed else "stopped: ") + reason, "system")
        if cancel_orders and algo.orders:
            self.spawn(self.engine.cancel_graphs(algo.client_id, [o.graph_id for o in algo.orders.values()]))
        if release:
            self._released[algo.id] = (reason, failed)
            self.poke()

    async def _release_pending(self) -> None:
        for dep_id in list(self._released):
            await anyio.to_thread.run_sync(self._release_sync, dep_id)

    def _release_sync(self, dep_id: str) -> None:
        reason, failed = self._released.get(dep_id, (None, False))
        # Forgotten only once stored: until then the deployment is not taken again here.
        self.store.release_deployment(dep_id, self.owner, reason=reason, failed=failed)
        self._released.pop(dep_id, None)

    # -- calling modules: one queue -----------------------------------------------------------------
    def _enqueue(self, thunk: Callable[[], None], *, now: bool = True) -> None:
        self._queue.append(thunk)
        if self._busy:
            return
        if now:
            self._pump()
        elif not self._pump_scheduled and self._loop is not None:
            self._pump_scheduled = True
            self._loop.call_soon(self._pump)

    def _pump(self) -> None:
        self._pump_scheduled = False
        if self._busy:
            return
        self._busy = True
        try:
            while self._queue:
                thunk = self._queue.popleft()
                try:
                    thunk()
                except _Trapped:
                    pass
                except Exception:  # a bug here must not stop the other algos' events
                    log.exception("algos: an event could not be delivered")
        finally:
            self._busy = False

    def _guard(self, algo: Algo, call: Callable[[], None]) -> None:
        inst = algo.instance
        if algo.stopping is not None or inst is None:
            return
        before = inst.fuel_used
        try:
            call()
        except AlgoTrap as exc:
            self._end(algo, exc.reason, failed=True)
            raise _Trapped() from None
        finally:
            algo.budget.left -= inst.fuel_used - before

    def _over_budget(self, algo: Algo) -> bool:
        """Whether *algo* has burnt its fuel for the second (its quotes and timer ticks are then
        skipped; fills and order ends are always delivered); said in its log once a spell."""
        budget = algo.budget
        if budget.ok(self.market.clock.now()):
            if budget.out:
                budget.out = False
                algo.log(f"back under its fuel budget; {algo.stats.skipped} quote(s) or timer tick(s) skipped "
                         "so far", "system")
            return False
        algo.stats.skipped += 1
        if not budget.out:
            budget.out = True
            algo.log(f"over its fuel budget ({budget.rate:,.0f} a second): quotes and timer ticks are skipped "
                     "until it recovers", "system")
        return True

    # -- market events --------------------------------------------------------------------------------
    def _kept(self) -> set[str]:
        return {s for algo in self.algos.values() for s in algo.symbols}

    def _on_events(self, events: Sequence[BookEvent]) -> None:
        books = self._books
        if not books:
            return
        if len(events) == 1:  # the usual batch: one venue update
            sym = getattr(events[0], "symbol", None)
            if sym not in books:
                return
            touched: Sequence[str] = (sym,)
        else:
            touched = list(dict.fromkeys(s for ev in events if (s := getattr(ev, "symbol", None)) in books))
            if not touched:
                return
        # Inside an engine step (its own orders moved the book) the call waits for the loop.
        inline = not getattr(self.engine, "_applying", False)
        if inline and not self._busy and not self._queue:
            # Nothing waits: call now, with no queue entry (the order of events is kept: the
            # queue is empty), then deliver what the calls queued (fills, order ends).
            self._busy = True
            try:
                self._quotes(touched)
            except Exception:
                log.exception("algos: an event could not be delivered")
            finally:
                self._busy = False
            if self._queue:
                self._pump()
            return
        self._enqueue(functools.partial(self._quotes, touched), now=inline)

    def _quotes(self, book_symbols: Sequence[str]) -> None:
        """The quotes of *book_symbols* to the algos that follow them, then the timers due."""
        for book_symbol in book_symbols:
            for algo, i in self._books.get(book_symbol, ()):
                try:
                    self._quote(algo, i)
                except _Trapped:
                    continue
        if self.timed:
            self._run_timers()

    def _quote(self, algo: Algo, i: int) -> None:
        view = algo.views[i]
        b = view.best(Side.BID)
        a = view.best(Side.ASK)
        pn, pd = algo.px_mul[i]
        qn, qd = algo.qty_mul[i]
        q = (0, 0) if b is None else (b[0] * pn // pd, b[1] * qn // qd)
        q2 = (0, 0) if a is None else (a[0] * pn // pd, a[1] * qn // qd)
        top = (q[0], q[1], q2[0], q2[1])
        if top == algo.last[i] or self._over_budget(algo):
            return
        algo.last[i] = top
        algo.stats.quotes += 1
        inst = algo.instance
        if inst is not None:
            self._guard(algo, lambda: inst.on_quote(i, q[0], q[1], q2[0], q2[1]))

    # -- engine events -------------------------------------------------------------------------------
    def observed(self, algo: Algo, order: _Order, channel: str, data: dict[str, Any]) -> None:
        """The engine decided something about one of *algo*'s graphs (a fill, an end)."""
        self._enqueue(lambda: self._deliver(algo, order, channel, data), now=False)

    def _deliver(self, algo: Algo, order: _Order, channel: str, data: dict[str, Any]) -> None:
        inst = algo.instance
        if inst is None or algo.stopping is not None:
            return
        if channel == "fills":
            algo.stats.fills += 1
            sym = order.syms.get(data["symbol"], -1)
            # The message's price is a float of the exact decimal: its repr is that decimal.
            px = int(Decimal(repr(float(data["price"]))) * E8)
            side = 0 if data["side"] == "buy" else 1
            qty = int(data["qty_1e8"])
            self._guard(algo, lambda: inst.on_fill(order.handle, sym, side, px, qty))
        elif channel == "graphs" and data.get("status") != "active":
            algo.orders.pop(order.handle, None)
            algo.by_graph.pop(order.graph_id, None)
            status = {"completed": abi.ORDER_FILLED, "cancelled": abi.ORDER_CANCELLED}.get(
                str(data.get("status")), abi.ORDER_REJECTED)
            self._guard(algo, lambda: inst.on_order(order.handle, status))

    # -- timers ------------------------------------------------------------------------------------------
    def timers_changed(self) -> None:
        self._timer_wake.set()

    def _run_timers(self) -> None:
        now = now_ms(self.market.clock)
        for algo in list(self.algos.values()):
            due = algo.timer_due
            if due is None or due > now or algo.instance is None:
                continue
            algo.timer_due = due + algo.timer_ms if due + algo.timer_ms > now else now + algo.timer_ms
            if self._over_budget(algo):
                continue
            algo.stats.timers += 1
            inst = algo.instance
            try:
                self._guard(algo, functools.partial(inst.on_timer, due))
            except _Trapped:
                continue

    def run_due_timers(self) -> None:
        """Run the timers due by the market clock (the replay driver calls this)."""
        self._enqueue(self._run_timers)

    async def _timers(self) -> None:
        while True:
            dues = [a.timer_due for a in self.algos.values() if a.timer_due is not None]
            delay = 1.0
            if dues:
                delay = min(max((min(dues) - now_ms(self.market.clock)) / 1000, 0.001), 1.0)
            self._timer_wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._timer_wake.wait(), delay)
            if dues or self._timer_wake.is_set():
                self._enqueue(self._run_timers)

    # -- logs -----------------------------------------------------------------------------------------------
    def add_log(self, algo: Algo, line: str, stream: str) -> None:
        self._logs.append({"deployment_id": algo.id, "seq": algo.log_seq, "epoch": algo.epoch, "ts": time.time(),
                           "stream": stream, "line": line})
        algo.log_seq += 1
        self._next_seq[algo.id] = algo.log_seq
        if stream == "system":
            log.info("algo %s (%s): %s", algo.name, algo.id, line)

    async def _flush_logs(self) -> None:
        rows, self._logs = self._logs, []
        if rows:
            try:
                await anyio.to_thread.run_sync(lambda: self.store.append_algo_logs(rows))
            except Exception:
                log.exception("algos: could not store %d log line(s)", len(rows))

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(LOG_FLUSH_SECONDS)
            await self._flush_logs()

    async def flush(self) -> None:
        """Store the log lines so far and wait for the engine's commits (tests, replay)."""
        await self._flush_logs()
        await self.engine.flush()


class _Trapped(Exception):
    """An algo trapped and was stopped; the queue goes on with the others."""


def _ratio(scale: int) -> tuple[int, int]:
    """Multiply-divide turning book units of *scale* into ×1e8 (exact when scale divides 1e8)."""
    return (E8 // scale, 1) if E8 % scale == 0 else (E8, scale)


__all__ = ["Algo", "AlgoManager", "Stats", "fixed"]
