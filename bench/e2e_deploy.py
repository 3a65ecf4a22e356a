"""Benchmark: wall time from `sequence strategy deploy … --start` to the `done` record.

What a user waits for when they deploy the product document's end-to-end
example (examples/hosted_strategy_prediction.py) on a warm `sequence up`:
the CLI bundling and uploading, the claim, the sandbox start, the strategy's
own work (discovery, the bounded WebSocket subscription, the book walk, two
graphs, its `time.sleep(4)`, two cancels) and the log pipeline back to
`sequence strategy logs --follow`. Everything runs through the real
`sequence` binary, as in tests/acceptance/.

Each run deploys the same folder under a distinct name (`--name e2e-bench-N`)
so every run is a fresh strategy; one unmeasured warm-up run comes first.
Columns: `deploy_cli_s` the deploy command itself (bundle, upload, queue);
`boot_seen_s` until the strategy's first record reached `logs --follow`;
`ws_phase_s` from discovery to the first order intent (the bounded
subscription plus the book walk, by the strategy's clock); `strategy_s` the
strategy's own run time (boot → done, its 4 s sleep included); `to_done_s`
the number that matters, deploy started → `done` seen by the user.

The floors printed beside it: interpreter start-up (`python -c pass`) for the
strategy runtime and for the CLI's interpreter, and `sequence --version`.

    .venv/bin/python bench/e2e_deploy.py [--runs 5] [--target 8]

Prints a table and writes bench/results/e2e_deploy.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform as pyplatform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.acceptance.harness import (  # noqa: E402
    EXAMPLES,
    SEED_TOML,
    SEQUENCE,
    Platform,
    events,
    parse_records,
)

RESULTS = ROOT / "bench" / "results"


def startup_s(cmd: list[str], n: int = 5) -> float:
    """Median wall time of running ``cmd`` to completion."""
    times = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def one_run(p: Platform, folder: Path, name: str, timeout: float = 120.0) -> dict[str, Any]:
    t0 = time.perf_counter()
    p.cli("strategy", "deploy", str(folder), "--name", name, "--start")
    t_deploy = time.perf_counter() - t0
    proc = subprocess.Popen([str(SEQUENCE), "strategy", "logs", name, "--follow"], env=p.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    t_boot = t_done = None
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            lines.append(line)
            rec = (parse_records(line) or [{}])[0]
            if rec.get("event") == "boot" and t_boot is None:
                t_boot = time.perf_counter() - t0
            if rec.get("event") in ("crash", "fatal"):
                raise RuntimeError(f"{name} failed:\n{''.join(lines)}\n--- sequence up ---\n{p.up_log()}")
            if rec.get("event") == "done":
                t_done = time.perf_counter() - t0
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: no done record in {timeout:.0f} s:\n{''.join(lines)}")
    finally:
        try:
            proc.wait(timeout=30)  # --follow ends by itself once the strategy stopped
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if t_done is None:
        raise RuntimeError(f"{name}: the log stream ended without a done record:\n{''.join(lines)}\n"
                           f"{proc.stderr.read() if proc.stderr else ''}")
    recs = parse_records("".join(lines))
    boot, done = events(recs, "boot")[0], events(recs, "done")[0]
    ws = events(recs, "ws_msg")
    disc = events(recs, "discovery_done")[0]
    intents = events(recs, "graph_submit_intent")
    return {
        "name": name,
        "deploy_cli_s": round(t_deploy, 3),
        "boot_seen_s": round(t_boot or 0.0, 3),
        "to_done_s": round(t_done, 3),
        # From the strategy's own clock (same host): where its time went.
        "strategy_s": round(done["ts"] - boot["ts"], 3),
        "ws_phase_s": round((intents[0]["ts"] if intents else done["ts"]) - disc["ts"], 3),
        "ws_msgs": len(ws),
        "graphs_submitted": done["graphs_submitted"],
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--target", type=float, default=8.0, help="median to_done_s target, seconds")
    args = ap.parse_args()

    from sequence.runner.runtime import discover_runtime

    runtime = str(discover_runtime().executable)
    floors = {
        "runtime_python_c_pass_s": startup_s([runtime, "-I", "-S", "-c", "pass"]),
        "cli_python_c_pass_s": startup_s([sys.executable, "-c", "pass"]),
        "sequence_version_s": startup_s([str(SEQUENCE), "--version"]),
    }

    tmp = Path(tempfile.mkdtemp(prefix="sequence-bench-e2e-"))
    folder = tmp / "my-strategy"
    folder.mkdir()
    (folder / "main.py").write_bytes((EXAMPLES / "hosted_strategy_prediction.py").read_bytes())
    (folder / "Sequence.toml").write_text(SEED_TOML)

    p = Platform(tmp / "platform").start()
    try:
        one_run(p, folder, "e2e-bench-warmup")
        runs = [one_run(p, folder, f"e2e-bench-{i}") for i in range(1, args.runs + 1)]
    finally:
        p.close()

    cols = ["deploy_cli_s", "boot_seen_s", "ws_phase_s", "strategy_s", "to_done_s"]
    print(f"\ne2e deploy → done ({args.runs} runs on a warm `sequence up`, target median ≤ {args.target:.0f} s)")
    header = ["run", *cols, "ws_msgs"]
    widths = [max(len(h), 12) for h in header]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in runs:
        row = [r["name"], *(f"{r[c]:.3f}" for c in cols), str(r["ws_msgs"])]
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
    med = {c: round(statistics.median(r[c] for r in runs), 3) for c in cols}
    row = ["median", *(f"{med[c]:.3f}" for c in cols), ""]
    print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
    print("\nfloors (median of 5):")
    for k, v in floors.items():
        print(f"  {k:<28} {v * 1000:8.1f} ms")
    met = med["to_done_s"] <= args.target
    print(f"\nmedian deploy → done: {med['to_done_s']:.2f} s — target ≤ {args.target:.0f} s: "
          f"{'met' if met else 'NOT met'}")
    print(f"(of which the strategy itself: {med['strategy_s']:.2f} s, including its 4 s sleep and the "
          f"WebSocket phase of {med['ws_phase_s']:.2f} s)")

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "e2e_deploy.json"
    out.write_text(json.dumps({
        "benchmark": "e2e_deploy",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"python": pyplatform.python_version(), "cpus": os.cpu_count(),
                    "platform": pyplatform.platform(), "runtime": runtime},
        "settings": {"runs": args.runs, "target_s": args.target,
                     "strategy": "examples/hosted_strategy_prediction.py"},
        "floors_s": {k: round(v, 4) for k, v in floors.items()},
        "median": med,
        "target_met": met,
        "runs": runs,
    }, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
