"""Benchmark: live venue feeds — latency a delta gains through the platform, and
the deltas per second one venue session sustains on one core.

Against the protocol-faithful local venue servers of the tests (tests/venues),
each in its own process pinned to core 1:

* **Latency.** The market API (the coordinator's market routes and
  ``/v1/stream``, ``sequence.api.standalone``) runs a live connector to the venue
  in a uvicorn process pinned to core 0. A probe moves the best bid of one
  market by one tick at the venue; at the same instant the venue writes a bare
  frame to a *raw* WebSocket the bench also holds. The platform's added time
  is ``(prices:{symbol} message arrives) − (raw frame arrives)``: the same
  loopback, the same client loop, only the platform between them. The same
  probe is timed through ``GET /v1/quotes`` (polled back to back; the poll's
  own round trip bounds its resolution). Target p99 ≤ 5 ms.
* **Throughput.** In this process (pinned to core 0): the connector and the
  market service, no HTTP. The venue blasts N deltas as fast as its socket
  takes them; the bench counts the CPU seconds this process spent until the
  last delta is applied and checks the book equals the venue's, level for
  level. Deltas per CPU second = what one session sustains on one core
  (target ≥ 50,000). Baseline in the same process: the same connector with a
  sink that only counts (parse cost alone); the ratio is what applying and
  publishing adds.

    python bench/live_feed.py [--venues kalshi,polymarket,coinbase] [--deltas 100000]
                              [--probes 300] [--rounds 3]

Prints a table and writes bench/results/live_feed.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from _procs import free_port, pct, pin, wait_port  # noqa: E402

RESULTS = ROOT / "bench" / "results"
KEY_ID = "bench-key"


# == the venue process ===========================================================================
class VenueSide:
    """One fake venue with the bench's controls: which market, nudge it, blast it, its levels."""

    def __init__(self, name: str, key_file: Path) -> None:
        self.name = name
        self.raw: set[Any] = set()  # bench sockets that get a bare frame with every probe
        self.up = False
        if name == "kalshi":
            from cryptography.hazmat.primitives import serialization
            from cryptography.hazmat.primitives.asymmetric import rsa
            from tests.venues.kalshi import FakeKalshi

            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
            self.fake: Any = FakeKalshi()
            self.fake.add_key(KEY_ID, key.public_key())
            m = next(m for m in self.fake.markets.values()
                     if m.structure == "linear_cent" and m.yes and m.no and not m.combo and m.status == "active"
                     and max(m.yes) + Decimal("0.01") < 1 - max(m.no))
            self.market = m
            self.symbol = m.ticker
        elif name == "polymarket":
            from tests.venues.polymarket import FakePolymarket

            self.fake = FakePolymarket()
            m = next(m for ev in self.fake.events for m in ev.markets
                     if m.active and m.book.tick == "0.01" and m.book.bids and m.book.asks
                     and max(m.book.bids) + Decimal("0.01") < min(m.book.asks))
            self.market = m
            self.symbol = m.yes
        elif name == "coinbase":
            from tests.venues.coinbase import FakeCoinbase

            self.fake = FakeCoinbase()
            self.symbol = "BTC-USD"
        else:
            raise SystemExit(f"unknown venue {name}")

    # -- probe: move the best bid one tick up, then back -------------------------------------------
    def best_bid_and_tick(self) -> tuple[Decimal, Decimal]:
        if self.name == "kalshi":
            return max(self.market.yes), Decimal("0.01")
        if self.name == "polymarket":
            return max(self.market.book.bids), Decimal(self.market.book.tick)
        book = self.fake.books[self.symbol]["bid"]
        return max(book), Decimal(self.fake.products[self.symbol]["price_increment"])

    async def nudge(self) -> dict[str, Any]:
        best, tick = self.best_bid_and_tick()
        if not self.up:
            price, expect = best + tick, best + tick
        else:
            price, expect = best, best - tick  # remove the level added last time
            expect = max(p for p in self._bids() if p != price)
        up, self.up = not self.up, not self.up
        frame = json.dumps({"probe": str(expect)})
        sent = time.monotonic_ns()
        for ws in list(self.raw):
            await ws.send_text(frame)
        if self.name == "kalshi":
            await self.fake.move(self.symbol, "yes", price, Decimal(1) if up else Decimal(-1))
        elif self.name == "polymarket":
            await self.fake.set_level(self.symbol, "BUY", str(price), "10" if up else "0")
        else:
            await self.fake.set_level(self.symbol, "bid", price, "0.5" if up else "0")
        return {"sent_ns": sent, "bid": float(expect)}

    def _bids(self) -> list[Decimal]:
        if self.name == "kalshi":
            return list(self.market.yes)
        if self.name == "polymarket":
            return list(self.market.book.bids)
        return list(self.fake.books[self.symbol]["bid"])

    async def blast(self, n: int, per_message: int) -> list[tuple[int, str, str]]:
        if self.name == "kalshi":
            return await self.fake.blast(self.symbol, n)  # type: ignore[no-any-return]
        if self.name == "polymarket":
            return await self.fake.blast(self.symbol, n, per_message)  # type: ignore[no-any-return]
        return await self.fake.burst(self.symbol, n, per_message)  # type: ignore[no-any-return]

    def levels(self) -> dict[str, list[list[float]]]:
        """The YES book (or the product's) as the platform should show it: (price, size)."""
        if self.name == "kalshi":
            m = self.market
            bids = sorted(((float(p), float(c)) for p, c in m.yes.items()), reverse=True)
            asks = sorted((float(1 - p), float(c)) for p, c in m.no.items())
        elif self.name == "polymarket":
            b = self.market.book
            bids = sorted(((float(p), round(float(s), 2)) for p, s in b.bids.items()), reverse=True)
            asks = sorted((float(p), round(float(s), 2)) for p, s in b.asks.items())
        else:
            book = self.fake.books[self.symbol]
            bids = sorted(((float(p), float(q)) for p, q in book["bid"].items()), reverse=True)
            asks = sorted((float(p), float(q)) for p, q in book["offer"].items())
        return {"bids": [list(x) for x in bids if x[1] > 0], "asks": [list(x) for x in asks if x[1] > 0]}

    def app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Mount, Route, WebSocketRoute
        from starlette.websockets import WebSocket, WebSocketDisconnect

        async def info(_r: Request) -> JSONResponse:
            return JSONResponse({"venue": self.name, "symbol": self.symbol})

        async def nudge(_r: Request) -> JSONResponse:
            return JSONResponse(await self.nudge())

        async def blast(r: Request) -> JSONResponse:
            body = await r.json()
            stamps = await self.blast(int(body["n"]), int(body.get("per_message", 1)))
            return JSONResponse({"n": len(stamps), "first_ns": stamps[0][0], "last_ns": stamps[-1][0]})

        async def levels(_r: Request) -> JSONResponse:
            return JSONResponse(self.levels())

        async def raw(ws: WebSocket) -> None:
            await ws.accept()
            self.raw.add(ws)
            try:
                while True:
                    await ws.receive_text()
            except WebSocketDisconnect:
                pass
            finally:
                self.raw.discard(ws)

        return Starlette(routes=[
            Route("/_bench/info", info), Route("/_bench/nudge", nudge, methods=["POST"]),
            Route("/_bench/blast", blast, methods=["POST"]), Route("/_bench/levels", levels),
            WebSocketRoute("/_bench/raw", raw), Mount("", app=self.fake.app),
        ])


