"""Benchmark: real orders — graph submit → the venue receives the order, and the kill switch
with 100 working orders — against the local venue servers of the tests (tests/venues:
Coinbase Advanced Trade, then Polymarket's CLOB), each in its own process pinned to core 1.

The platform is the real thing, started as a user starts it: ``sequence up --no-runner`` in a
subprocess pinned to core 0 (private HOME/XDG_CONFIG_HOME; ``SEQUENCE_VENUES`` with the one
venue under test ``live`` and the others ``off``; its REST, market and user WebSocket URLs
pointed at the fake), its ``seq_live_`` key read from the CLI config it writes, the venue's
credentials connected with ``PUT /v1/venues/{venue}/credentials`` (checked with the venue, as
``sequence connect`` does) and the risk limits raised with ``PUT /v1/risk`` so that nothing here
is throttled by them. Each round starts a fresh venue and a fresh platform.

* **Submit → venue.** A probe is one ``POST /v1/graphs`` with one resting limit buy below the
  book, with a key of its own the bench finds it by at the venue: on Coinbase 0.001 BTC-USD at
  1,000.00 + k cents (the book is at ~95,000), on Polymarket 5 + k shares of the "Spain" YES
  token at 0.02. ``t0 = time.time_ns()`` just before the request's bytes are written (a raw
  keep-alive socket, the request pre-built); the venue's receipt = ``time.time_ns()`` when the
  order request (Coinbase ``POST /api/v3/brokerage/orders``, Polymarket ``POST /order``)
  reaches the fake's ASGI app — a bench wrapper, before the fake reads the body or checks the
  signature (Coinbase's own ``created_ns``, stamped after its JWT check, is kept in the JSON
  too). Platform total = receipt − t0. The bench reads the platform's answer only after the
  probe's gap, so it never competes with the platform for core 0 while the order is on its way.
  **Baseline in the same run, interleaved probe by probe:** the platform's own adapter
  (``CoinbaseOrders`` / ``PolymarketOrders`` from ``sequence.execution.venues``) in this
  process, pinned to core 0, placing the same order directly (receipt − t0: signing, HTTP).
  Added by the platform = p50(platform) − p50(baseline) (target ≤ 3 ms). Probes are paced
  (``--gap-ms``) so that no adapter's write token bucket ever delays one.
* **Kill switch.** ``--orders`` (100) resting orders are placed through the platform (one graph
  each); once the venue has all of them open and every node is ``working``, ``POST /v1/kill``
  is timed until its answer — which comes after the venue confirmed the cancels — and the fake
  is checked to have none of them still open (target ≤ 1 s). ``DELETE /v1/kill`` releases it.
  The venue side is shown too: when the venue answered the last cancel request (Coinbase: one
  ``batch_cancel``; Polymarket: one ``DELETE /orders`` batch). Baseline: the adapter's
  ``cancel_many`` of as many orders it placed itself.

Probe orders rest until the end of their round; the kill switch (untimed, recorded as
``cleanup_kill``) then clears them before the kill measurement.

    python bench/live_orders.py [--venues coinbase,polymarket] [--rounds 3] [--probes 200]
                                [--orders 100] [--gap-ms 40]

Prints a table per venue (medians over all probes, the worst round beside them, load average
before and after) and writes bench/results/live_orders.json. Every number is a wall-clock
time on whatever machine runs it: read them with the load average printed beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from _procs import free_port, pct, pin, wait_port  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SEQUENCE = Path(sys.executable).parent / "sequence"
API = "/api/v3/brokerage"
SYMBOL = "BTC-USD"
QTY = "0.001"
BASE_PRICE = Decimal("1000.00")  # far below the fake's ~95,000 book: every probe rests
TICK = Decimal("0.01")


# == the venue process ===========================================================================
def order_key(venue: str, payload: Any) -> str | None:
    """The key the bench gives an order (a price or a size of its own) from the venue request's body."""
    try:
        if venue == "coinbase":
            (spec,) = payload["order_configuration"].values()
            return f"{Decimal(spec['limit_price']):.2f}"
        o = payload["order"]
        shares = Decimal(o["takerAmount"] if o["side"] == "BUY" else o["makerAmount"]) / 10**6
        return f"{shares:.2f}"
    except (KeyError, TypeError, ValueError, ArithmeticError):
        return None


