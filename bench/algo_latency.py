"""Benchmark: a quote update → the order it triggers accepted by the matching engine,
for a WASM algo and for the same logic as a hosted Python strategy, in one run.

One process serves a real coordinator (uvicorn in a thread: the app with the
simulated Coinbase, the graph engine, SQLite) and injects book updates into
its market on its own event loop. Each injection puts an ask on BTC-USD below
a threshold (a new price each time), then takes it away. Two reactors watch:

* **algo**: ``bench``'s WAT taker deployed through ``POST /v1/deployments``
  (paper): its ``on_quote`` buys at the ask whenever the ask is under the
  threshold. Measured inside the server: from just before ``market.apply``
  of the injected update to the moment the matching core accepted the order
  (``TradingEngine.last_accepted_at``); and, beside it, to the moment
  ``seq.submit`` returned into the module (the paper fill booked, the graph
  and fill queued for the store writer).
* **hosted Python**: a subprocess running the SDK (``sequence_markets``), as a
  hosted strategy would: ``prices:BTC-USD`` over the WebSocket, and on an ask
  under the threshold ``POST /v1/graphs`` (paper) through the SDK. Measured
  from the same injection instant to the ack in the client
  (``time.perf_counter`` is CLOCK_MONOTONIC, one clock for both processes).

The algo is measured three ways, 1 000 quotes each:

* ``idle``: each quote 2 ms after the last, the hosted client's order handled
  in the same process between them (HTTP, JSON, the store): other work leaves
  the caches cold for the algo's path;
* ``gap``: each quote 2 ms after the last with nothing between (no hosted
  client): what the wait alone costs, beside ``idle``;
* ``market``: each quote after 2 ms of *other* books' updates (a busy market
  process: the CPU is awake, its caches hold other code);
* ``busy``: quotes back to back on the algo's own book (the path stays warm;
  each order's store write runs behind it on the writer thread, as in production).

Garbage collection: the coordinator runs it between events (``api/gcpace.py``).
Every run counts the collections that started inside a measured path; one more
run with ``gc_pacing_ms=0`` (CPython's own collector) is the baseline beside it.

Floors measured in the same run: ``market.apply`` of the same update with no
algo deployed (back to back, and each 2 ms after the last as in ``idle``: what
waking an idle CPU costs the market's own step), and one bare call into the
module (no order).

    python bench/algo_latency.py [--n 1000] [--runs 3] [--no-baseline]

Prints a table and writes bench/results/algo_latency.json. Target: algo p99 ≤ 100 µs.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import bisect
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench._platform import host, pct, table, write  # noqa: E402

SYMBOL = "BTC-USD"
THRESHOLD_UNITS = 5_000_000  # $50,000.00 in cents: far under the simulated BTC price
TAKER = """
(module
 (import "seq" "submit" (func $submit (param i32 i32 i64 i64 i32) (result i64)))
 (memory (export "memory") 1)
 (func (export "on_quote") (param $s i32) (param $bp i64) (param $bq i64) (param $ap i64) (param $aq i64)
   (if (i32.and (i64.gt_s (local.get $ap) (i64.const 0)) (i64.lt_s (local.get $ap) (i64.const %d)))
     (then (drop (call $submit (local.get $s) (i32.const 0) (local.get $ap) (i64.const 10000) (i32.const 0)))))))
