"""Benchmark: graph submit → ack, and a marketable sandbox order → fill visible in /v1/fills.

A real coordinator (simulated venues running on the wall clock, trading engine
attached, SQLite by default) serves in a uvicorn subprocess; this process is
the client, one keep-alive HTTP/1.1 connection (``http.client``), requests
back to back. Rows:

* ``GET /v1/health`` — the baseline round trip (no auth, no store);
* ``GET /v1/fills?limit=1`` — auth + one indexed store read;
* submit → ack, resting sandbox order (never fills);
* submit → ack, resting live order (enters the simulated venue's book);
* marketable sandbox order → its fill visible: from sending the POST until
  a ``GET /v1/fills?graph_id=`` answers the fill (fills commit before the
  ack, so this is the ack plus one read).

    python bench/trading_submit.py [--n 500] [--database-url postgresql://...]

Prints a table and writes bench/results/trading_submit.json (``…-postgresql.json``
with ``--database-url``). Targets (issue 15): on SQLite, submit → ack p50 ≤ 2 ms and
marketable → fill visible p99 ≤ 10 ms; on PostgreSQL, a live resting order's ack p50 ≤ 5 ms.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


# -- the server (subprocess) -------------------------------------------------------------------
def serve(port: int, data_dir: str, database_url: str | None) -> None:
    import uvicorn

    from sequence.api.app import build_core, create_app
    from sequence.settings import Settings

    # Only SEQUENCE_GC_PACING_MS is read from the environment (0: CPython's own collector, to compare).
    env = {k: v for k, v in os.environ.items() if k == "SEQUENCE_GC_PACING_MS"}
    settings = Settings.from_env(env, data_dir=Path(data_dir), database_url=database_url, port=port)
    core = build_core(settings, {})
    cid = core.store.create_client("bench")
    _r, live = core.store.create_api_key(cid, "live", "live")
    _r, test = core.store.create_api_key(cid, "test", "test")
    app = create_app(settings, core=core)  # with the market service and the graph engine
    print(json.dumps({"live": live, "test": test}), flush=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, timeout_keep_alive=60)


# -- the client ------------------------------------------------------------------------------------
class Client:
    def __init__(self, port: int, key: str) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        try:
            self.conn.request(method, path, body=data, headers={**self.headers, **(headers or {})})
            resp = self.conn.getresponse()
        except (ConnectionError, http.client.RemoteDisconnected):  # an idle keep-alive was closed
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            self.conn.request(method, path, body=data, headers={**self.headers, **(headers or {})})
            resp = self.conn.getresponse()
        raw = resp.read()
        if resp.status >= 300:
            raise RuntimeError(f"{method} {path} -> {resp.status}: {raw[:300]!r}")
        return json.loads(raw)


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


def summarize(name: str, ms: list[float], target: str = "") -> dict[str, Any]:
    return {"name": name, "n": len(ms), "p50_ms": round(pct(ms, 50), 3), "p90_ms": round(pct(ms, 90), 3),
            "p99_ms": round(pct(ms, 99), 3), "mean_ms": round(statistics.fmean(ms), 3),
            "max_ms": round(max(ms), 3), "target": target, "met": _met(ms, target)}


def _met(ms: list[float], target: str) -> bool | None:
    """Whether ``ms`` meets a target written "pNN <= X ms" (None: no target)."""
    if not target:
        return None
    p, _le, limit, _ms = target.split()
    return pct(ms, float(p[1:])) <= float(limit)


def timed(fn: Any, n: int, warmup: int = 20) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def pick_symbol(c: Client) -> tuple[str, dict[str, Any]]:
    for m in c.call("GET", "/v1/markets?venue=kalshi&limit=30&order=volume&active=true")["markets"]:
        tok = m.get("yes_token_id")
        q = c.call("GET", f"/v1/quotes?symbol={tok}&depth=3")
        if q["nbbo"]["bid"] and q["nbbo"]["ask"] and q["nbbo"]["ask"] < 0.9:
            return str(tok), q
    raise SystemExit("no two-sided Kalshi market")


def run(n: int, database_url: str | None) -> dict[str, Any]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data_dir = tempfile.mkdtemp(prefix="seq-bench-")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, __file__, "--serve", str(port), data_dir]
    if database_url:
        cmd += ["--database-url", database_url]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout is not None
        keys = json.loads(proc.stdout.readline())
        deadline = time.time() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        live, test = Client(port, keys["live"]), Client(port, keys["test"])
        symbol, _quote = pick_symbol(live)
        resting = {"node_id": "leg", "symbol": symbol, "side": "buy", "qty": 1, "venue": "kalshi",
                   "instrument_type": "prediction", "limit_price": 0.01}
        seq = iter(range(10**9))

        def submit(client: Client, node: dict[str, Any], sandbox: bool) -> str:
            return str(client.call("POST", "/v1/graphs", {"nodes": [node], "sandbox": sandbox},
                                   {"Idempotency-Key": f"bench-{next(seq)}"})["graph_id"])

        def marketable() -> None:
            ask = live.call("GET", f"/v1/quotes?symbol={symbol}&depth=1")["nbbo"]["ask"]
            node = dict(resting, limit_price=round(min(0.99, ask + 0.05), 2), urgency="high")
            t0 = time.perf_counter()
            gid = submit(test, node, True)
            while not test.call("GET", f"/v1/fills?graph_id={gid}&limit=1")["fills"]:
                pass
            fill_ms.append((time.perf_counter() - t0) * 1000)

        rows = [
            summarize("GET /v1/health (baseline)", timed(lambda: live.call("GET", "/v1/health"), n)),
            summarize("GET /v1/fills?limit=1 (auth + read)", timed(lambda: live.call("GET", "/v1/fills?limit=1"), n)),
            summarize("submit -> ack, resting sandbox", timed(lambda: submit(test, resting, True), n),
                      "" if database_url else "p50 <= 2 ms"),
            summarize("submit -> ack, resting live (in book)", timed(lambda: submit(live, resting, False), n),
                      "p50 <= 5 ms" if database_url else "p50 <= 2 ms"),
        ]
        fill_ms: list[float] = []
        for _ in range(10):
            marketable()
        fill_ms.clear()
        for _ in range(n):
            marketable()
        rows.append(summarize("marketable sandbox -> fill in /v1/fills", fill_ms, "" if database_url else "p99 <= 10 ms"))
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    return {
        "benchmark": "trading_submit",
        "database": "postgresql" if database_url else "sqlite",
        "n": n,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "rows": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--serve", nargs=2, metavar=("PORT", "DATA_DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(int(args.serve[0]), args.serve[1], args.database_url)
        return
    result = run(args.n, args.database_url)
    print(f"trading submit ({result['database']}, n={args.n}, python {result['python']})")
    print(f"{'measurement':44} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'mean ms':>8}  target")
    for r in result["rows"]:
        verdict = "" if r["met"] is None else (": met" if r["met"] else ": NOT met")
        print(f"{r['name']:44} {r['p50_ms']:8.2f} {r['p90_ms']:8.2f} {r['p99_ms']:8.2f} {r['mean_ms']:8.2f}  "
              f"{r['target']}{verdict}")
    name = "trading_submit" if result["database"] == "sqlite" else "trading_submit-postgresql"
    out = ROOT / "bench" / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
