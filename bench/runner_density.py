"""Density: N concurrent idle strategies on one runner (issue 3: 200 of them with
the runner at ≤ 3 % of a core and ≤ 150 MB RSS at steady state).

One real ``sequence runner`` subprocess (capacity N) against a coordinator in
this process (thread, SQLite).  Each strategy prints one line then idles::

    print('up', flush=True)
    import time
    while True:
        time.sleep(1)

with ``memory_mb`` 64 (every run is a full sandbox: gate → bwrap → supervisor →
strategy, its own cgroup, two pipes and a log pump in the runner).

Phases, all in one run:

    baseline   the runner registered with no strategy, for --baseline-window s:
               runner and coordinator CPU (% of one core) and RSS
    deploy     N deploys (POST /v1/strategies, start) back to back; time until
               every strategy's run is ``running`` (the runner reported the
               process started) and until every strategy's first line was read
    steady     after --settle s, --window s of runner / coordinator CPU and RSS
               (RSS sampled every second: median and max); the runner's process
               tree (bwrap, supervisors, strategies) counted and summed once
    stop       stop all N (POST …/stop each) until all are ``stopped``

"coordinator" is this process minus its main thread (which only sleeps and
samples during the window): uvicorn, the anyio worker threads, the market
simulator and the lease reaper.

    .venv/bin/python bench/runner_density.py [--strategies 200] [--memory-mb 64]
        [--window 20] [--settle 5] [--baseline-window 10]

Prints a table and writes bench/results/runner_density.json.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import psutil
from _platform import (
    CpuMeter,
    deploy,
    host,
    measure_window,
    platform,
    runner,
    table,
    wait_for,
    write,
)

MAIN = "print('up', flush=True)\nimport time\nwhile True:\n    time.sleep(1)\n"


def tree(pid: int) -> dict[str, Any]:
    kids = psutil.Process(pid).children(recursive=True)
    rss = pss = 0
    names: dict[str, int] = {}
    cpu = 0.0
    for k in kids:
        try:
            m = k.memory_full_info()  # pss: shared pages (interpreter, libs) split between sharers
            rss += m.rss
            pss += m.pss
            t = k.cpu_times()
            cpu += t.user + t.system
            names[k.name()] = names.get(k.name(), 0) + 1
        except psutil.Error:
            continue
    return {"processes": len(kids), "by_name": names, "rss_mb_sum": round(rss / 2**20, 1),
            "pss_mb_sum": round(pss / 2**20, 1), "cpu_s_sum": round(cpu, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--strategies", type=int, default=200)
    ap.add_argument("--memory-mb", type=int, default=64)
    ap.add_argument("--window", type=float, default=20.0, help="steady-state measurement window (s)")
    ap.add_argument("--settle", type=float, default=5.0, help="wait after all are running (s)")
    ap.add_argument("--baseline-window", type=float, default=10.0)
    ap.add_argument("--target-cpu-pct", type=float, default=3.0)
    ap.add_argument("--target-rss-mb", type=float, default=150.0)
    ap.add_argument("--name", default="runner_density", help="results file name (bench/results/NAME.json)")
    args = ap.parse_args()
    n = args.strategies

    load_before = host()
    srv, tmp = platform()
    r = runner(srv, tmp, capacity=n)
    sids: list[str] = []
    out: dict[str, Any] = {"strategies": n, "memory_mb": args.memory_mb, "host_before": load_before}
    try:
        with srv.client() as c:
            wait_for(lambda: srv.core.store.list_runners(), timeout=60)
            time.sleep(2.0)
            meters = {"runner": CpuMeter(r.proc.pid), "coordinator": CpuMeter()}
            base = measure_window(meters, args.baseline_window)
            out["baseline"] = base

            t0 = time.time()
            for i in range(n):
                sids.append(deploy(c, f"idle-{i:03d}", MAIN, memory_mb=args.memory_mb)["strategy_id"])
            t_posted = time.time()

            def all_running() -> bool:
                rows = srv.core.store.list_strategies(srv.client_id)
                cur = [x.get("current_run") or {} for x in rows]
                return sum(1 for x in cur if x.get("status") == "running") >= n

            wait_for(all_running, timeout=600, interval=0.1)
            t_running = time.time()
            runs = [srv.core.store.get_run(x["current_run_id"]) for x in srv.core.store.list_strategies(srv.client_id)]
            started = [x["started_at"] for x in runs if x]
            first_lines = []
            for sid in sids:
                lines = wait_for(lambda sid=sid: c.get(f"/v1/strategies/{sid}/logs").json()["lines"], timeout=120)
                assert lines[0]["line"] == "up", lines[0]
                first_lines.append(lines[0]["ts"])
            out["deploy"] = {"post_all_s": round(t_posted - t0, 2),
                             "to_all_running_s": round(max(started) - t0, 2),
                             "to_all_running_seen_s": round(t_running - t0, 2),
                             "to_all_first_line_read_s": round(max(first_lines) - t0, 2),
                             "per_strategy_ms": round((max(started) - t0) / n * 1000, 1)}

            time.sleep(args.settle)
            load_steady = host()
            steady = measure_window(meters, args.window)
            out["steady"] = steady
            out["host_steady"] = load_steady
            out["runner_tree"] = tree(r.proc.pid)
            still = sum(1 for x in srv.core.store.list_strategies(srv.client_id) if x["status"] == "running")
            out["still_running_after_window"] = still
            out["runner_rss_per_strategy_kb"] = round(
                (steady["runner"]["rss_mb_median"] - base["runner"]["rss_mb_median"]) * 1024 / n, 1)

            t_stop = time.time()
            for sid in sids:
                c.post(f"/v1/strategies/{sid}/stop")
            # A cheap count, not the whole list every 0.1 s: this process is also the coordinator.
            wait_for(lambda: srv.core.store.count_strategies_by_status().get("stopped", 0) >= n,
                     timeout=600, interval=0.5)
            out["runs_lost"] = sum(1 for sid in sids for r in srv.core.store.list_runs(srv.client_id, sid, 5)
                                   if r["status"] == "lost")
            out["stop_all_s"] = round(time.time() - t_stop, 2)
    finally:
        r.stop()
        srv.stop()
    out["host_after"] = host()

    b, s = out["baseline"], out["steady"]
    rows = [
        ("runner CPU, % of a core", f"{b['runner']['cpu_pct_of_core']}", f"{s['runner']['cpu_pct_of_core']}",
         f"≤ {args.target_cpu_pct:g}"),
        ("runner RSS, MB (median)", f"{b['runner']['rss_mb_median']}", f"{s['runner']['rss_mb_median']}",
         f"≤ {args.target_rss_mb:g}"),
        ("runner RSS, MB (max)", f"{b['runner']['rss_mb_max']}", f"{s['runner']['rss_mb_max']}", ""),
        ("coordinator CPU, % of a core", f"{b['coordinator']['cpu_pct_of_core']}",
         f"{s['coordinator']['cpu_pct_of_core']}", ""),
        ("coordinator RSS, MB (median)", f"{b['coordinator']['rss_mb_median']}",
         f"{s['coordinator']['rss_mb_median']}", ""),
    ]
    table(f"{n} idle strategies on one runner (memory_mb {args.memory_mb}); window {args.window:g} s; "
          f"load at steady {out['host_steady']['loadavg']}", rows, ("", "0 strategies", f"{n} strategies", "target"))
    d = out["deploy"]
    t = out["runner_tree"]
    print(f"deploy: {n} POSTs in {d['post_all_s']} s; all running after {d['to_all_running_s']} s "
          f"({d['per_strategy_ms']} ms/strategy); all first lines read after {d['to_all_first_line_read_s']} s")
    print(f"runner tree: {t['processes']} processes {t['by_name']}, RSS sum {t['rss_mb_sum']} MB, PSS sum {t['pss_mb_sum']} MB; "
          f"runner RSS per strategy {out['runner_rss_per_strategy_kb']} KB; still running after the window: "
          f"{out['still_running_after_window']}/{n}; stop all: {out['stop_all_s']} s; runs lost: {out['runs_lost']}")
    cpu_ok = s["runner"]["cpu_pct_of_core"] <= args.target_cpu_pct
    rss_ok = s["runner"]["rss_mb_median"] <= args.target_rss_mb
    print(f"runner CPU target: {'met' if cpu_ok else 'NOT met'}; runner RSS target: {'met' if rss_ok else 'NOT met'}")
    out.update(target_cpu_pct=args.target_cpu_pct, target_rss_mb=args.target_rss_mb, cpu_met=cpu_ok, rss_met=rss_ok,
               window_s=args.window, settle_s=args.settle)
    write(args.name, out)


if __name__ == "__main__":
    main()
