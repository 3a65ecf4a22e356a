"""Benchmark: /v1/stream fan-out — 500 clients on prices:, 10 that stop reading.

A uvicorn subprocess (pinned to CPU 0) serves the market routes over the live
simulation. Client processes (on the other CPUs) open 500 WebSockets, each
subscribed to ``prices:`` of 2 liquid symbols, and time every update from the
book change (``data.ts``, the simulated venue's timestamp) to its arrival.
Meanwhile 10 more sockets subscribe to ``book:`` and ``prices:`` of 100
symbols and never read; the server's RSS is sampled throughout.

    python bench/market_fanout.py [--clients 500] [--seconds 20]

Prints a table and writes bench/results/market_fanout.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing as mp
import os
import platform
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def pin(cpus: set[int]) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, cpus)


# -- server ------------------------------------------------------------------------------------
def serve(port: int) -> None:
    from dataclasses import dataclass

    import uvicorn

    from sequence.api.standalone import build_app
    from sequence.market import MarketService, RealClock

    pin({0})

    @dataclass(frozen=True)
    class Principal:
        client_id: str = "bench"

    service = MarketService.simulated(seed=7, clock=RealClock())
    app = build_app(service, principal=Principal())

    @app.get("/bench/stats", include_in_schema=False)
    async def stats() -> dict[str, Any]:
        subs = service.hub.subscriptions
        slow = [s for s in subs if len(s.channels) > 50]
        return {
            **service.hub.stats(),
            "slow_pending": [s.pending_count for s in slow],
            "slow_conflated": [s.conflated for s in slow],
            "events_applied": service.events_applied,
        }

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# -- reading clients -----------------------------------------------------------------------------
async def _client(url: str, channels: list[str], stop_at: float, measure_from: float,
                   lat: list[float], counts: list[int], ready: asyncio.Event, pending: list[int]) -> None:  # fmt: skip
    from websockets.asyncio.client import connect

    async with connect(url, max_queue=None, ping_interval=None) as ws:
        await ws.send(json.dumps({"op": "subscribe", "channels": channels}))
        seen: set[str] = set()
        pending[0] -= 1
        if pending[0] == 0:
            ready.set()
        while True:
            timeout = stop_at - time.time()
            if timeout <= 0:
                return
            try:
                raw = await asyncio.wait_for(ws.recv(), timeout)
            except TimeoutError:
                return
            now = time.time()
            msg = json.loads(raw)
            ch = msg.get("channel")
            if not ch:
                continue
            if ch not in seen:  # the snapshot on subscribe is not an update
                seen.add(ch)
                continue
            if now >= measure_from:
                lat.append(now - msg["data"]["ts"])
                counts[0] += 1


def client_proc(url: str, assignments: list[list[str]], start_at: float, warmup: float,
                seconds: float, out: Any) -> None:  # fmt: skip
    pin(set(range(1, os.cpu_count() or 2)))

    async def main() -> tuple[list[float], int, float]:
        lat: list[float] = []
        counts = [0]
        ready = asyncio.Event()
        pending = [len(assignments)]
        measure_from = start_at + warmup
        stop_at = measure_from + seconds
        t0 = time.time()
        tasks = []
        for chans in assignments:
            tasks.append(asyncio.create_task(
                _client(url, chans, stop_at, measure_from, lat, counts, ready, pending)))  # fmt: skip
            await asyncio.sleep(0.002)  # don't stampede the listener backlog
        await ready.wait()
        connect_s = time.time() - t0
        await asyncio.gather(*tasks)
        return lat, counts[0], connect_s

    out.put(asyncio.run(main()))


# -- non-reading clients ---------------------------------------------------------------------------
def stalled_socket(port: int, channels: list[str]) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (f"GET /v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
    )  # fmt: skip
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    payload = json.dumps({"op": "subscribe", "channels": channels}).encode()
    mask = os.urandom(4)
    n = len(payload)
    header = struct.pack("!BBH", 0x81, 0x80 | 126, n) if n < 1 << 16 else struct.pack("!BBQ", 0x81, 0xFF, n)
    sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    return sock  # and never read from it again


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=500)
    ap.add_argument("--stalled", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--procs", type=int, default=2, help="client processes")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.port)
        return

    import httpx
    import psutil

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    server = subprocess.Popen([sys.executable, __file__, "--serve", "--port", str(port)], env=env, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                httpx.get(base + "/v1/markets", params={"limit": 1}, timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        rows = httpx.get(base + "/v1/markets",
                         params={"limit": 500, "expand": "outcomes", "active": "true"}).json()["markets"]  # fmt: skip
        liquid = [m.get("yes_token_id") or m["symbol"] for m in rows
                  if m["best_bid"] and m["best_ask"] and not m["is_placeholder_outcome"]]  # fmt: skip
        symbols = liquid[:40]
        assignments = []
        for i in range(args.clients):
            a, b = symbols[i % len(symbols)], symbols[(i * 7 + 3) % len(symbols)]
            if a == b:
                b = symbols[(i + 1) % len(symbols)]
            assignments.append([f"prices:{a}", f"prices:{b}"])
        stalled_channels = [f"{k}:{s}" for s in (m.get("yes_token_id") or m["symbol"] for m in rows[:100])
                            for k in ("book", "prices")][:200]  # fmt: skip

        proc = psutil.Process(server.pid)
        rss: list[tuple[float, float]] = []
        url = f"ws://127.0.0.1:{port}/v1/stream"
        q: Any = mp.Queue()
        start_at = time.time() + 1.0
        per = [assignments[i :: args.procs] for i in range(args.procs)]
        procs = [mp.Process(target=client_proc, args=(url, chunk, start_at, args.warmup, args.seconds, q))
                 for chunk in per]  # fmt: skip
        for p in procs:
            p.start()
        stalled = [stalled_socket(port, stalled_channels) for _ in range(args.stalled)]
        t_begin = time.time()
        end = start_at + args.warmup + args.seconds
        while time.time() < end:
            rss.append((time.time() - t_begin, proc.memory_info().rss / 2**20))
            time.sleep(0.5)
        results = [q.get(timeout=120) for _ in procs]
        for p in procs:
            p.join()
        stats = httpx.get(base + "/bench/stats").json()
        for s in stalled:
            s.close()
    finally:
        server.terminate()
        server.wait(10)

    lat = sorted(x for r in results for x in r[0]) or [float("nan")]
    msgs = sum(r[1] for r in results)
    connect_s = max(r[2] for r in results)

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000

    measured = [m for t, m in rss if t >= args.warmup + 1.0]
    rss_start, rss_end, rss_max = measured[0], measured[-1], max(measured)
    print(f"\n/v1/stream fan-out: {args.clients} clients x 2 prices: channels over {len(symbols)} liquid "
          f"symbols, + {args.stalled} clients that never read ({len(stalled_channels)} channels each); "
          f"{args.seconds:.0f}s measured after {args.warmup:.0f}s warm-up; server pinned to CPU 0\n")  # fmt: skip
    rows_out = [
        ("updates delivered", f"{msgs}"),
        ("updates / s", f"{msgs / args.seconds:.0f}"),
        ("latency p50 (ms)", f"{pct(0.50):.1f}"),
        ("latency p90 (ms)", f"{pct(0.90):.1f}"),
        ("latency p99 (ms)", f"{pct(0.99):.1f}  (target <= 50)"),
        ("latency max (ms)", f"{lat[-1] * 1000:.1f}"),
        ("connect 500 clients (s)", f"{connect_s:.2f}"),
        ("server RSS start/end/max (MiB)", f"{rss_start:.1f} / {rss_end:.1f} / {rss_max:.1f}"),
        ("server RSS growth (MiB)", f"{rss_end - rss_start:+.1f}"),
        ("stalled subs pending (max)", f"{max(stats['slow_pending'] or [0])} (<= channels held)"),
        ("stalled subs conflated", f"{sum(stats['slow_conflated'])}"),
    ]
    for k, v in rows_out:
        print(f"  {k:<32}{v}")
    ok_lat = pct(0.99) <= 50
    ok_mem = rss_end - rss_start < 10
    print(f"\np99 <= 50 ms: {'PASS' if ok_lat else 'MISS'};  RSS flat (< 10 MiB growth): {'PASS' if ok_mem else 'MISS'}")
    out = ROOT / "bench" / "results" / "market_fanout.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "market_fanout",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform(), "loadavg": os.getloadavg()},
        "settings": vars(args) | {"symbols": len(symbols), "stalled_channels": len(stalled_channels)},
        "updates": msgs,
        "updates_per_s": msgs / args.seconds,
        "latency_ms": {"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "max": lat[-1] * 1000},
        "connect_s": connect_s,
        "rss_mib": {"start": rss_start, "end": rss_end, "max": rss_max, "samples": rss},
        "server_stats": stats,
        "pass": {"p99_le_50ms": ok_lat, "rss_flat": ok_mem},
    }, indent=2))  # fmt: skip
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