def serve_venue(name: str, port: int, key_file: Path) -> None:
    import uvicorn

    pin({1})
    side = VenueSide(name, key_file)
    uvicorn.run(side.app(), host="127.0.0.1", port=port, log_level="warning", access_log=False,
                ws="websockets-sansio", ws_ping_interval=None)


def live_config(name: str, port: int, key_file: Path, **kw: Any) -> Any:
    from sequence.market.venues.live import LiveConfig

    url, ws = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}"
    if name == "kalshi":
        return LiveConfig(venue="kalshi", api_url=url + "/trade-api/v2", ws_url=ws + "/trade-api/ws/v2",
                          key_id=KEY_ID, private_key_pem=key_file.read_text(), **kw)
    if name == "polymarket":
        return LiveConfig(venue="polymarket", api_url=url, ws_url=ws + "/ws/market", urls={"gamma": url + "/gamma"},
                          **kw)
    return LiveConfig(venue="coinbase", api_url=url + "/api/v3/brokerage", ws_url=ws, **kw)


def our_symbol(name: str, venue_symbol: str) -> str:
    return f"{venue_symbol}-YES" if name == "kalshi" else venue_symbol


# == the platform process (latency) ===============================================================
def serve_platform(name: str, port: int, venue_port: int, key_file: Path) -> None:
    import uvicorn

    from sequence.api.standalone import build_app
    from sequence.market import MarketService, RealClock
    from sequence.market.venues.live import live_venue

    pin({0})

    class Principal:
        client_id = "bench"
        key_id = "bench"
        mode = "live"
        is_sandbox = False
        run_id = None
        strategy_id = None

    service = MarketService([live_venue(live_config(name, venue_port, key_file), RealClock())])
    uvicorn.run(build_app(service, principal=Principal()), host="127.0.0.1", port=port, log_level="warning",
                access_log=False, ws="websockets-sansio", ws_ping_interval=None)


