"""Log capture end to end: a strategy printing N lines, every line stored in order.

Measures lines/s from the strategy's first line to the last line being visible
through the logs API (SQLite), beside a `print` loop to /dev/null run by the
same runtime interpreter as the ceiling.

    .venv/bin/python bench/runner_logs_e2e.py [--lines 1000000] [--database-url postgresql://…]

With ``--database-url`` the coordinator stores into that PostgreSQL database
(an empty one: it is migrated, and the results file is
``runner_logs_e2e-postgresql.json``). Besides the rate, the CPU each process
spent over the run is reported (the coordinator's per line), and the SQLite
write path alone — the same lines stored by ``sqlite3`` with nothing else
running, a chunk row per batch as the store does — as the store's own floor,
and beside it the same lines a row each (the table the store used before).
"""

from __future__ import annotations

import argparse
import subprocess
import time

from _platform import platform, runner, table, wait_for, write
from tests.helpers import create_body


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--database-url", default=None)
    args = ap.parse_args()
    n = args.lines
    loop = f"import sys\nw = sys.stdout.write\nfor i in range({n}):\n    w('line %d\\n' % i)\n"

    from sequence.runner.runtime import discover_runtime

    rt = discover_runtime()
    t = time.perf_counter()
    subprocess.run([str(rt.executable), "-S", "-c", loop], stdout=subprocess.DEVNULL, check=True)
    ceiling_s = time.perf_counter() - t

    # Capture capacity is what is measured: the per-strategy rate limit (a quota,
    # SEQUENCE_LOG_RATE_LINES) is off here.
    srv, tmp = platform(log_rate_lines=0, database_url=args.database_url)
    r = runner(srv, tmp)
    import psutil

    me, rp = psutil.Process(), psutil.Process(r.proc.pid)
    try:
        with srv.client() as c:
            wait_for(lambda: srv.core.store.list_runners())
            c_me, c_r = me.cpu_times(), rp.cpu_times()
            t0 = time.perf_counter()
            s = c.post("/v1/strategies", json=create_body(name="chatty", files={"main.py": loop}, start=True)).json()
            sid = s["strategy_id"]
            wait_for(lambda: (x := c.get(f"/v1/strategies/{sid}").json())["status"] == "stopped" and x, timeout=600,
                     interval=0.05)  # a gentle poll: the coordinator under test shares the 2 cores
            run = c.get(f"/v1/strategies/{sid}/runs").json()["runs"][0]
            elapsed = time.perf_counter() - t0
            d_me, d_r = me.cpu_times(), rp.cpu_times()
            cpu = {  # CPU seconds over the run, by process
                "coordinator (in this process)": (d_me.user + d_me.system) - (c_me.user + c_me.system),
                "runner daemon": (d_r.user + d_r.system) - (c_r.user + c_r.system),
                "sandbox: bwrap, supervisor, strategy": (d_r.children_user + d_r.children_system)
                - (c_r.children_user + c_r.children_system),
            }
            # Verify every line, in order.
            after, got = 0, 0
            while True:
                page = c.get(f"/v1/strategies/{sid}/logs", params={"after_seq": after, "limit": 10000}).json()
                out = [x for x in page["lines"] if x["stream"] != "system"]  # the exit line comes last
                for i, rec in enumerate(out):
                    assert rec["seq"] == got + i + 1 and rec["line"] == f"line {got + i}", rec
                got += len(out)
                if len(page["lines"]) < 10000:
                    break
                after = page["next_seq"]
            assert got == n, (got, n)
    finally:
        r.stop()
        srv.stop()
    rate = n / elapsed
    ceiling = n / ceiling_s
    store = "PostgreSQL" if args.database_url else "SQLite"
    floor_s = sqlite_floor(n) if not args.database_url else None
    # The table the store used before (a row per line), for the record.
    per_line_s = sqlite_floor(n, per_line=True) if not args.database_url else None
    rows = [("print loop to /dev/null (ceiling)", f"{ceiling_s:.2f}", f"{ceiling:,.0f}")]
    if floor_s is not None:
        rows.append(("SQLite alone: the same lines, a chunk row per 5,000 (the store's table)", f"{floor_s:.2f}",
                     f"{n / floor_s:,.0f}"))
    if per_line_s is not None:
        rows.append(("SQLite alone, a row per line (the table before 2026-12-01)", f"{per_line_s:.2f}",
                     f"{n / per_line_s:,.0f}"))
    rows.append((f"strategy → runner → coordinator → {store}", f"{elapsed:.2f}", f"{rate:,.0f}"))
    table(f"log capture, {n:,} lines (all stored in order: {got == n})", rows, ("path", "seconds", "lines/s"))
    table("CPU over the run (2 cores: the wall time is the bound when these add up to ~2 x seconds)",
          [(k, f"{v:.2f}", f"{v / n * 1e6:.2f}") for k, v in cpu.items()], ("process", "CPU s", "us/line"))
    ok = rate >= 300_000 and rate / ceiling >= 0.25
    print(f"ratio to the print ceiling: {rate / ceiling:.2f}" + (
        f"; to SQLite alone: {rate / (n / floor_s):.2f}" if floor_s else "") +
        f"; target ≥ 300,000 lines/s and ≥ 0.25 of the ceiling: {'met' if ok else 'NOT met'}")
    write("runner_logs_e2e" + ("-postgresql" if args.database_url else ""), {"lines": n, "store": store,
                              "sqlite_floor_seconds": floor_s, "sqlite_per_line_seconds": per_line_s, "seconds": elapsed, "lines_per_s": rate, "ceiling_seconds": ceiling_s,
                              "ceiling_lines_per_s": ceiling, "ratio": rate / ceiling, "run": run, "cpu_seconds": cpu,
                              "target_lines_per_s": 300_000, "target_ratio": 0.25})


