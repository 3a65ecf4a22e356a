"""Deploy → first log line visible through the logs API (issue 15: p50 ≤ 100 ms and ≤ 2× the
bwrap + supervisor floor; issue 3 asked ≤ 300 ms).

Each deploy POSTs a one-file strategy (``print('ready', flush=True)`` then exit 0)
with ``start: true`` to a coordinator (in-process thread, SQLite) served by one
real ``sequence runner`` subprocess, then follows ``GET /v1/strategies/{id}/logs``
until the line is there.  ``--mode names`` deploys distinct strategies
(``lat-00``, ``lat-01`` …); ``--mode redeploy`` redeploys one strategy (each
deploy must show a line of a *new* run).  Deploys are sequential; the previous
run has ended before the next deploy.  Unmeasured warm-up deploys come first.

Where the time goes, from the coordinator's own timestamps (same host clock):

    post       the deploy request itself (validate, store the artifact, queue)
    claim      deploy sent → run claimed (the runner's long poll wakes)
    start      claim → runner reported the process started (artifact fetch,
               workspace, cgroup, gate, bwrap spawn)
    line_read  deploy sent → the runner read the line from the pipe (interpreter
               start-up inside the sandbox and the print)
    visible    deploy sent → the line seen through the logs API (+ log pump,
               upload, store): by default on the follow stream a user watches
               with `sequence strategy logs NAME --follow`, opened right after the
               deploy answers; ``--watch poll`` polls pages every --poll-ms instead

Floors, measured in the same run and interleaved with the deploys (one sample
of each before every deploy), all with the runtime interpreter the runner uses
(``sequence.runner.runtime.discover_runtime()``), built by ``_platform.sandbox_floors``:

    python -c pass                            bare interpreter start-up
    bwrap (pid/ipc/uts/mount, host uid)       the first wave's sandbox
    + user namespace                          unprivileged uid, mapped
    + network namespace                       only loopback
    + seccomp (the runner's sandbox)          the allowlist filter
    + supervisor → python -c pass             + the in-sandbox supervisor: two interpreter
                                              starts, what every run pays

    .venv/bin/python bench/runner_deploy_latency.py [--deploys 20] [--warmup 2]
        [--mode names|redeploy] [--watch follow|poll] [--poll-ms 5] [--target-ms 100]

Prints a table and writes bench/results/runner_deploy_latency.json.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from _platform import (
    deploy,
    host,
    median,
    platform,
    run_times,
    runner,
    sandbox_floors,
    summarize,
    table,
    wait_for,
    write,
)

MAIN = "print('ready', flush=True)\n"


def _follow(c: Any, sid: str, prev_run: str | None) -> tuple[float, dict[str, Any]]:
    """What `sequence strategy logs NAME --follow` does: the NDJSON stream, pushed as lines are stored."""
    with c.stream("GET", f"/v1/strategies/{sid}/logs", params={"follow": "true"}, timeout=60) as resp:
        resp.raise_for_status()
        for raw in resp.iter_lines():
            if raw.strip():
                rec = json.loads(raw)
                if rec["run_id"] != prev_run:
                    return time.time(), rec
    raise TimeoutError(f"{sid}: the follow stream ended without a line of a new run")


def _poll(c: Any, sid: str, prev_run: str | None, poll_s: float) -> tuple[float, dict[str, Any]]:
    """Pages of GET .../logs every *poll_s* (each poll is coordinator work the deploy competes with)."""
    deadline = time.monotonic() + 60
    while True:
        r = c.get(f"/v1/strategies/{sid}/logs").json()
        if r["lines"] and r["run_id"] != prev_run:
            return time.time(), {**r["lines"][0], "run_id": r["run_id"]}
        if time.monotonic() > deadline:
            raise TimeoutError(f"{sid}: no log line within 60 s")
        time.sleep(poll_s)


def one_deploy(c: Any, srv: Any, name: str, prev_run: str | None, poll_s: float, watch: str) -> dict[str, Any]:
    t0 = time.time()
    st = deploy(c, name, MAIN)
    t_post = time.time()
    sid = st["strategy_id"]
    t_vis, line = _follow(c, sid, prev_run) if watch == "follow" else _poll(c, sid, prev_run, poll_s)
    run_id = line["run_id"]
    assert line["line"] == "ready", line
    # Let the run end before the next deploy (it exits 0 at once).
    wait_for(lambda: (x := srv.core.store.get_run(run_id)) and x["ended_at"] is not None, timeout=60)
    run = srv.core.store.get_run(run_id)
    assert run is not None
    return {
        "name": name, "run_id": run_id,
        "post_ms": (t_post - t0) * 1000,
        "claim_ms": (run["claimed_at"] - t0) * 1000,
        "started_ms": (run["started_at"] - t0) * 1000 if run["started_at"] else None,
        "line_read_ms": (line["ts"] - t0) * 1000,
        "visible_ms": (t_vis - t0) * 1000,
        "run_status": run["status"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--deploys", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--mode", choices=("names", "redeploy"), default="names")
    ap.add_argument("--watch", choices=("follow", "poll"), default="follow",
                    help="how the line is watched for: the follow stream (what `sequence strategy logs --follow` "
                         "does), or pages polled every --poll-ms")
    ap.add_argument("--poll-ms", type=float, default=5.0, help="logs API poll interval (--watch poll)")
    ap.add_argument("--target-ms", type=float, default=100.0)
    ap.add_argument("--name", default="runner_deploy_latency", help="results file name (bench/results/NAME.json)")
    args = ap.parse_args()

    from sequence.runner.runtime import discover_runtime

    rt = discover_runtime()
    exe = str(rt.executable)
    try:
        sandboxes = sandbox_floors()
    except FileNotFoundError:
        sandboxes = {}
    floors: dict[str, list[float]] = {"python -c pass": [], **{k: [] for k in sandboxes}}

    def floor_sample() -> None:
        floors["python -c pass"] += run_times([exe, "-c", "pass"], 1)
        for k, f in sandboxes.items():
            floors[k] += f.times(1)

    load_before = host()
    srv, tmp = platform()
    r = runner(srv, tmp)
    rows: list[dict[str, Any]] = []
    try:
        with srv.client() as c:
            wait_for(lambda: srv.core.store.list_runners(), timeout=60)
            time.sleep(1.0)  # the runner's first long poll is in
            prev: str | None = None
            for i in range(args.warmup + args.deploys):
                name = "lat" if args.mode == "redeploy" else f"lat-{i:02d}"
                floor_sample()
                time.sleep(0.2)
                row = one_deploy(c, srv, name, prev, args.poll_ms / 1000, args.watch)
                prev = row["run_id"]
                if i >= args.warmup:
                    rows.append(row)
                time.sleep(0.3)
    finally:
        r.stop()
        srv.stop()
    load_after = host()

    cols = ("post_ms", "claim_ms", "started_ms", "line_read_ms", "visible_ms")
    stats = {k: summarize([x[k] for x in rows if x[k] is not None]) for k in cols}
    fl = {k: summarize(v, 1000) for k, v in floors.items() if v}
    base = fl["python -c pass"]["p50"]
    trows = [(k, str(v["p50"]), str(v["p90"]), str(v["max"]), f"{v['p50'] / base:.1f}×") for k, v in fl.items()]
    trows += [(f"deploy → {k.removesuffix('_ms')}", str(v["p50"]), str(v["p90"]), str(v["max"]),
               f"{v['p50'] / base:.1f}×") for k, v in stats.items()]
    p50 = stats["visible_ms"]["p50"]
    sup = fl.get("+ supervisor → python -c pass")
    met = p50 <= args.target_ms and (sup is None or p50 <= 2 * sup["p50"])
    watch = "follow stream" if args.watch == "follow" else f"poll {args.poll_ms:g} ms"
    table(f"deploy → first log line visible, {len(rows)} deploys (mode {args.mode}, {watch}); "
          f"load {load_before['loadavg']} → {load_after['loadavg']}",
          trows, ("path (ms)", "p50", "p90", "max", "vs python -c pass"))
    stages = {"deploy request": stats["post_ms"]["p50"],
              "deploy sent → claim": stats["claim_ms"]["p50"],
              "claim → started": round(median([x["started_ms"] - x["claim_ms"] for x in rows if x["started_ms"]]), 1),
              "claim → line read": round(median([x["line_read_ms"] - x["claim_ms"] for x in rows]), 1),
              "line read → visible": round(median([x["visible_ms"] - x["line_read_ms"] for x in rows]), 1)}
    print("median stages (ms): " + ", ".join(f"{k} {v}" for k, v in stages.items()))
    print(f"p50 {p50} ms vs target ≤ {args.target_ms:g} ms and ≤ 2× the floor: {'met' if met else 'NOT met'}; "
          f"{p50 / base:.1f}× bare interpreter start-up"
          + (f", {p50 / sup['p50']:.1f}× the sandbox + supervisor floor" if sup else ""))
    write(args.name, {"host_before": load_before, "host_after": load_after, "runtime": rt.describe(),
                      "mode": args.mode, "watch": args.watch, "deploys": args.deploys, "warmup": args.warmup, "poll_ms": args.poll_ms,
                      "floors_ms": fl, "stats_ms": stats, "median_stages_ms": stages, "rows": rows,
                      "target_p50_ms": args.target_ms, "p50_ms": p50, "met": met,
                      "ratio_p50_to_python_pass": round(p50 / base, 2)})


if __name__ == "__main__":
    main()