class Stamps:
    """ASGI wrapper around the fake: the wall-clock time each order request and each cancel
    request reaches the venue's app (before the fake reads the body or checks the signature)."""

    def __init__(self, app: Any, venue: str) -> None:
        self.app = app
        self.venue = venue
        self.order_path, self.cancel = ((f"{API}/orders", ("POST", f"{API}/orders/batch_cancel"))
                                        if venue == "coinbase" else ("/order", ("DELETE", "/orders")))
        self.arrivals: dict[str, int] = {}  # order key -> arrival ns (first attempt)
        self.cancels: list[dict[str, int]] = []  # cancel requests: arrival, answered, how many ids

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_order = scope["method"] == "POST" and scope["path"] == self.order_path
        is_cancel = (scope["method"], scope["path"]) == self.cancel
        if not is_order and not is_cancel:
            await self.app(scope, receive, send)
            return
        at = time.time_ns()
        chunks = []
        while True:
            msg = await receive()
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        body = b"".join(chunks)
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = {}
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # type: ignore[no-any-return]

        if is_order:
            key = order_key(self.venue, parsed)
            if key is not None:
                self.arrivals.setdefault(key, at)
            await self.app(scope, replay, send)
            return
        ids = parsed.get("order_ids") if isinstance(parsed, dict) else None
        row = {"arrival_ns": at, "ids": len(ids) if isinstance(ids, list) else 1}

        async def stamped(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                row["answered_ns"] = time.time_ns()
            await send(message)

        self.cancels.append(row)
        await self.app(scope, replay, stamped)


def venue_app(venue: str) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Mount, Route

    info: dict[str, Any] = {"venue": venue}
    if venue == "coinbase":
        from tests.venues.coinbase import DEFAULT_BALANCES, FakeCoinbase

        fake: Any = FakeCoinbase(balances={**DEFAULT_BALANCES, "USD": "100000000"})  # room for every resting buy
        info["symbol"] = SYMBOL

        def new_key() -> dict[str, str]:
            return dict(fake.new_key())

        def listing() -> dict[str, dict[str, Any]]:
            return {f"{o.limit:.2f}": {"created_ns": o.created_ns, "open": o.status == "OPEN", "order_id": o.order_id}
                    for o in fake.orders.values() if o.limit is not None}
    elif venue == "polymarket":
        from eth_account import Account
        from tests.venues.polymarket import FakePolymarket

        fake = FakePolymarket(collateral="100000000", heartbeat_timeout_s=60.0)
        m = fake.market("Spain")
        info.update(symbol=m.yes, tick=m.book.tick, neg_risk=m.neg_risk, min_size=m.min_size)

        def new_key() -> dict[str, str]:
            acct = Account.create()
            return {"private_key": acct.key.hex(), **fake.register(acct.address)}

        def listing() -> dict[str, dict[str, Any]]:
            return {f"{o.original:.2f}": {"created_ns": None, "open": o.status == "LIVE", "order_id": o.id}
                    for o in fake.orders.values()}
    else:
        raise SystemExit(f"unknown venue {venue}")
    holder: dict[str, Stamps] = {}

    async def key(_r: Request) -> JSONResponse:
        return JSONResponse(new_key())

    async def orders(_r: Request) -> JSONResponse:
        """{order key: {arrival_ns, created_ns, open, order_id}}."""
        arrivals = holder["stamps"].arrivals
        return JSONResponse({k: {**v, "arrival_ns": arrivals.get(k)} for k, v in listing().items()})

    async def cancels(_r: Request) -> JSONResponse:
        return JSONResponse(holder["stamps"].cancels)

    async def about(_r: Request) -> JSONResponse:
        return JSONResponse(info)

    app = Starlette(routes=[
        Route("/_bench/key", key, methods=["POST"]), Route("/_bench/orders", orders),
        Route("/_bench/cancels", cancels), Route("/_bench/info", about), Mount("", app=fake.app)])
    holder["stamps"] = Stamps(app, venue)
    return holder["stamps"]


def serve_venue(venue: str, port: int) -> None:
    import uvicorn

    pin({1})
    uvicorn.run(venue_app(venue), host="127.0.0.1", port=port, log_level="warning", access_log=False,
                ws="websockets-sansio", ws_ping_interval=None)


def start_venue(venue: str, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    proc = subprocess.Popen([sys.executable, __file__, "--serve-venue", venue, "--port", str(port)], env=env,
                            cwd=ROOT)
    wait_port(port, proc)
    return proc


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# == the platform (`sequence up`) ===================================================================
class Up:
    """``sequence up --no-runner`` pinned to core 0, on one local venue (the others off)."""

    def __init__(self, root: Path, venue: str, venue_port: int) -> None:
        self.root = root
        self.home = root / "home"
        self.home.mkdir(parents=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("SEQUENCE_") and not k.startswith("CREDENTIAL_ENCRYPTION_KEY")}
        vurl, vws = f"http://127.0.0.1:{venue_port}", f"ws://127.0.0.1:{venue_port}"
        env.update(HOME=str(self.home), XDG_CONFIG_HOME=str(self.home / ".config"), NO_COLOR="1",
                   PYTHONUNBUFFERED="1",
                   SEQUENCE_VENUES=",".join(f"{v}={'live' if v == venue else 'off'}"
                                            for v in ("kalshi", "polymarket", "coinbase")))
        if venue == "coinbase":
            env.update(SEQUENCE_COINBASE_API_URL=vurl + API, SEQUENCE_COINBASE_WS_URL=vws,
                       SEQUENCE_COINBASE_USER_WS_URL=vws)
        else:
            env.update(SEQUENCE_POLYMARKET_API_URL=vurl, SEQUENCE_POLYMARKET_GAMMA_URL=vurl + "/gamma",
                       SEQUENCE_POLYMARKET_WS_URL=vws + "/ws/market", SEQUENCE_POLYMARKET_USER_WS_URL=vws + "/ws/user")
        self.log_path = root / "sequence-up.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [str(SEQUENCE), "up", "--no-runner", "--data-dir", str(root / "data"), "--port", str(self.port)],
            cwd=root, env=env, stdout=self._log, stderr=subprocess.STDOUT, preexec_fn=lambda: pin({0}))
        self.key = self._wait_up()

    def _wait_up(self, timeout: float = 90.0) -> str:
        import httpx

        deadline = time.monotonic() + timeout
        cfg = self.home / ".config" / "sequence" / "config.toml"
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"`sequence up` exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                r = httpx.get(f"{self.url}/v1/health", timeout=2.0)
                if r.status_code == 200 and r.json().get("ok") is True and cfg.exists():
                    key = tomllib.loads(cfg.read_text()).get("api_key")
                    if isinstance(key, str) and key.startswith("seq_live_"):
                        return key
            except (httpx.HTTPError, ValueError, tomllib.TOMLDecodeError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"`sequence up` not ready after {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.1)

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def close(self) -> None:
        stop(self.proc, signal.SIGINT)
        self._log.close()


class Raw:
    """A keep-alive HTTP/1.1 connection written with pre-built bytes (t0 is the write)."""

    def __init__(self, port: int, key: str) -> None:
        self.port, self.key = port, key
        self.sock: socket.socket | None = None
        self.used = 0.0

    def build(self, method: str, path: str, body: bytes = b"") -> bytes:
        return (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nAuthorization: Bearer {self.key}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body

    def _fresh(self) -> socket.socket:
        if self.sock is None or time.monotonic() - self.used > 2.0:  # under uvicorn's 5 s keep-alive
            if self.sock is not None:
                self.sock.close()
            self.sock = socket.create_connection(("127.0.0.1", self.port))
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self.sock

    def send(self, data: bytes) -> int:
        sock = self._fresh()
        t0 = time.time_ns()
        sock.sendall(data)
        return t0

    def answer(self) -> tuple[int, Any]:
        assert self.sock is not None
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("the platform closed the connection")
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        if m is None:
            raise RuntimeError(f"no content-length in {head!r}")
        need = int(m.group(1))
        while len(rest) < need:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("the platform closed the connection")
            rest += chunk
        self.used = time.monotonic()
        return status, json.loads(rest[:need]) if need else None

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


class Orders:
    """The orders of one venue: order *k* of the run has a key of its own — a price on Coinbase
    (0.001 BTC at 1,000.00 + k cents: far below the ~95,000 book), a size on Polymarket
    (5 + k shares of the YES token at 0.02: below the book) — that the venue wrapper reads back."""

    def __init__(self, venue: str, info: dict[str, Any], counter: Any) -> None:
        self.venue, self.info, self.counter = venue, info, counter

    def next(self) -> tuple[str, Decimal, Decimal]:
        k = next(self.counter)
        if self.venue == "coinbase":
            price = BASE_PRICE + TICK * k
            return f"{price:.2f}", Decimal(QTY), price
        qty = Decimal(int(self.info["min_size"]) + k)
        return f"{qty:.2f}", qty, Decimal("0.02")

    def graph_body(self, qty: Decimal, price: Decimal) -> bytes:
        kind = "spot" if self.venue == "coinbase" else "prediction"
        return json.dumps({"nodes": [{"node_id": "rest", "symbol": self.info["symbol"], "side": "buy",
                                      "qty": float(qty), "venue": self.venue, "instrument_type": kind,
                                      "limit_price": float(price)}]}).encode()

    def request(self, qty: Decimal, price: Decimal) -> Any:
        """What the platform's engine hands the adapter for the same node (engine._live_order)."""
        from sequence.execution.venues import OrderRequest

        cid = f"bench-{uuid.uuid4().hex[:20]}"
        if self.venue == "coinbase":
            return OrderRequest(client_order_id=cid, symbol=self.info["symbol"], side="buy", qty=qty, price=price)
        return OrderRequest(client_order_id=cid, symbol=self.info["symbol"], side="buy", qty=qty, price=price,
                            outcome="yes", extra={"tick_size": Decimal(self.info["tick"]),
                                                  "neg_risk": bool(self.info["neg_risk"]),
                                                  "created_ms": int(time.time() * 1000)})

    def adapter(self, creds: dict[str, str], vport: int) -> Any:
        from sequence.execution.venues import OrderConfig, order_venue

        url, ws = f"http://127.0.0.1:{vport}", f"ws://127.0.0.1:{vport}"
        if self.venue == "coinbase":
            return order_venue(creds, OrderConfig("coinbase", url + API, ws))
        return order_venue(creds, OrderConfig("polymarket", url, ws + "/ws/user", urls={"gamma": url + "/gamma"}))


# == one round =====================================================================================
class Round:
    """A fresh venue and a fresh platform; the probes, then the kill switch."""

    def __init__(self, venue: str, tmp: Path, args: argparse.Namespace, counter: Any) -> None:
        self.name = venue
        self.args = args
        self.counter = counter  # shared by the run: every order has a key of its own
        self.venue_port = free_port()
        self.venue = start_venue(venue, self.venue_port)
        self.vurl = f"http://127.0.0.1:{self.venue_port}"
        self.tmp = tmp

    async def run(self) -> dict[str, Any]:
        import httpx

        out: dict[str, Any] = {}
        try:
            up = Up(self.tmp, self.name, self.venue_port)
        except BaseException:
            stop(self.venue)
            raise
        vhttp = httpx.AsyncClient(base_url=self.vurl, timeout=30)
        phttp = httpx.AsyncClient(base_url=up.url, headers={"Authorization": f"Bearer {up.key}"}, timeout=60)
        raw = Raw(up.port, up.key)
        adapter: Any = None
        try:
            self.orders = Orders(self.name, (await vhttp.get("/_bench/info")).json(), self.counter)
            # The platform: the venue listed, credentials connected (checked with the venue), limits raised.
            deadline = time.monotonic() + 60
            while True:
                venues = {v["venue"]: v for v in (await phttp.get("/v1/venues")).json()["venues"]}
                if (venues.get(self.name, {}).get("market") or {}).get("markets", 0) > 0:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} not listed: {venues}\n{up.log_tail()}")
                await asyncio.sleep(0.2)
            creds = (await vhttp.post("/_bench/key")).json()
            r = await phttp.put(f"/v1/venues/{self.name}/credentials", json=creds)
            if r.status_code != 200:
                raise RuntimeError(f"credentials: {r.status_code} {r.text}")
            out["connect"] = r.json().get("checked")
            r = await phttp.put("/v1/risk", json={
                "max_orders_per_second": 100_000, "max_open_orders": 1_000_000, "max_order_notional": 1e9,
                "max_position_notional": None, "max_daily_loss": None})
            if r.status_code != 200:
                raise RuntimeError(f"risk: {r.status_code} {r.text}")
            # The baseline: the same adapter, in this process, with its own key on the same venue.
            adapter = self.orders.adapter((await vhttp.post("/_bench/key")).json(), self.venue_port)
            pin({0})
            out["submit"] = await self.submit(raw, adapter, vhttp)
            out["cleanup_kill"] = await self.kill(phttp, vhttp, expect=None)
            out["kill"] = await self.kill_n(phttp, vhttp)
            out["kill_baseline"] = await self.kill_n_baseline(adapter, vhttp)
            out["platform_stats"] = await self.platform_notes(phttp)
        finally:
            pin(set(range(os.cpu_count() or 1)))
            raw.close()
            await vhttp.aclose()
            await phttp.aclose()
            if adapter is not None:
                with contextlib.suppress(Exception):
                    await adapter.set_working(False)
                await adapter.close()
            up.close()
            stop(self.venue)
        out["log"] = log_notes(up.log_path)
        return out

    # -- submit → venue -------------------------------------------------------------------------
    async def submit(self, raw: Raw, adapter: Any, vhttp: Any) -> dict[str, Any]:
        gap = self.args.gap_ms / 1000
        warm = 5
        plat: dict[str, int] = {}  # order key -> t0
        base: dict[str, int] = {}
        await adapter.set_working(True)  # Polymarket: the dead-man switch beats, as the platform's does
        for i in range(warm + self.args.probes):
            for which in (("p", "b") if i % 2 == 0 else ("b", "p")):
                key, qty, price = self.orders.next()
                if which == "p":
                    data = raw.build("POST", "/v1/graphs", self.orders.graph_body(qty, price))
                    t0 = raw.send(data)
                    time.sleep(gap)  # the order travels while the bench sleeps; then the answer
                    status, body = raw.answer()
                    if status not in (200, 201):
                        raise RuntimeError(f"POST /v1/graphs: {status} {body}")
                    if i >= warm:
                        plat[key] = t0
                else:
                    req = self.orders.request(qty, price)
                    t0 = time.time_ns()
                    await adapter.place(req)
                    if i >= warm:
                        base[key] = t0
                    await asyncio.sleep(gap)
        await asyncio.sleep(0.5)
        at_venue = (await vhttp.get("/_bench/orders")).json()
        missing = [k for k in plat if k not in at_venue or at_venue[k]["arrival_ns"] is None]
        if missing:
            raise RuntimeError(f"{len(missing)} platform probes never reached the venue (e.g. {missing[:3]})")

        def ms(t0s: dict[str, int], field: str) -> list[float]:
            return [(at_venue[k][field] - t0) / 1e6 for k, t0 in t0s.items() if at_venue[k][field] is not None]

        return {"platform_ms": ms(plat, "arrival_ns"), "baseline_ms": ms(base, "arrival_ns"),
                "platform_created_ms": ms(plat, "created_ns"), "baseline_created_ms": ms(base, "created_ns"),
                "open_at_venue": sum(1 for v in at_venue.values() if v["open"])}

    # -- the kill switch --------------------------------------------------------------------------
    async def kill(self, phttp: Any, vhttp: Any, expect: int | None) -> dict[str, Any]:
        before = len((await vhttp.get("/_bench/cancels")).json())
        t0 = time.time_ns()
        r = await phttp.post("/v1/kill")
        t1 = time.time_ns()
        if r.status_code != 200:
            raise RuntimeError(f"POST /v1/kill: {r.status_code} {r.text}")
        report = r.json()
        calls = (await vhttp.get("/_bench/cancels")).json()[before:]
        rel = await phttp.delete("/v1/kill")
        if rel.status_code != 200 or not rel.json().get("released"):
            raise RuntimeError(f"DELETE /v1/kill: {rel.status_code} {rel.text}")
        if expect is not None and (report["real_orders_cancelled"] != expect or report["not_cancelled"]):
            raise RuntimeError(f"kill: expected {expect} cancelled, got {report}")
        return {"ms": (t1 - t0) / 1e6, "real_orders_cancelled": report["real_orders_cancelled"],
                "not_cancelled": len(report["not_cancelled"]), "graphs": report.get("graphs"),
                "venue_cancel_requests": len(calls),
                "venue_first_arrival_ms": min(((c["arrival_ns"] - t0) / 1e6 for c in calls), default=None),
                "venue_last_answer_ms": max(((c.get("answered_ns", c["arrival_ns"]) - t0) / 1e6 for c in calls),
                                            default=None)}

    async def kill_n(self, phttp: Any, vhttp: Any) -> dict[str, Any]:
        n = self.args.orders
        keys, gids = [], []
        t_place = time.monotonic()
        for _ in range(n):
            key, qty, price = self.orders.next()
            r = await phttp.post("/v1/graphs", content=self.orders.graph_body(qty, price),
                                 headers={"Content-Type": "application/json"})
            if r.status_code not in (200, 201):
                raise RuntimeError(f"POST /v1/graphs: {r.status_code} {r.text}")
            keys.append(key)
            gids.append(r.json()["graph_id"])
        # Every order open at the venue, every node working at the platform.
        deadline = time.monotonic() + 60
        while True:
            at = (await vhttp.get("/_bench/orders")).json()
            open_n = sum(1 for k in keys if at.get(k, {}).get("open"))
            if open_n == n:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {open_n}/{n} orders open at the venue")
            await asyncio.sleep(0.05)
        placed_s = time.monotonic() - t_place
        for gid in gids:
            node = (await phttp.get(f"/v1/graphs/{gid}")).json()["nodes"][0]
            if node["status"] != "working":
                raise RuntimeError(f"graph {gid}: node {node}")
        exposure = (await phttp.get("/v1/risk")).json()["exposure"]["open_orders"]
        await asyncio.sleep(0.5)  # the acks (venue order ids) land, as the acceptance test waits
        out = await self.kill(phttp, vhttp, expect=n)
        at = (await vhttp.get("/_bench/orders")).json()
        still = [k for k in keys if at[k]["open"]]
        if still:
            raise RuntimeError(f"{len(still)} orders still open at the venue after the kill switch")
        statuses = {(await phttp.get(f"/v1/graphs/{gid}")).json()["status"] for gid in gids[:10]}
        out.update(open_after=len(still), placed_s=placed_s, exposure_open_orders_before=exposure,
                   graph_statuses_after=sorted(statuses))
        return out

    async def kill_n_baseline(self, adapter: Any, vhttp: Any) -> dict[str, Any]:
        n = self.args.orders
        ids, keys = [], []
        for _ in range(n):
            key, qty, price = self.orders.next()
            ids.append((await adapter.place(self.orders.request(qty, price))).venue_order_id)
            keys.append(key)
        await asyncio.sleep(0.5)
        t0 = time.time_ns()
        answers = await adapter.cancel_many(ids)
        t1 = time.time_ns()
        at = (await vhttp.get("/_bench/orders")).json()
        still = [k for k in keys if at[k]["open"]]
        ok = sum(1 for a in answers if getattr(a, "status", None) == "cancelled")
        if still or ok != n:
            raise RuntimeError(f"baseline cancel_many: {ok}/{n} cancelled, {len(still)} still open")
        return {"ms": (t1 - t0) / 1e6, "cancelled": ok, "open_after": len(still)}

    async def platform_notes(self, phttp: Any) -> dict[str, Any]:
        """The platform's own view (``/metrics``): mean server-side time of its order routes."""
        r = await phttp.get("/metrics")
        sums: dict[str, dict[str, float]] = {}
        for line in r.text.splitlines() if r.status_code == 200 else ():
            m = re.match(r'sequence_http_request_seconds_(sum|count)\{route="([^"]+)"\} (\S+)', line)
            if m and m.group(2) in ("/v1/graphs", "/v1/kill"):
                sums.setdefault(m.group(2), {})[m.group(1)] = float(m.group(3))
        return {route: {"requests": v.get("count", 0), "mean_ms": 1000 * v.get("sum", 0) / max(v.get("count", 1), 1)}
                for route, v in sums.items()}


def log_notes(path: Path) -> dict[str, Any]:
    """What `sequence up` complained about: counts and the first lines of each kind."""
    lines = path.read_text(errors="replace").splitlines()
    notes: dict[str, Any] = {"lines": len(lines)}
    for level in ("WARNING", "ERROR", "CRITICAL", "Traceback"):
        hits = [ln for ln in lines if level in ln]
        notes[level] = {"count": len(hits), "first": [h[:300] for h in hits[:5]]}
    return notes


# == the run =========================================================================================
def summarise(venue: str, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    def both(key: str) -> tuple[list[float], list[float]]:
        allx = [x for rd in rounds for x in rd["submit"][key]]
        per_round = [statistics.median(rd["submit"][key]) if rd["submit"][key] else float("nan") for rd in rounds]
        return allx, per_round

    plat, plat_r = both("platform_ms")
    base, base_r = both("baseline_ms")
    platc, _ = both("platform_created_ms")
    basec, _ = both("baseline_created_ms")
    added_r = [p - b for p, b in zip(plat_r, base_r, strict=True)]
    kills = [rd["kill"]["ms"] for rd in rounds]
    bkills = [rd["kill_baseline"]["ms"] for rd in rounds]
    answered = [rd["kill"]["venue_last_answer_ms"] or float("nan") for rd in rounds]
    return {
        "venue": venue, "probes": len(plat),
        "platform_p50_ms": statistics.median(plat), "platform_p99_ms": pct(plat, 0.99),
        "platform_worst_round_p50_ms": max(plat_r),
        "baseline_p50_ms": statistics.median(base), "baseline_p99_ms": pct(base, 0.99),
        "baseline_worst_round_p50_ms": max(base_r),
        "added_p50_ms": statistics.median(plat) - statistics.median(base),
        "added_p99_ms": pct(plat, 0.99) - pct(base, 0.99),
        "added_worst_round_p50_ms": max(added_r),
        "added_p50_ms_by_created_ns": (statistics.median(platc) - statistics.median(basec)
                                       if platc and basec else None),
        "kill_ms_median": statistics.median(kills), "kill_ms_worst": max(kills),
        "kill_cancelled": [rd["kill"]["real_orders_cancelled"] for rd in rounds],
        "kill_open_after": [rd["kill"]["open_after"] for rd in rounds],
        "kill_venue_cancel_requests": [rd["kill"]["venue_cancel_requests"] for rd in rounds],
        "kill_venue_last_answer_ms": answered,
        "kill_baseline_ms_median": statistics.median(bkills), "kill_baseline_ms_worst": max(bkills),
        "cleanup_kill": [{"orders": rd["cleanup_kill"]["real_orders_cancelled"], "ms": rd["cleanup_kill"]["ms"]}
                         for rd in rounds],
        "post_graphs_server_mean_ms": [rd["platform_stats"].get("/v1/graphs", {}).get("mean_ms") for rd in rounds],
    }


def report(s: dict[str, Any], rounds: list[dict[str, Any]], orders: int) -> None:
    adapter = {"coinbase": "CoinbaseOrders", "polymarket": "PolymarketOrders"}[s["venue"]]
    w = 44
    print(f"\n{s['venue'] + ': submit → venue receives':<{w}} {'p50':>9} {'p99':>9} {'worst-round p50':>16}")
    print(f"{'  platform (POST /v1/graphs)':<{w}} {s['platform_p50_ms']:>7.2f}ms {s['platform_p99_ms']:>7.2f}ms "
          f"{s['platform_worst_round_p50_ms']:>14.2f}ms")
    print(f"{f'  baseline ({adapter}.place)':<{w}} {s['baseline_p50_ms']:>7.2f}ms {s['baseline_p99_ms']:>7.2f}ms "
          f"{s['baseline_worst_round_p50_ms']:>14.2f}ms")
    print(f"{'  added by the platform':<{w}} {s['added_p50_ms']:>7.2f}ms {s['added_p99_ms']:>7.2f}ms "
          f"{s['added_worst_round_p50_ms']:>14.2f}ms   target p50 ≤ 3 ms: "
          f"{'met' if s['added_p50_ms'] <= 3 else 'MISSED'}")
    print(f"{s['venue'] + f': kill switch, {orders} working orders':<{w}} {'median':>9} {'worst':>9} "
          f"{'cancelled':>16}")
    print(f"{'  platform (POST /v1/kill)':<{w}} {s['kill_ms_median']:>7.1f}ms {s['kill_ms_worst']:>7.1f}ms "
          f"{'/'.join(str(c) for c in s['kill_cancelled']):>16}   target ≤ 1 s: "
          f"{'met' if s['kill_ms_worst'] <= 1000 else 'MISSED'}; still open at the venue after: "
          f"{sum(s['kill_open_after'])}")
    print(f"{f'  baseline ({adapter}.cancel_many)':<{w}} {s['kill_baseline_ms_median']:>7.1f}ms "
          f"{s['kill_baseline_ms_worst']:>7.1f}ms")
    print(f"{'  venue answered its last cancel':<{w}} {statistics.median(s['kill_venue_last_answer_ms']):>7.1f}ms "
          f"{max(s['kill_venue_last_answer_ms']):>7.1f}ms   after POST /v1/kill was sent "
          f"({'/'.join(str(b) for b in s['kill_venue_cancel_requests'])} cancel request(s) per kill)")
    extra = ("" if s["added_p50_ms_by_created_ns"] is None else
             f"; by the fake's created_ns (after its JWT check) the added p50 is {s['added_p50_ms_by_created_ns']:.2f} ms")
    print(f"  {s['probes']} probes per path{extra}; POST /v1/graphs, mean time in the platform's handler "
          "(its /metrics): " + ", ".join("?" if g is None else f"{g:.2f} ms" for g in s["post_graphs_server_mean_ms"])
          + " per round")
    for i, rd in enumerate(rounds):
        log = rd["log"]
        print(f"  round {i + 1}: `sequence up` log: {log['WARNING']['count']} warnings, {log['ERROR']['count']} errors,"
              f" {log['Traceback']['count']} tracebacks; the cleanup kill of "
              f"{rd['cleanup_kill']['real_orders_cancelled']} probe orders took {rd['cleanup_kill']['ms']:.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--venues", default="coinbase,polymarket")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--probes", type=int, default=200, help="submit probes per round (each path)")
    ap.add_argument("--orders", type=int, default=100, help="working orders the kill switch cancels")
    ap.add_argument("--gap-ms", type=float, default=40.0, help="pause after each probe")
    ap.add_argument("--serve-venue", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve_venue:
        serve_venue(a.serve_venue, a.port)
        return
    if not SEQUENCE.exists():
        raise SystemExit(f"{SEQUENCE} is missing: install the package (make venv)")
    import itertools

    counter = itertools.count(1)
    load0 = os.getloadavg()
    runs: dict[str, list[dict[str, Any]]] = {}
    for venue in a.venues.split(","):
        runs[venue] = []
        for r in range(a.rounds):
            tmp = Path(tempfile.mkdtemp(prefix=f"sequence-bench-orders-{venue}-"))
            rd = asyncio.run(Round(venue, tmp, a, counter).run())
            runs[venue].append(rd)
            print(f"  {venue} round {r + 1}/{a.rounds}: submit p50 platform "
                  f"{statistics.median(rd['submit']['platform_ms']):.2f} ms, baseline "
                  f"{statistics.median(rd['submit']['baseline_ms']):.2f} ms; kill {rd['kill']['ms']:.1f} ms",
                  file=sys.stderr)
    load1 = os.getloadavg()
    summary = [summarise(v, rds) for v, rds in runs.items()]
    print(f"\nlive orders on the local venues: {a.rounds} rounds × {a.probes} probes per path, {a.orders} orders "
          f"per kill; load average {load0[0]:.2f} → {load1[0]:.2f} ({os.cpu_count()} CPUs, shared)")
    for s in summary:
        report(s, runs[s["venue"]], a.orders)
    print("added = p50(platform) − p50(baseline), likewise p99; worst round: the slowest round's p50; "
          "baseline: the platform's own adapter placing/cancelling directly from this process")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "live_orders.json").write_text(json.dumps({
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load_before": load0,
                    "load_after": load1},
        "args": {k: v for k, v in vars(a).items() if k not in ("serve_venue", "port")},
        "summary": summary, "runs": runs}, indent=1, default=str))
    print(f"wrote {RESULTS / 'live_orders.json'}")


if __name__ == "__main__":
    main()