async def latency(name: str, venue_port: int, api_port: int, probes: int) -> dict[str, Any]:
    import httpx
    from websockets.asyncio.client import connect

    async with httpx.AsyncClient(timeout=30) as http:
        info = (await http.get(f"http://127.0.0.1:{venue_port}/_bench/info")).json()
        symbol = our_symbol(name, info["symbol"])
        deadline = time.monotonic() + 60
        while True:  # the catalogue arrives in the background; then the book on demand
            r = await http.get(f"http://127.0.0.1:{api_port}/v1/quotes", params={"symbol": symbol})
            if r.status_code == 200:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"no quote for {symbol}: {r.status_code} {r.text[:200]}")
            await asyncio.sleep(0.1)
        raw_at: list[int] = []
        stream_at: list[tuple[int, float | None]] = []
        async with connect(f"ws://127.0.0.1:{venue_port}/_bench/raw", compression=None) as raw, \
                connect(f"ws://127.0.0.1:{api_port}/v1/stream", compression=None) as stream:
            await stream.send(json.dumps({"op": "subscribe", "channels": [f"prices:{symbol}"]}))

            async def read_raw() -> None:
                async for _msg in raw:
                    raw_at.append(time.monotonic_ns())

            async def read_stream() -> None:
                async for msg in stream:
                    now = time.monotonic_ns()
                    data = json.loads(msg)
                    if data.get("channel") == f"prices:{symbol}":
                        stream_at.append((now, (data.get("data") or {}).get("bid")))

            readers = [asyncio.create_task(read_raw()), asyncio.create_task(read_stream())]
            await asyncio.sleep(0.5)
            stream_at.clear()
            added_stream: list[float] = []
            added_quote: list[float] = []
            transit: list[float] = []
            rtt: list[float] = []
            nudge_url = f"http://127.0.0.1:{venue_port}/_bench/nudge"
            for i in range(probes):
                n_raw, n_stream = len(raw_at), len(stream_at)
                probe = (await http.post(nudge_url)).json()
                if i % 2 == 0:  # stream probes
                    t_end = time.monotonic() + 5
                    while (len(raw_at) == n_raw or not any(b == probe["bid"] for _, b in stream_at[n_stream:])) \
                            and time.monotonic() < t_end:
                        await asyncio.sleep(0.0002)
                    hit = next((t for t, b in stream_at[n_stream:] if b == probe["bid"]), None)
                    if hit is None or len(raw_at) == n_raw:
                        raise RuntimeError(f"probe {i}: no prices message with bid {probe['bid']}")
                    added_stream.append((hit - raw_at[n_raw]) / 1e6)
                    transit.append((raw_at[n_raw] - probe["sent_ns"]) / 1e6)
                else:  # quote probes: poll back to back until the bid shows
                    t_end = time.monotonic() + 5
                    while time.monotonic() < t_end:
                        asked = time.monotonic_ns()
                        q = (await http.get(f"http://127.0.0.1:{api_port}/v1/quotes",
                                            params={"symbol": symbol, "depth": 1})).json()
                        got = time.monotonic_ns()
                        rtt.append((got - asked) / 1e6)
                        if (q.get("nbbo") or {}).get("bid") == probe["bid"]:
                            break
                    else:
                        raise RuntimeError(f"probe {i}: quote never showed bid {probe['bid']}")
                    while len(raw_at) == n_raw:
                        await asyncio.sleep(0.0002)
                    added_quote.append((got - raw_at[n_raw]) / 1e6)
                await asyncio.sleep(0.005)
            for t in readers:
                t.cancel()
    return {"stream_added_ms": added_stream, "quote_added_ms": added_quote, "venue_transit_ms": transit,
            "quote_rtt_ms": rtt}


# == throughput (this process) ====================================================================
class CountingSink:
    """Baseline sink: counts what the connector parsed, applies nothing."""

    def __init__(self) -> None:
        self.n = 0
        self.done: asyncio.Event | None = None
        self.target = 0

    def apply(self, events: Sequence[Any]) -> int:
        self.n += len(events)
        if self.done is not None and self.n >= self.target:
            self.done.set()
        return len(events)

    def unready(self, book_symbols: Any) -> None:
        pass