"""


# -- the hosted-Python reactor (a subprocess) -------------------------------------------------
def client(url: str, key: str, threshold: float) -> None:
    """Subscribe to prices; on an ask under *threshold* submit a paper buy; print the ack time."""
    from sequence_markets import Sequence

    seq = Sequence(key, url)
    seen: set[float] = set()
    print("ready", flush=True)
    for msg in seq.stream([f"prices:{SYMBOL}"]):
        ask = (msg.get("data") or {}).get("ask")
        if ask is None or ask >= threshold or ask in seen:
            continue
        seen.add(ask)
        seq.graph([seq.node("o", SYMBOL, "buy", 0.0001, "coinbase", limit_price=ask)], sandbox=True)
        print(json.dumps({"ask": ask, "t": time.perf_counter()}), flush=True)


# -- the server, in this process ------------------------------------------------------------------
class Server:
    def __init__(self, data_dir: Path, gc_pacing_ms: float = 10.0) -> None:
        import uvicorn

        from sequence.api.app import build_core, create_app
        from sequence.settings import Settings

        settings = Settings.from_env({}, data_dir=data_dir, port=0, venues={"kalshi": "off", "polymarket": "off",
                                                                          "coinbase": "sim"},
                                     algo_order_rate=100_000, gc_pacing_ms=gc_pacing_ms)
        self.core = build_core(settings, {})
        cid = self.core.store.create_client("bench")
        _r, self.key = self.core.store.create_api_key(cid, "live", "live")
        self.app = create_app(settings, core=self.core)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning",
                                                    access_log=False, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> Server:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        market = self.core.market
        assert market is not None and market._task is not None
        self.loop = market._task.get_loop()
        return self

    def on_loop(self, fn: Any) -> Any:
        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def inject(srv: Server, price: int | None) -> tuple[float, float]:
    """On the server's loop: put an ask at *price* (None: take the last one away);
    returns (t0 before apply, t after apply)."""
    from sequence.market.book import Side
    from sequence.market.events import LevelUpdate

    market = srv.core.market
    assert market is not None
    state = inject.__dict__.setdefault("state", {"price": None})

    def go() -> tuple[float, float]:
        book = market.book(SYMBOL)
        ts = book.ts_ms + 1
        if price is None:
            ev = LevelUpdate(ts, SYMBOL, Side.ASK, state["price"], 0)
        else:
            ev = LevelUpdate(ts, SYMBOL, Side.ASK, price, 100_000_000)
            state["price"] = price
        t0 = time.perf_counter()
        market.apply([ev])
        return t0, time.perf_counter()

    return srv.on_loop(go)  # type: ignore[no-any-return]


class GcWatch:
    """Collections (start, end, generation) while installed, to count those inside measured paths."""

    def __init__(self) -> None:
        self.spans: list[tuple[float, float, int]] = []
        self._t = 0.0

    def __enter__(self) -> GcWatch:
        gc.callbacks.append(self._cb)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._cb)

    def _cb(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t = time.perf_counter()
        else:
            self.spans.append((self._t, time.perf_counter(), info["generation"]))

    def inside(self, paths: list[tuple[float, float]]) -> int:
        """How many collections started inside one of *paths* (sorted (t0, t1) pairs)."""
        starts = [p[0] for p in paths]
        n = 0
        for t, _end, _gen in self.spans:
            i = bisect.bisect_right(starts, t) - 1
            n += i >= 0 and t < paths[i][1]
        return n


def one_run(n: int, tmp: Path, run: int, gc_pacing_ms: float = 10.0) -> dict[str, Any]:
    import httpx

    from sequence.market.clock import iso  # noqa: F401 (imports the package before timing)

    srv = Server(tmp / f"run{run}", gc_pacing_ms).start()
    try:
        mgr = srv.core.algos
        assert mgr is not None
        # Floor: the same update applied with nobody reacting.
        floor, floor_idle = [], []
        for i in range(200):
            t0, t1 = inject(srv, THRESHOLD_UNITS - 1000 - i)
            inject(srv, None)
            floor.append(t1 - t0)
        for i in range(300):  # the same, each 2 ms after the last, as the idle scenario's quotes come
            t0, t1 = inject(srv, THRESHOLD_UNITS - 2000 - i)
            inject(srv, None)
            floor_idle.append(t1 - t0)
            time.sleep(0.002)
        import wasmtime

        wasm = wasmtime.wat2wasm(TAKER % (THRESHOLD_UNITS * 1_000_000))  # cents → ×1e8
        with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {srv.key}"}) as c:
            r = c.post("/v1/deployments", json={"name": "bench-taker", "wasm_base64": base64.b64encode(wasm).decode(),
                                                "symbols": [SYMBOL], "sandbox": True, "start": True})
            r.raise_for_status()
        deadline = time.monotonic() + 30
        # Listed in mgr.algos a moment before its instance exists (this thread reads the loop's state).
        while not mgr.algos or next(iter(mgr.algos.values())).instance is None:
            assert time.monotonic() < deadline, "the algo did not start"
            time.sleep(0.05)
        algo = next(iter(mgr.algos.values()))
        # One bare call into the module (an ask above the threshold: no order).
        inst = algo.instance
        assert inst is not None
        bare_call = srv.on_loop(lambda: _time_calls(inst))
        proc = subprocess.Popen([sys.executable, __file__, "--client", srv.url, srv.key, str(THRESHOLD_UNITS / 100)],
                                stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.5)  # subscribed
        algo_lat, algo_done, hosted_lat = [], [], []
        paths: list[tuple[float, float]] = []
        engine = srv.core.trading
        assert engine is not None
        with GcWatch() as watch:
            for i in range(n):
                price = THRESHOLD_UNITS - 10_000 - i
                orders = algo.stats.orders
                t0, _t1 = inject(srv, price)
                if algo.stats.orders == orders + 1:
                    algo_lat.append(engine.last_accepted_at - t0)  # the matching core took the order
                    algo_done.append(mgr.last_order_at - t0)  # seq.submit returned: fill booked, commit queued
                    paths.append((t0, engine.last_accepted_at))
                line = proc.stdout.readline()
                ack = json.loads(line)
                assert abs(ack["ask"] - price / 100) < 1e-6, (ack, price)
                hosted_lat.append(ack["t"] - t0)
                inject(srv, None)
                time.sleep(0.002)
            proc.kill()
            proc.wait()
            idle_gc = watch.inside(paths)
        # The same spacing with nothing between the quotes.
        gap_lat = []
        for i in range(n):
            orders = algo.stats.orders
            t0, _t1 = inject(srv, THRESHOLD_UNITS - 20_000 - i)
            if algo.stats.orders == orders + 1:
                gap_lat.append(engine.last_accepted_at - t0)
            inject(srv, None)
            time.sleep(0.002)
        # A busy market process: each quote after 2 ms of other books' updates.
        with GcWatch() as watch:
            market_lat, paths = asyncio.run_coroutine_threadsafe(
                _burst(srv, algo, engine, n, 200_000, between_s=0.002), srv.loop).result(600)
            market_gc = watch.inside(paths)
        # The algo's own book ticking back to back: the path stays warm in the caches.
        with GcWatch() as watch:
            busy_lat, paths = asyncio.run_coroutine_threadsafe(
                _burst(srv, algo, engine, n, 400_000), srv.loop).result(600)
            busy_gc = watch.inside(paths)
        return {"floor_apply": floor, "floor_idle": floor_idle, "bare_call": bare_call, "algo": algo_lat, "algo_done": algo_done,
                "algo_gap": gap_lat, "algo_market": market_lat, "algo_busy": busy_lat, "hosted": hosted_lat,
                "gc_inside": {"idle": idle_gc, "market": market_gc, "busy": busy_gc},
                "algo_orders": algo.stats.orders}
    finally:
        srv.stop()


async def _burst(srv: Server, algo: Any, engine: Any, n: int, below: int,
                 between_s: float = 0.0) -> tuple[list[float], list[tuple[float, float]]]:
    """On the loop: *n* quotes on the algo's book (each ask put, then taken away), one per turn
    of the loop, so the store writer commits behind them as it would behind a busy book; with
    *between_s*, that long of other books' level updates before each."""
    from sequence.market.book import Side
    from sequence.market.events import LevelUpdate

    market = srv.core.market
    assert market is not None
    others = [s for s in market.symbols() if s != SYMBOL][:50]
    out, paths = [], []
    j = 0
    for i in range(n):
        if between_s:
            until = time.perf_counter() + between_s
            while time.perf_counter() < until:
                sym = others[j % len(others)]
                j += 1
                view = market.book(sym)
                bid = view.best(Side.BID)
                if bid is not None:  # one more unit on the best bid: a real update, fanned out as usual
                    market.apply([LevelUpdate(view.ts_ms + 1, sym, Side.BID, bid[0], bid[1] + 1)])
        price = THRESHOLD_UNITS - below - i
        book = market.book(SYMBOL)
        orders = algo.stats.orders
        t0 = time.perf_counter()
        market.apply([LevelUpdate(book.ts_ms + 1, SYMBOL, Side.ASK, price, 100_000_000)])
        if algo.stats.orders == orders + 1:
            out.append(engine.last_accepted_at - t0)
            paths.append((t0, engine.last_accepted_at))
        market.apply([LevelUpdate(book.ts_ms + 1, SYMBOL, Side.ASK, price, 0)])
        await asyncio.sleep(0)
    return out, paths


