"""Benchmark: GET /v1/quotes over HTTP keep-alive against a bare-Starlette ceiling.

Each target runs in its own uvicorn subprocess (same uvicorn settings); a few
client processes each hold one keep-alive connection and send requests back
to back, timing each one. The ceiling is a bare Starlette endpoint returning
the same JSON bytes, so the ratio shows what the market route costs on top of
the server itself. Targets: ``coordinator`` (judged: the real coordinator app
— its middleware and metrics, bearer authentication on the verified-key
cache, the ``/v1/quotes`` fast path of api/fastpath.py — target: ≥ 80 % of the
ceiling's CPU efficiency), ``market`` (the standalone market app, a fixed
principal) and ``market+bearer`` (a FastAPI app with a hand-written bearer
check). The market targets run the live simulation while they serve.

    python bench/market_quotes.py [--seconds 5] [--connections 4]

Prints a table and writes bench/results/market_quotes.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

from _procs import free_port, pin, wait_port  # noqa: E402  (bench/ is the script's folder)

SYMBOLS = ("BTC-USD", "ETH-USD", "SOL-USD")
DEPTH = 10


# -- servers (run in a subprocess) ----------------------------------------------------------
def build(target: str) -> Any:
    from dataclasses import dataclass as dc

    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    from sequence.api.standalone import build_app
    from sequence.market import MarketService, RealClock

    service = MarketService.simulated(seed=7, clock=RealClock())

    @dc(frozen=True)
    class Principal:
        client_id: str = "bench"

    if target == "market":
        return build_app(service, principal=Principal())
    if target == "market-frozen":  # the same, with the simulation not running
        return build_app(service, principal=Principal(), manage_service=False)
    if target == "market+bearer":
        # Like the coordinator's require_principal on a cache hit: parse the bearer
        # header, look the key up in a dict (it is called inline, not in a thread).
        keys = {"seq_live_bench": Principal()}

        def bearer_principal(request: Any) -> Principal:
            scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
            p = keys.get(token.strip()) if scheme.lower() == "bearer" else None
            if p is None:
                raise RuntimeError("unauthorized")
            return p

        from contextlib import asynccontextmanager

        from fastapi import FastAPI

        from sequence.api import errors
        from sequence.api.routes.market import build_router

        @asynccontextmanager
        async def lifespan(app: Any) -> Any:
            await service.start()
            yield
            await service.stop()

        app = FastAPI(lifespan=lifespan)
        app.state.market = service
        errors.install(app)
        app.include_router(build_router(principal=bearer_principal))
        return app
    if target == "coordinator":
        # The real thing: the coordinator's app (its middleware, its metrics, the verified-key
        # cache behind require_principal, the /v1/quotes fast path) over a SQLite store.
        import base64
        import tempfile

        from sequence.api.app import build_core, create_app
        from sequence.settings import Settings

        settings = Settings.from_env({}, data_dir=Path(tempfile.mkdtemp(prefix="seq-bench-")))
        core = build_core(settings, {"CREDENTIAL_ENCRYPTION_KEY": base64.b64encode(bytes(32)).decode()})
        cid = core.store.create_client("bench")
        _r, key = core.store.create_api_key(cid, "live", "bench")
        Path(os.environ["BENCH_TOKEN_FILE"]).write_text(key)
        return create_app(settings, core=core, market=service)
    if target == "ceiling":
        bodies = {
            s: json.dumps(service.quote(s, DEPTH), separators=(",", ":")).encode() for s in SYMBOLS
        }

        async def quotes(request: Any) -> Response:
            return Response(bodies[request.query_params["symbol"]], media_type="application/json")

        return Starlette(routes=[Route("/v1/quotes", quotes)])
    raise SystemExit(f"unknown target {target}")


def serve(target: str, port: int) -> None:
    import uvicorn

    pin({0})

    uvicorn.run(build(target), host="127.0.0.1", port=port, log_level="warning", access_log=False)


# -- load client ------------------------------------------------------------------------------
def _request(path: str, token: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            "Connection: keep-alive\r\n\r\n").encode()  # fmt: skip


def _read_response(sock: socket.socket, buf: bytearray) -> int:
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            head = bytes(buf[:end]).lower()
            i = head.find(b"content-length:")
            length = int(head[i + 15 : head.find(b"\r\n", i) if head.find(b"\r\n", i) > 0 else None])
            total = end + 4 + length
            while len(buf) < total:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("server closed")
                buf += chunk
            status = int(bytes(buf[9:12]))
            del buf[:total]
            return status
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed")
        buf += chunk


def client(port: int, start_at: float, warmup: float, seconds: float, out: Any, token: str) -> None:
    pin(set(range(1, os.cpu_count() or 2)))
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reqs = [_request(f"/v1/quotes?symbol={s}&depth={DEPTH}", token) for s in SYMBOLS]
    buf = bytearray()
    lat: list[float] = []
    errors = 0
    while time.time() < start_at:
        time.sleep(0.001)
    measure_from = start_at + warmup
    stop = measure_from + seconds
    i = 0
    while True:
        t0 = time.perf_counter()
        now = time.time()
        if now >= stop:
            break
        sock.sendall(reqs[i % 3])
        status = _read_response(sock, buf)
        dt = time.perf_counter() - t0
        if now >= measure_from:
            lat.append(dt)
            errors += status != 200
        i += 1
    sock.close()
    out.put((lat, errors))


@dataclass
class Result:
    target: str
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    rps_by_round: list[float]
    #: server CPU microseconds per request (median over rounds)
    cpu_us_per_request: float
    #: the same, less the server's idle background CPU over the window
    net_cpu_us_per_request: float


def burst(
    target: str, connections: int, seconds: float, warmup: float
) -> tuple[list[float], int, float, float]:
    """Start ``target``'s server, load it for ``warmup + seconds``, stop it.

    Returns the measured latencies, the error count, and the server's CPU
    seconds over the measured window (robust to other load on the machine).
    """
    import tempfile

    import psutil

    port = free_port()
    token_file = Path(tempfile.mkdtemp(prefix="seq-bench-")) / "token"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "BENCH_TOKEN_FILE": str(token_file)}
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", target, "--port", str(port)], env=env, cwd=ROOT
    )
    try:
        wait_port(port, proc)
        time.sleep(0.5)  # let the simulation settle
        server = psutil.Process(proc.pid)
        # The server's own background CPU (the simulation, the coordinator's reaper …), idle:
        # subtracted to give the CPU the requests themselves cost.
        i0 = server.cpu_times()
        time.sleep(1.0)
        i1 = server.cpu_times()
        idle_rate = (i1.user + i1.system) - (i0.user + i0.system)
        token = token_file.read_text() if token_file.exists() else "seq_live_bench"
        q: Any = mp.Queue()
        start_at = time.time() + 0.3
        procs = [
            mp.Process(target=client, args=(port, start_at, warmup, seconds, q, token))
            for _ in range(connections)
        ]
        for p in procs:
            p.start()
        time.sleep(max(0.0, start_at + warmup - time.time()))
        c0 = server.cpu_times()
        time.sleep(max(0.0, start_at + warmup + seconds - time.time()))
        c1 = server.cpu_times()
        results = [q.get(timeout=seconds + warmup + 60) for _ in procs]
        for p in procs:
            p.join()
    finally:
        proc.terminate()
        proc.wait(10)
    cpu = (c1.user + c1.system) - (c0.user + c0.system)
    return [x for r in results for x in r[0]], sum(r[1] for r in results), cpu, max(0.0, cpu - idle_rate * seconds)


def summarise(target: str, rounds: list[tuple[list[float], int, float, float]], seconds: float) -> Result:
    lat = sorted(x for r in rounds for x in r[0])
    by_round = [len(r[0]) / seconds for r in rounds]

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000

    return Result(
        target=target,
        requests=len(lat),
        errors=sum(r[1] for r in rounds),
        rps=statistics.median(by_round),
        p50_ms=statistics.median(lat) * 1000,
        p90_ms=pct(0.90),
        p99_ms=pct(0.99),
        rps_by_round=[round(x) for x in by_round],
        cpu_us_per_request=statistics.median(r[2] / max(1, len(r[0])) * 1e6 for r in rounds),
        net_cpu_us_per_request=statistics.median(r[3] / max(1, len(r[0])) * 1e6 for r in rounds),
    )


def asgi_costs(n: int = 5000) -> dict[str, float]:
    """Microseconds per request calling each app's ASGI callable directly (no network).

    Not disturbed by other load on the machine the way throughput is; shows
    where the time goes: bare Starlette, FastAPI's own floor (a plain Starlette
    route inside a FastAPI app), and the market route.
    """
    import asyncio

    from fastapi import FastAPI
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    from sequence.api.standalone import build_app
    from sequence.market import ManualClock, MarketService

    service = MarketService.simulated(seed=7, clock=ManualClock())
    body = service.quote_json("BTC-USD", DEPTH)

    async def plain(request: Any) -> Response:
        return Response(body, media_type="application/json")

    floor = FastAPI()
    floor.router.add_route("/v1/quotes", plain, methods=["GET"])

    @dataclass(frozen=True)
    class Principal:
        client_id: str = "bench"

    # The coordinator's own bearer authentication (sequence.api.auth.require_principal over a
    # real store, its verified-key cache warm) against the same router with a fixed principal:
    # the difference is what authenticating a request costs.
    import tempfile

    from sequence.api import errors
    from sequence.api.auth import Authenticator, require_principal
    from sequence.api.routes.market import build_router
    from sequence.store.db import Database
    from sequence.store.store import Store

    store = Store(Database(f"sqlite:///{tempfile.mkdtemp(prefix='seq-bench-auth-')}/auth.db"))
    store.db.migrate()
    _row, key = store.create_api_key(store.create_client("bench"), "live", "bench")

    async def fixed(request: Any) -> Principal:
        return Principal()

    def router_app(principal: Any) -> Any:
        app = FastAPI()
        app.state.market = service
        app.state.auth = Authenticator(store)
        errors.install(app)
        app.include_router(build_router(principal=principal))
        return app

    import base64

    from sequence.api.app import build_core, create_app
    from sequence.settings import Settings

    settings = Settings.from_env({}, data_dir=Path(tempfile.mkdtemp(prefix="seq-bench-coord-")))
    core = build_core(settings, {"CREDENTIAL_ENCRYPTION_KEY": base64.b64encode(bytes(32)).decode()})
    _row, coord_key = core.store.create_api_key(core.store.create_client("bench"), "live", "bench")

    apps = {
        "starlette (ceiling)": Starlette(routes=[Route("/v1/quotes", plain)]),
        "coordinator (fast path)": create_app(settings, core=core, market=service),
        "fastapi floor": floor,
        "market route": build_app(service, principal=Principal(), manage_service=False),
        "router, fixed principal": router_app(fixed),
        "router, bearer auth": router_app(require_principal),
    }
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": "/v1/quotes", "raw_path": b"/v1/quotes",
             "query_string": f"symbol=BTC-USD&depth={DEPTH}".encode(), "root_path": "",
             "headers": [(b"host", b"x"), (b"authorization", f"Bearer {key}".encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2)}  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        pass

    async def run(app: Any, count: int) -> None:
        sc = scope
        if isinstance(app, FastAPI) and getattr(app, "quotes_fast_path", None) is not None:
            sc = {**scope, "headers": [(b"host", b"x"), (b"authorization", f"Bearer {coord_key}".encode())]}
        for _ in range(count):
            await app({**sc, "state": {}}, receive, send)

    out = {}
    for name, app in apps.items():
        asyncio.run(run(app, 500))
        best = min(
            (lambda: (t := time.perf_counter(), asyncio.run(run(app, n)), time.perf_counter() - t)[2])()
            for _ in range(3)
        )
        out[name] = best / n * 1e6
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="measured seconds per burst")
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--rounds", type=int, default=5, help="every target once per round, interleaved")
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--targets", default="ceiling,coordinator,market,market+bearer",
                    help="comma-separated; the first is the ceiling, the second the one judged")  # fmt: skip
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return
    targets = args.targets.split(",")
    raw: dict[str, list[tuple[list[float], int, float, float]]] = {t: [] for t in targets}
    for _ in range(args.rounds):
        for t in targets:
            raw[t].append(burst(t, args.connections, args.seconds, args.warmup))
    results = [summarise(t, raw[t], args.seconds) for t in targets]
    costs = asgi_costs()
    ceiling, judged = results[0], results[1]
    ratios = [m / c for m, c in zip(judged.rps_by_round, ceiling.rps_by_round, strict=True)]
    ratio = statistics.median(ratios)
    print(f"\nGET /v1/quotes?depth={DEPTH}: {args.connections} keep-alive connections; "
          f"{args.rounds} interleaved rounds of {args.seconds:.0f}s per target (after "
          f"{args.warmup:.1f}s warm-up); 1 uvicorn worker pinned to CPU 0, load on the others\n")  # fmt: skip
    print(f"{'target':<16}{'req/s':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'errors':>8}"
          f"{'vs ceiling':>12}{'cpu us/req':>12}{'cpu vs ceil':>13}{'net us/req':>12}{'net vs ceil':>13}"
          "   req/s by round")  # fmt: skip
    for r in results:
        print(f"{r.target:<16}{r.rps:>9.0f}{r.p50_ms:>9.3f}{r.p90_ms:>9.3f}{r.p99_ms:>9.3f}"
              f"{r.errors:>8}{r.rps / ceiling.rps:>11.0%}{r.cpu_us_per_request:>12.1f}"
              f"{ceiling.cpu_us_per_request / r.cpu_us_per_request:>12.0%}{r.net_cpu_us_per_request:>12.1f}"
              f"{ceiling.net_cpu_us_per_request / r.net_cpu_us_per_request:>12.0%}   {r.rps_by_round}")  # fmt: skip
    cpu_ratio = ceiling.cpu_us_per_request / judged.cpu_us_per_request
    net_ratio = ceiling.net_cpu_us_per_request / judged.net_cpu_us_per_request
    print(f"\n{judged.target} throughput = {ratio:.0%} of the ceiling (median of per-round ratios "
          f"{[f'{x:.0%}' for x in ratios]}; target >= 60%): {'PASS' if ratio >= 0.6 else 'MISS'}")  # fmt: skip
    print(f"{judged.target} server CPU per request = {cpu_ratio:.0%} of the ceiling's efficiency "
          f"(the single-core saturation ratio; insensitive to other load on the machine)")  # fmt: skip
    print(f"{judged.target} server CPU per request, idle background subtracted = {net_ratio:.0%} of the "
          f"ceiling's (target >= 80%): {'PASS' if net_ratio >= 0.8 else 'MISS'}")  # fmt: skip
    print("\nin-process ASGI cost per request (best of 3 x 5000 calls, no network):")
    for name, us in costs.items():
        print(f"  {name:<26}{us:>7.1f} us")
    auth_us = costs["router, bearer auth"] - costs["router, fixed principal"]
    print(f"  bearer authentication (cache hit) costs {auth_us:.1f} us per request (target <= 200 us)")
    out = ROOT / "bench" / "results" / "market_quotes.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "market_quotes",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform(), "loadavg": os.getloadavg()},
        "settings": {"seconds": args.seconds, "warmup": args.warmup, "rounds": args.rounds,
                     "connections": args.connections, "depth": DEPTH},
        "results": [r.__dict__ for r in results],
        "asgi_us_per_request": costs,
        "ratio_vs_ceiling": ratio,
        "cpu_efficiency_vs_ceiling": cpu_ratio,
        "net_cpu_efficiency_vs_ceiling": net_ratio,
        "ratios_by_round": ratios,
        "target_ratio": 0.6,
    }, indent=2))  # fmt: skip
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
