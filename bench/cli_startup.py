"""CLI start-up: `sequence --version` and `sequence strategy list --json` beside a bare
interpreter start, in the same run (issue 12: ≤ 4× and ≤ 6× `python -c pass`).

A coordinator runs in-process (SQLite, five strategies deployed) so `strategy list`
makes its real HTTP request; the commands run as subprocesses, interleaved (one
sample of each per round), so load affects all of them alike. Also measured:
`sequence strategy list` (the human table, full Typer CLI) and
`sequence strategy inspect NAME --json`.

    .venv/bin/python bench/cli_startup.py [--rounds 30]

Prints a table and writes bench/results/cli_startup.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _platform import host, median, platform, table, write
from tests.helpers import create_body

SEQUENCE = str(Path(sys.executable).parent / "sequence")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    srv, _tmp = platform()
    home = Path(tempfile.mkdtemp(prefix="sequence-bench-cli-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEQUENCE_")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), SEQUENCE_API_URL=srv.url,
               SEQUENCE_API_KEY=srv.live_key, NO_COLOR="1")
    with srv.client() as c:
        for i in range(5):
            c.post("/v1/strategies", json=create_body(name=f"bench-{i}")).raise_for_status()
    cmds = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "sequence --version": [SEQUENCE, "--version"],
        "sequence strategy list --json": [SEQUENCE, "strategy", "list", "--json"],
        "sequence strategy inspect NAME --json": [SEQUENCE, "strategy", "inspect", "bench-0", "--json"],
        "sequence strategy list (table, full CLI)": [SEQUENCE, "strategy", "list"],
    }
    times: dict[str, list[float]] = {k: [] for k in cmds}
    load_before = host()
    try:
        for cmd in cmds.values():  # warm the page cache
            subprocess.run(cmd, env=env, capture_output=True, check=True)
        for _ in range(args.rounds):
            for name, cmd in cmds.items():
                t = time.perf_counter()
                subprocess.run(cmd, env=env, capture_output=True, check=True)
                times[name].append((time.perf_counter() - t) * 1000)
    finally:
        srv.stop()
    load_after = host()
    base = median(times["python -c pass"])
    floor = min(times["python -c pass"])
    targets = {"sequence --version": 4.0, "sequence strategy list --json": 6.0}
    rows = []
    out: dict[str, dict[str, float | bool | None]] = {}
    for name, xs in times.items():
        ratio = median(xs) / base
        target = targets.get(name)
        met = None if target is None else ratio <= target
        out[name] = {"median_ms": round(median(xs), 1), "min_ms": round(min(xs), 1), "ratio": round(ratio, 2),
                     "target_ratio": target, "met": met}
        rows.append((name, f"{median(xs):.1f}", f"{min(xs):.1f}", f"{ratio:.1f}×",
                     "" if target is None else f"≤ {target:g}× {'met' if met else 'NOT met'}"))
    table(f"CLI start-up, {args.rounds} rounds (floor: python -c pass, min {floor:.1f} ms); "
          f"load {load_before['loadavg']} → {load_after['loadavg']}",
          rows, ("command", "median ms", "min ms", "vs python -c pass", "target"))
    write("cli_startup", {"host_before": load_before, "host_after": load_after, "rounds": args.rounds,
                          "results": out})


if __name__ == "__main__":
    main()