async def throughput(name: str, venue_port: int, key_file: Path, n: int, per_message: int,
                     baseline: bool) -> dict[str, Any]:
    import httpx

    from sequence.market import LevelUpdate, MarketService, RealClock
    from sequence.market.venues.live import live_venue

    venue = live_venue(live_config(name, venue_port, key_file, stall_s=60.0), RealClock())
    svc = MarketService([venue])
    await svc.start()
    http = httpx.AsyncClient(timeout=120)
    try:
        info = (await http.get(f"http://127.0.0.1:{venue_port}/_bench/info")).json()
        symbol = our_symbol(name, info["symbol"])
        deadline = time.monotonic() + 60
        while symbol not in svc.symbols():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{symbol} never listed")
            await asyncio.sleep(0.05)
        await svc.require_ready(symbol, timeout=30)
        book = svc.market(symbol).book_symbol
        done = asyncio.Event()
        counted = {"n": 0, "last_ns": 0}
        sink: CountingSink | None = None
        if baseline:
            sink = CountingSink()
            sink.done, sink.target = done, n
            venue._sink = sink  # the connector's events go to the counter instead of the service

        def listener(events: Sequence[Any]) -> None:
            for ev in events:
                if type(ev) is LevelUpdate and ev.symbol == book:
                    counted["n"] += 1
            if counted["n"] >= n:
                counted["last_ns"] = time.monotonic_ns()
                done.set()

        remove = svc.add_listener(listener)
        sub = svc.hub.open()
        svc.hub.subscribe(sub, [f"prices:{symbol}"])  # a subscriber: prices are published too
        cpu0 = time.process_time()
        t0 = time.monotonic_ns()
        res = (await http.post(f"http://127.0.0.1:{venue_port}/_bench/blast",
                               json={"n": n, "per_message": per_message})).json()
        await asyncio.wait_for(done.wait(), 120)
        t1 = counted["last_ns"] or time.monotonic_ns()
        cpu = time.process_time() - cpu0
        remove()
        svc.hub.close(sub)
        correct = None
        if not baseline:
            want = (await http.get(f"http://127.0.0.1:{venue_port}/_bench/levels")).json()
            q = svc.quote(symbol, depth=100)
            got = {"bids": [[lv["price"], lv["size"]] for lv in q["bids"]],
                   "asks": [[lv["price"], lv["size"]] for lv in q["asks"]]}
            correct = all(
                len(got[k]) == len(want[k][:100])
                and all(abs(a[0] - b[0]) < 1e-9 and abs(a[1] - b[1]) < 1e-6 for a, b in zip(got[k], want[k], strict=False))
                for k in ("bids", "asks"))
        return {"deltas": res["n"], "cpu_s": cpu, "wall_s": (t1 - min(t0, res["first_ns"])) / 1e9,
                "per_cpu_s": res["n"] / cpu if cpu else None, "correct": correct}
    finally:
        await http.aclose()
        await svc.stop()


