"""``make bench``: every benchmark once, one after the other, in under 10 minutes.

Each runs with its defaults except where a default is there for a steadier
figure than a tour of all of them needs (fewer rounds of the same
measurement, noted below); the figures in bench/README.md come from the full
runs each section names. A failing benchmark stops the tour. At the end, a
table of how long each took.

    .venv/bin/python bench/_all.py [--only NAME,NAME]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Fewer repeats of the same measurement (each still prints its floor beside it).
QUICK: dict[str, list[str]] = {
    "live_feed": ["--rounds", "1"],
    "live_orders": ["--rounds", "1"],
    "market_quotes": ["--rounds", "2"],
    "runner_logpump": ["--repeat", "1"],
    "algo_latency": ["--runs", "2"],
    "runner_restart": ["--crash-trials", "3", "--stop-trials", "5", "--failover-trials", "2"],
    "runner_density": ["--strategies", "100", "--window", "10"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated benchmark names")
    args = ap.parse_args()
    only = {x for x in args.only.split(",") if x}
    names = [p.stem for p in sorted(HERE.glob("*.py")) if not p.name.startswith("_")]
    took: list[tuple[str, float]] = []
    start = time.monotonic()
    for name in names:
        if only and name not in only:
            continue
        print(f"\n=== {name} {' '.join(QUICK.get(name, []))}", flush=True)
        t = time.monotonic()
        rc = subprocess.call([sys.executable, str(HERE / f"{name}.py"), *QUICK.get(name, [])])
        took.append((name, time.monotonic() - t))
        if rc != 0:
            print(f"bench/{name}.py failed (exit {rc})", file=sys.stderr)
            raise SystemExit(rc)
    total = time.monotonic() - start
    print("\nbenchmark                  seconds")
    for name, s in took:
        print(f"{name:<26} {s:>7.1f}")
    print(f"{'total':<26} {total:>7.1f}  (target: under 600)")


if __name__ == "__main__":
    main()
