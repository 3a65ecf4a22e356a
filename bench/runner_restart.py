"""Restart, stop and failover latencies of the runner (issue 3).

Three parts, each against a coordinator in this process (thread, SQLite) and
real ``sequence runner`` subprocesses; timestamps are the coordinator's own
(runs.claimed_at / started_at / ended_at / lease_expires_at), the runner's
(log line ``ts``: when it read the line) and the strategy's (``time.time()``
printed inside the sandbox) — one host, one clock.

crash   (target: exit → running again ≤ 1.5 s, first restart)
        A strategy prints ``boot <time.time()>`` and exits 1 at once; the
        coordinator fails it and re-queues it after the restart backoff (1 s
        for the first failure, by design: lifecycle.restart_delay).  Measured
        per trial (a fresh strategy each): the strategy's last print (≈ its
        exit) → run 1 ended_at (runner: reap, drain, exit report) → run 2
        claimed_at (backoff + claim) → run 2 started_at (the target) → run 2's
        first line read.  Baseline: the 1 s backoff; "overhead" is the rest.

stop    (target: POST /stop → SIGTERM delivered, p50 ≤ 500 ms)
        A strategy installs a SIGTERM handler that prints ``term
        <time.time()>`` and exits 0.  Per trial: wait for its ``ready`` line,
        POST …/stop, read the printed time; then …/start again for the next
        trial.  Baselines in the same run: the same script run directly by the
        runtime interpreter (no runner, no sandbox) signalled with os.kill —
        signal delivery + handler — and an API round trip (GET the strategy).

failover (target: runner SIGKILL → strategy running on the other runner ≤ 5 s)
        A fresh strategy per trial (so each failover is its first failure, see
        --same-strategy) runs on runner A; runner B is registered and idle; A is
        SIGKILLed (its process group; bubblewrap's --die-with-parent takes the
        sandbox down).  Measured: kill → the coordinator's reaper marks the run
        lost (A's watch connection closed: its leases end WATCH_GRACE_S later,
        not at the lease's end) → the new run is claimed by B (at once: a lost
        runner is not a crash) → B reports it started (the target) → its first
        line.  Baseline: WATCH_GRACE_S itself (2 s, the fencing margin); the
        overhead is the rest.  Default settings (lease 12 s, heartbeat 2 s);
        --short-lease/--short-heartbeat run a second series with those.

    .venv/bin/python bench/runner_restart.py [--parts crash,stop,failover]
        [--crash-trials 5] [--stop-trials 10] [--failover-trials 4]
        [--short-lease 6 --short-heartbeat 1] [--same-strategy]

Prints tables and writes bench/results/runner_restart.json.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from typing import Any

import psutil
from _platform import deploy, host, platform, runner, summarize, table, wait_for, write

from sequence.protocol import WATCH_GRACE_S

CRASH = "import sys, time\nprint('boot', repr(time.time()), flush=True)\nsys.exit(1)\n"
TERM = (
    "import signal, sys, time\n"
    "def on_term(signum, frame):\n"
    "    print('term', repr(time.time()), flush=True)\n"
    "    sys.exit(0)\n"
    "signal.signal(signal.SIGTERM, on_term)\n"
    "print('ready', flush=True)\n"
    "while True:\n"
    "    time.sleep(1)\n"
)
IDLE = "print('ready', flush=True)\nimport time\nwhile True:\n    time.sleep(1)\n"
DESIGN_BACKOFF_S = 1.0  # sequence.lifecycle.restart_delay(1)


def logs(c: Any, sid: str, run_id: str | None = None) -> dict[str, Any]:
    params = {"run_id": run_id} if run_id else {}
    out: dict[str, Any] = c.get(f"/v1/strategies/{sid}/logs", params=params).json()
    return out


def runs_of(srv: Any, sid: str) -> list[dict[str, Any]]:
    return sorted(srv.core.store.list_runs(srv.client_id, sid, 50), key=lambda r: r["epoch"])


# ---------------------------------------------------------------- crash → running
def crash_part(trials: int) -> dict[str, Any]:
    srv, tmp = platform()
    r = runner(srv, tmp)
    rows = []
    try:
        with srv.client() as c:
            wait_for(lambda: srv.core.store.list_runners(), timeout=60)
            time.sleep(1.0)
            for i in range(trials + 1):  # the first is a warm-up
                sid = deploy(c, f"crash-{i:02d}", CRASH)["strategy_id"]
                wait_for(lambda sid=sid: len(x := runs_of(srv, sid)) >= 2 and x[1]["started_at"] and x, timeout=60)
                r1, r2 = runs_of(srv, sid)[:2]
                l1 = wait_for(lambda sid=sid, r1=r1: logs(c, sid, r1["run_id"])["lines"], timeout=30)
                l2 = wait_for(lambda sid=sid, r2=r2: logs(c, sid, r2["run_id"])["lines"], timeout=30)
                c.post(f"/v1/strategies/{sid}/stop")  # run 2 printed and exits 1 too: no third run
                exit_ts = float(l1[0]["line"].split()[1])  # its last act before sys.exit(1)
                row = {
                    "exit_to_ended_ms": (r1["ended_at"] - exit_ts) * 1000,
                    "ended_to_claimed_ms": (r2["claimed_at"] - r1["ended_at"]) * 1000,
                    "claimed_to_started_ms": (r2["started_at"] - r2["claimed_at"]) * 1000,
                    "exit_to_running_ms": (r2["started_at"] - exit_ts) * 1000,
                    "ended_to_running_ms": (r2["started_at"] - r1["ended_at"]) * 1000,
                    "exit_to_boot_line_ms": (float(l2[0]["line"].split()[1]) - exit_ts) * 1000,
                    "run1_reason": r1["reason"],
                }
                if i > 0:
                    rows.append(row)
                wait_for(lambda sid=sid: srv.core.store.get_strategy(None, sid)["status"] == "stopped", timeout=60)
    finally:
        r.stop()
        srv.stop()
    keys = [k for k in rows[0] if k.endswith("_ms")]
    return {"trials": trials, "rows": rows, "stats_ms": {k: summarize([x[k] for x in rows]) for k in keys},
            "design_backoff_s": DESIGN_BACKOFF_S}


# ---------------------------------------------------------------- stop → SIGTERM
def local_term_floor(trials: int) -> list[float]:
    """The same script under the runtime interpreter, no runner, no sandbox."""
    from sequence.runner.runtime import discover_runtime

    exe = str(discover_runtime().executable)
    out = []
    for _ in range(trials):
        p = subprocess.Popen([exe, "-u", "-c", TERM], stdout=subprocess.PIPE, text=True)
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready"
        time.sleep(0.1)
        t0 = time.time()
        p.terminate()
        line = p.stdout.readline().split()
        out.append(float(line[1]) - t0)
        p.wait()
    return out


def stop_part(trials: int) -> dict[str, Any]:
    floor = local_term_floor(trials)
    srv, tmp = platform()
    r = runner(srv, tmp)
    rows = []
    rtt = []
    try:
        with srv.client() as c:
            wait_for(lambda: srv.core.store.list_runners(), timeout=60)
            time.sleep(1.0)
            sid = deploy(c, "term", TERM)["strategy_id"]
            for i in range(trials + 1):  # the first is a warm-up
                if i > 0:
                    c.post(f"/v1/strategies/{sid}/start")
                run_id = wait_for(lambda: (x := logs(c, sid)) and x["lines"] and x["lines"][0]["line"] == "ready"
                                  and srv.core.store.get_run(x["run_id"])["ended_at"] is None and x["run_id"],
                                  timeout=60)
                for _ in range(3):
                    t = time.perf_counter()
                    c.get(f"/v1/strategies/{sid}")
                    rtt.append(time.perf_counter() - t)
                time.sleep(0.3)
                t0 = time.time()
                resp = c.post(f"/v1/strategies/{sid}/stop")
                t_post = time.time()
                assert resp.status_code == 200, resp.text
                lines = wait_for(lambda run_id=run_id: [x for x in logs(c, sid, run_id)["lines"]
                                                        if x["line"].startswith("term ")], timeout=60)
                run = wait_for(lambda run_id=run_id: (x := srv.core.store.get_run(run_id))["ended_at"] and x,
                               timeout=60)
                term_ts = float(lines[0]["line"].split()[1])
                row = {"post_ms": (t_post - t0) * 1000, "sigterm_handled_ms": (term_ts - t0) * 1000,
                       "ended_ms": (run["ended_at"] - t0) * 1000, "reason": run["reason"]}
                if i > 0:
                    rows.append(row)
                wait_for(lambda: srv.core.store.get_strategy(None, sid)["status"] == "stopped", timeout=60)
    finally:
        r.stop()
        srv.stop()
    keys = [k for k in rows[0] if k.endswith("_ms")]
    return {"trials": trials, "rows": rows, "stats_ms": {k: summarize([x[k] for x in rows]) for k in keys},
            "floor_local_sigterm_ms": summarize(floor, 1000, 2), "api_round_trip_ms": summarize(rtt, 1000, 2)}


# ---------------------------------------------------------------- runner SIGKILL → other runner
def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def failover_part(trials: int, lease_s: float, heartbeat_s: float, same_strategy: bool) -> dict[str, Any]:
    srv, tmp = platform(lease_seconds=lease_s, heartbeat_seconds=heartbeat_s)
    runners = [runner(srv, tmp, "r0")]
    rows = []
    try:
        with srv.client() as c:
            wait_for(lambda: srv.core.store.list_runners(), timeout=60)
            time.sleep(1.0)
            sid = ""
            for i in range(trials):
                # A fresh strategy per trial: each failover is that strategy's first failure
                # (1 s backoff).  --same-strategy moves one strategy again and again instead:
                # a runner loss counts as a failure, so its backoff grows 1 s, 2 s, 4 s …
                if not same_strategy or i == 0:
                    if sid:
                        c.post(f"/v1/strategies/{sid}/stop")
                        wait_for(lambda sid=sid: srv.core.store.get_strategy(None, sid)["status"] == "stopped",
                                 timeout=60)
                    sid = deploy(c, f"failover-{i}", IDLE)["strategy_id"]
                cur = wait_for(lambda sid=sid: (x := srv.core.store.get_strategy(None, sid)["current_run"])
                               and x["started_at"] and x, timeout=120)
                old = runners[-1]
                assert cur["runner_id"] is not None
                n_before = len(srv.core.store.list_runners())
                new = runner(srv, tmp, f"r{i + 1}")
                runners.append(new)
                wait_for(lambda n_before=n_before: len(srv.core.store.list_runners()) > n_before, timeout=60)
                time.sleep(1.0 + (i * 0.7) % heartbeat_s)  # B's long poll is in; vary the heartbeat phase
                old_tree = psutil.Process(old.proc.pid).children(recursive=True)  # its sandbox: bwrap, python
                t_kill = time.time()
                old.kill()
                moved = wait_for(lambda cur=cur, sid=sid: (x := srv.core.store.get_strategy(None, sid)["current_run"])
                                 and x["run_id"] != cur["run_id"] and x["started_at"] and x,
                                 timeout=lease_s * 4 + 30, interval=0.02)
                lost = srv.core.store.get_run(cur["run_id"])
                new_run = srv.core.store.get_run(moved["run_id"])
                assert lost is not None and new_run is not None
                line = wait_for(lambda m=moved, sid=sid: logs(c, sid, m["run_id"])["lines"], timeout=30)[0]
                rows.append({
                    "kill_to_lease_end_ms": (lost["lease_expires_at"] - t_kill) * 1000,
                    "kill_to_lost_ms": (lost["ended_at"] - t_kill) * 1000,
                    "lost_to_claimed_ms": (new_run["claimed_at"] - lost["ended_at"]) * 1000,
                    "claimed_to_started_ms": (new_run["started_at"] - new_run["claimed_at"]) * 1000,
                    "kill_to_running_ms": (new_run["started_at"] - t_kill) * 1000,
                    "kill_to_first_line_ms": (line["ts"] - t_kill) * 1000,
                    "overhead_beyond_watch_grace_ms": (new_run["started_at"] - t_kill - WATCH_GRACE_S) * 1000,
                    "lost_reason": lost["reason"], "lost_status": lost["status"],
                    "same_runner_as_old": new_run["runner_id"] == cur["runner_id"],
                    "old_sandbox_processes_left": sum(1 for p in old_tree if _alive(p)),
                    "consecutive_failures": srv.core.store.get_strategy(None, sid)["consecutive_failures"],
                })
    finally:
        for r in runners:
            r.stop()
        srv.stop()
    keys = [k for k in rows[0] if k.endswith("_ms")]
    return {"lease_seconds": lease_s, "heartbeat_seconds": heartbeat_s, "trials": trials,
            "same_strategy": same_strategy, "rows": rows,
            "stats_ms": {k: summarize([x[k] for x in rows]) for k in keys}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default="crash,stop,failover")
    ap.add_argument("--crash-trials", type=int, default=5)
    ap.add_argument("--stop-trials", type=int, default=10)
    ap.add_argument("--failover-trials", type=int, default=4)
    ap.add_argument("--short-lease", type=float, default=None, help="failover: a second series with this lease")
    ap.add_argument("--short-heartbeat", type=float, default=1.0)
    ap.add_argument("--same-strategy", action="store_true",
                    help="failover: move one strategy every trial (its backoff grows) instead of a fresh one")
    ap.add_argument("--name", default="runner_restart", help="results file name (bench/results/NAME.json)")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    out: dict[str, Any] = {"host_before": host()}
    verdict = []

    if "crash" in parts:
        out["crash"] = cr = crash_part(args.crash_trials)
        out["host_after_crash"] = host()
        s = cr["stats_ms"]
        rows = [(k.removesuffix("_ms").replace("_", " "), str(v["p50"]), str(v["max"])) for k, v in s.items()]
        table(f"crash → running again (first restart), {args.crash_trials} trials; load {out['host_after_crash']['loadavg']}",
              rows, ("ms", "p50", "max"))
        p50 = s["exit_to_running_ms"]["p50"]
        over = p50 - DESIGN_BACKOFF_S * 1000
        print(f"design backoff {DESIGN_BACKOFF_S:g} s; overhead beyond it (p50) {over:.0f} ms")
        verdict.append(("crash → running p50 ≤ 1500 ms", f"{p50:.0f} ms", p50 <= 1500))
        cr.update(p50_ms=p50, overhead_beyond_backoff_ms=round(over, 1), target_ms=1500, met=p50 <= 1500)

    if "stop" in parts:
        out["stop"] = st = stop_part(args.stop_trials)
        out["host_after_stop"] = host()
        s = st["stats_ms"]
        rows = [("POST /stop → SIGTERM handled (in the sandbox)", str(s["sigterm_handled_ms"]["p50"]),
                 str(s["sigterm_handled_ms"]["p90"]), str(s["sigterm_handled_ms"]["max"])),
                ("POST /stop → run ended (exit reported)", str(s["ended_ms"]["p50"]), str(s["ended_ms"]["p90"]),
                 str(s["ended_ms"]["max"])),
                ("POST /stop request itself", str(s["post_ms"]["p50"]), str(s["post_ms"]["p90"]), str(s["post_ms"]["max"])),
                ("baseline: os.kill → handler, no runner/sandbox", str(st["floor_local_sigterm_ms"]["p50"]),
                 str(st["floor_local_sigterm_ms"]["p90"]), str(st["floor_local_sigterm_ms"]["max"])),
                ("baseline: API round trip (GET strategy)", str(st["api_round_trip_ms"]["p50"]),
                 str(st["api_round_trip_ms"]["p90"]), str(st["api_round_trip_ms"]["max"]))]
        table(f"stop → SIGTERM delivered, {args.stop_trials} trials; load {out['host_after_stop']['loadavg']}",
              rows, ("ms", "p50", "p90", "max"))
        p50 = s["sigterm_handled_ms"]["p50"]
        verdict.append(("stop → SIGTERM p50 ≤ 500 ms", f"{p50:.0f} ms", p50 <= 500))
        st.update(p50_ms=p50, target_ms=500, met=p50 <= 500)

    if "failover" in parts:
        out["failover"] = []
        from sequence.settings import Settings

        default = Settings()
        series = [(default.lease_seconds, default.heartbeat_seconds)]
        if args.short_lease:
            series.append((args.short_lease, args.short_heartbeat))
        for lease, hb in series:
            fo = failover_part(args.failover_trials, lease, hb, args.same_strategy)
            fo["host_after"] = host()
            out["failover"].append(fo)
            s = fo["stats_ms"]
            rows = [(k.removesuffix("_ms").replace("_", " "), str(v["p50"]), str(v["min"]), str(v["max"]))
                    for k, v in s.items()]
            table(f"runner SIGKILL → running on the other runner, lease {lease:g} s / heartbeat {hb:g} s, "
                  f"{args.failover_trials} trials; load {fo['host_after']['loadavg']}", rows, ("ms", "p50", "min", "max"))
            print(f"baseline: WATCH_GRACE_S = {WATCH_GRACE_S:g} s (a closed watch → the runner's leases end)")
            worst = s["kill_to_running_ms"]["max"]
            fo.update(worst_ms=worst, target_ms=5000, met=worst <= 5000, watch_grace_s=WATCH_GRACE_S)
            verdict.append((f"failover ≤ 5 s (lease {lease:g} s / hb {hb:g} s, worst of {args.failover_trials})",
                            f"{worst / 1000:.2f} s", worst <= 5000))

    table("targets", [(a, b, "met" if ok else "NOT met") for a, b, ok in verdict], ("target", "measured", ""))
    out["host_after"] = host()
    out["verdict"] = [{"target": a, "measured": b, "met": ok} for a, b, ok in verdict]
    write(args.name, out)


if __name__ == "__main__":
    main()