def _time_calls(inst: Any, n: int = 2000) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        inst.on_quote(0, 1, 1, THRESHOLD_UNITS * 2_000_000, 1)
        out.append(time.perf_counter() - t0)
    return out


SCENARIOS = ("idle", "gap", "market", "busy")
COLS = ("floor_apply_p50_us", "floor_idle_p99_us", "bare_call_p50_us", "idle_p50_us", "idle_p99_us", "gap_p50_us", "gap_p99_us",
        "market_p50_us", "market_p99_us", "busy_p50_us", "busy_p99_us", "submit_returned_p99_us", "hosted_p50_us",
        "hosted_p99_us", "gc_inside")
HEADERS = ("", "floor: apply", "idle floor p99", "bare call", "idle p50", "idle p99", "gap p50", "gap p99", "market p50",
           "market p99", "busy p50", "busy p99", "submit ret p99", "hosted p50", "hosted p99", "GC inside i/m/b")


def us(xs: list[float], p: float) -> float:
    """The *p*-th percentile (0-100) in µs."""
    return round(pct(xs, p) * 1e6, 1)


def summarise(res: dict[str, Any]) -> dict[str, Any]:
    gci = res["gc_inside"]
    return {
        "floor_apply_p50_us": us(res["floor_apply"], 50),
        "floor_idle_p50_us": us(res["floor_idle"], 50), "floor_idle_p99_us": us(res["floor_idle"], 99),
        "bare_call_p50_us": us(res["bare_call"], 50),
        "idle_p50_us": us(res["algo"], 50), "idle_p99_us": us(res["algo"], 99),
        "idle_max_us": round(max(res["algo"]) * 1e6, 1),
        "gap_p50_us": us(res["algo_gap"], 50), "gap_p99_us": us(res["algo_gap"], 99),
        "market_p50_us": us(res["algo_market"], 50), "market_p99_us": us(res["algo_market"], 99),
        "busy_p50_us": us(res["algo_busy"], 50), "busy_p99_us": us(res["algo_busy"], 99),
        "submit_returned_p50_us": us(res["algo_done"], 50), "submit_returned_p99_us": us(res["algo_done"], 99),
        "hosted_p50_us": us(res["hosted"], 50), "hosted_p99_us": us(res["hosted"], 99),
        "gc_inside": f"{gci['idle']}/{gci['market']}/{gci['busy']}",
        "gc_inside_total": sum(gci.values()),
        "n": len(res["algo"]), "hosted_n": len(res["hosted"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000, help="quotes per scenario a run")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-baseline", action="store_true", help="skip the run with CPython's own GC (no pacing)")
    ap.add_argument("--client", nargs=3, metavar=("URL", "KEY", "THRESHOLD"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        client(args.client[0], args.client[1], float(args.client[2]))
        return
    load_before = os.getloadavg()
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-algo-") as tmp:
        for r in range(args.runs):
            runs.append(summarise(one_run(args.n, Path(tmp), r)))
        baseline = None if args.no_baseline else summarise(one_run(args.n, Path(tmp), args.runs, gc_pacing_ms=0))
    rows = [(f"run {i + 1}", *(str(one[k]) for k in COLS)) for i, one in enumerate(runs)]
    med: dict[str, Any] = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k != "gc_inside"}
    med["gc_inside"] = f"{med['gc_inside_total']:g} (all)"
    rows.append(("median", *(str(med[k]) for k in COLS)))
    if baseline is not None:
        rows.append(("no GC pacing", *(str(baseline[k]) for k in COLS)))
    table("quote update -> order accepted by the matching engine (µs)", rows, HEADERS)
    ratio = med["hosted_p50_us"] / med["idle_p50_us"] if med["idle_p50_us"] else None
    met = {s: med[f"{s}_p99_us"] <= 100 for s in SCENARIOS}
    print(f"hosted Python / algo (idle) at p50: {ratio:.0f}x; algo p99 target <= 100 us: "
          + ", ".join(f"{s} {'met' if ok else 'NOT met'}" for s, ok in met.items())
          + f"; load {load_before[0]:.2f} -> {os.getloadavg()[0]:.2f}")
    write("algo_latency", {"runs": runs, "median": med, "baseline_no_gc_pacing": baseline,
                           "hosted_over_algo_p50": ratio, "target_p99_us": 100, "met": met,
                           "load_before": load_before, "load_after": os.getloadavg(), "host": host(), "n": args.n})


if __name__ == "__main__":
    main()