def sqlite_floor(n: int, batch: int = 5000, per_line: bool = False) -> float:
    """Seconds for ``sqlite3`` alone to store ``n`` log lines (WAL, synchronous=NORMAL), ``batch``
    a transaction: what SQLite's write path allows here, with nothing else running.

    Default: the store's way, one ``log_chunks`` row per batch whose body is the batch JSON
    (built before the clock starts: the coordinator stores the runner's body as it came).
    *per_line*: a row per line into the table the store used before (run_id, seq,
    strategy_id, ts, stream, line, partial), by ``executemany``."""
    import json
    import sqlite3
    import tempfile
    import uuid
    from itertools import repeat
    from pathlib import Path

    from sequence.store.db import Database

    path = Path(tempfile.mkdtemp(prefix="seq-bench-floor-")) / "floor.db"
    Database(f"sqlite:///{path}").migrate()  # the real schema
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    run_id, sid, now = str(uuid.uuid4()), str(uuid.uuid4()), time.time()
    if per_line:
        con.execute("CREATE TABLE per_line (run_id VARCHAR(40) NOT NULL, seq BIGINT NOT NULL, "
                    "strategy_id VARCHAR(40) NOT NULL, ts FLOAT NOT NULL, stream VARCHAR(8) NOT NULL, "
                    "line TEXT NOT NULL, partial BOOLEAN NOT NULL, PRIMARY KEY (run_id, seq)) WITHOUT ROWID")
        t = time.perf_counter()
        for first in range(1, n + 1, batch):
            lines = (f"line {i}" for i in range(first - 1, first - 1 + batch))
            rows = list(zip(repeat(run_id), range(first, first + batch), repeat(sid), repeat(now), repeat("stdout"),
                            lines, repeat(False), strict=False))
            con.execute("BEGIN IMMEDIATE")
            con.executemany("INSERT INTO per_line VALUES (?,?,?,?,?,?,?)", rows)
            con.execute("COMMIT")
        return time.perf_counter() - t
    bodies = [(first, json.dumps({"epoch": 1, "first_seq": first, "ts": [now] * batch, "streams": "o" * batch,
                                  "lines": [f"line {i}" for i in range(first - 1, first - 1 + batch)], "partial": []},
                                 separators=(",", ":"))) for first in range(1, n + 1, batch)]
    t = time.perf_counter()
    for first, body in bodies:
        con.execute("BEGIN IMMEDIATE")
        con.execute("INSERT INTO log_chunks (run_id, last_seq, first_seq, nbytes, body) VALUES (?,?,?,?,?)",
                    (run_id, first + batch - 1, first, 0, body))
        con.execute("COMMIT")
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