# == driver =======================================================================================
def start(args: list[str], port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    proc = subprocess.Popen([sys.executable, __file__, *args], env=env, cwd=ROOT)
    wait_port(port, proc)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def run_venue(name: str, deltas: int, probes: int, rounds: int, per_messages: list[int]) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="sequence-bench-live-"))
    key_file = tmp / "kalshi.pem"
    out: dict[str, Any] = {"venue": name, "rounds": []}
    for r in range(rounds):
        vport = free_port()
        venue = start(["--serve-venue", name, "--port", str(vport), "--key-file", str(key_file)], vport)
        try:
            api_port = free_port()
            api = start(["--serve-platform", name, "--port", str(api_port), "--venue-port", str(vport),
                         "--key-file", str(key_file)], api_port)
            try:
                lat = asyncio.run(latency(name, vport, api_port, probes))
            finally:
                stop(api)
            thr = {}
            pin({0})
            for pm in per_messages if name != "kalshi" else [1]:
                base = asyncio.run(throughput(name, vport, key_file, deltas, pm, baseline=True))
                full = asyncio.run(throughput(name, vport, key_file, deltas, pm, baseline=False))
                thr[str(pm)] = {"platform": full, "baseline": base}
            pin(set(range(os.cpu_count() or 1)))
        finally:
            stop(venue)
        out["rounds"].append({"latency": lat, "throughput": thr})
        print(f"  {name} round {r + 1}/{rounds} done", file=sys.stderr)
    return out


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for v in runs:
        stream = [x for rd in v["rounds"] for x in rd["latency"]["stream_added_ms"]]
        quote = [x for rd in v["rounds"] for x in rd["latency"]["quote_added_ms"]]
        transit = [x for rd in v["rounds"] for x in rd["latency"]["venue_transit_ms"]]
        row: dict[str, Any] = {
            "venue": v["venue"],
            "stream_added_p50_ms": statistics.median(stream), "stream_added_p99_ms": pct(stream, 0.99),
            "quote_added_p50_ms": statistics.median(quote), "quote_added_p99_ms": pct(quote, 0.99),
            "venue_transit_p50_ms": statistics.median(transit), "probes": len(stream) + len(quote),
            "quote_poll_rtt_p50_ms": statistics.median(x for rd in v["rounds"] for x in rd["latency"]["quote_rtt_ms"]),
        }
        for pm in v["rounds"][0]["throughput"]:
            plat = [rd["throughput"][pm]["platform"] for rd in v["rounds"]]
            base = [rd["throughput"][pm]["baseline"] for rd in v["rounds"]]
            rates = [p["per_cpu_s"] for p in plat]
            brates = [b["per_cpu_s"] for b in base]
            row[f"deltas_per_cpu_s@{pm}"] = statistics.median(rates)
            row[f"deltas_per_cpu_s_floor@{pm}"] = min(rates)
            row[f"baseline_per_cpu_s@{pm}"] = statistics.median(brates)
            row[f"ratio@{pm}"] = statistics.median(rates) / statistics.median(brates)
            row[f"wall_rate@{pm}"] = statistics.median(p["deltas"] / p["wall_s"] for p in plat)
            row[f"books_correct@{pm}"] = all(p["correct"] for p in plat)
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--venues", default="kalshi,polymarket,coinbase")
    ap.add_argument("--deltas", type=int, default=100_000)
    ap.add_argument("--probes", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--per-message", default="1,10", help="deltas per venue message (Kalshi: always 1)")
    ap.add_argument("--serve-venue")
    ap.add_argument("--serve-platform")
    ap.add_argument("--port", type=int)
    ap.add_argument("--venue-port", type=int)
    ap.add_argument("--key-file", type=Path)
    a = ap.parse_args()
    if a.serve_venue:
        serve_venue(a.serve_venue, a.port, a.key_file)
        return
    if a.serve_platform:
        serve_platform(a.serve_platform, a.port, a.venue_port, a.key_file)
        return
    per_messages = [int(x) for x in a.per_message.split(",")]
    load0 = os.getloadavg()
    runs = [run_venue(v, a.deltas, a.probes, a.rounds, per_messages) for v in a.venues.split(",")]
    rows = summarise(runs)
    load1 = os.getloadavg()
    print(f"\nlive feeds: {a.rounds} rounds, {a.probes} probes and {a.deltas:,} deltas per round; "
          f"load average {load0[0]:.2f} → {load1[0]:.2f}")
    print(f"{'venue':<11} {'stream +p50':>11} {'+p99':>7} {'quote +p50':>11} {'+p99':>7} "
          f"{'per msg':>7} {'deltas/cpu-s':>13} {'floor':>9} {'baseline':>10} {'ratio':>6} {'books':>6}")
    for row in rows:
        for i, pm in enumerate(k.split("@")[1] for k in row if k.startswith("ratio@")):
            head = (f"{row['venue']:<11} {row['stream_added_p50_ms']:>9.2f}ms {row['stream_added_p99_ms']:>5.2f}ms "
                    f"{row['quote_added_p50_ms']:>9.2f}ms {row['quote_added_p99_ms']:>5.2f}ms") if i == 0 else " " * 57
            print(f"{head} {pm:>7} {row[f'deltas_per_cpu_s@{pm}']:>13,.0f} {row[f'deltas_per_cpu_s_floor@{pm}']:>9,.0f} "
                  f"{row[f'baseline_per_cpu_s@{pm}']:>10,.0f} {row[f'ratio@{pm}']:>6.2f} "
                  f"{'ok' if row[f'books_correct@{pm}'] else 'WRONG':>6}")
    for row in rows:
        print(f"{row['venue']}: venue → bench transit p50 {row['venue_transit_p50_ms']:.2f} ms; one /v1/quotes poll "
              f"p50 {row['quote_poll_rtt_p50_ms']:.2f} ms (the quote column's resolution)")
    print("stream/quote +: time added by the platform over a raw frame the venue sent at the same instant "
          "(targets: p99 ≤ 5 ms); deltas/cpu-s: one session on one core, books checked (target ≥ 50,000); "
          "floor: the slowest round; baseline: the connector alone (parse, no apply); ratio = platform/baseline")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "live_feed.json").write_text(json.dumps({
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load_before": load0,
                    "load_after": load1},
        "args": vars(a) | {"key_file": None}, "summary": rows, "runs": runs}, indent=1, default=str))


if __name__ == "__main__":
    main()
