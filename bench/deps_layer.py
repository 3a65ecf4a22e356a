"""Benchmark: deploy → first log line of a numpy + pandas strategy, cold and warm, beside stdlib.

Everything through the real ``sequence`` binary against ``sequence up`` (as in
tests/acceptance/), one platform per cold run:

* **cold** — a fresh platform: no lock cached on this machine (a private
  ``XDG_CACHE_HOME``), no wheels on the coordinator, an empty runner layer cache.
  pip resolves (its own download cache is the user's, as in real life), the
  wheels are uploaded, the runner fetches and unpacks them.
* **warm** — the same lock again (the lock reused, nothing uploaded, the runner's
  cached layer checked by its stat fingerprint and bound), as a new strategy.
* **stdlib** — the same strategy without requirements.txt, interleaved with the
  warm runs: the floor the layer is measured against.

Each strategy prints ``first`` at once, then imports (numpy and pandas, or json
and statistics) and prints ``ready``. Columns: ``deploy_cli_s`` the deploy
command; ``first_s`` deploy started → ``first`` readable through the API;
``ready_s`` → ``ready`` (the imports included). Target: warm ``first_s`` ≤
stdlib ``first_s`` + 0.5 s (medians).

    .venv/bin/python bench/deps_layer.py [--cold 2] [--warm 5]

Prints a table and writes bench/results/deps_layer.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.acceptance.harness import Platform  # noqa: E402

RESULTS = ROOT / "bench" / "results"
REQUIREMENTS = "numpy>=1.26\npandas>=2.1\n"
DEPS_MAIN = ("print('first', flush=True)\nimport numpy, pandas\n"
             "print('ready', numpy.__version__, pandas.__version__, flush=True)\n")
STDLIB_MAIN = "print('first', flush=True)\nimport json, statistics\nprint('ready', flush=True)\n"


def folder(base: Path, name: str, deps: bool) -> Path:
    d = base / name
    d.mkdir(parents=True)
    (d / "main.py").write_text(DEPS_MAIN if deps else STDLIB_MAIN)
    (d / "Sequence.toml").write_text(f'[strategy]\nname = "{name}"\n\n[hosted]\negress = "none"\n')
    if deps:
        (d / "requirements.txt").write_text(REQUIREMENTS)
    return d


def one(p: Platform, http: httpx.Client, src: Path, timeout: float = 300.0) -> dict[str, float]:
    name = src.name
    t0 = time.perf_counter()
    p.cli("strategy", "deploy", src.name, "--start", cwd=src.parent, timeout=timeout)
    t_cli = time.perf_counter() - t0
    first = ready = None
    deadline = time.monotonic() + timeout
    while ready is None:
        r = http.get(f"/v1/strategies/{name}/logs", params={"limit": 10})
        if r.status_code == 200:
            lines = [x.get("line", "") for x in r.json().get("lines", [])]
            if first is None and "first" in lines:
                first = time.perf_counter() - t0
            if any(x.startswith("ready") for x in lines):
                ready = time.perf_counter() - t0
                if first is None:
                    first = ready
            if any("run ended" in x and "code 0" not in x for x in lines):
                raise RuntimeError(f"{name} failed: {lines}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name}: no 'ready' in {timeout:.0f} s\n{p.up_log()}")
        time.sleep(0.005)
    return {"deploy_cli_s": t_cli, "first_s": float(first), "ready_s": ready}


def platform(base: Path) -> tuple[Platform, Path]:
    cache_base = Path("/var/lib/sequence") if os.geteuid() == 0 else base
    layers = cache_base / f"bench-layers-{uuid.uuid4().hex[:10]}"
    p = Platform(base / f"platform-{uuid.uuid4().hex[:6]}")
    p.env["SEQUENCE_RUNNER_LAYER_CACHE"] = str(layers)
    p.env["XDG_CACHE_HOME"] = str(p.root / "xdg-cache")  # no lock cached yet: pip runs
    # pip's download cache stays the user's: a cold deploy here is a first deploy, not a first pip run ever.
    p.env["PIP_CACHE_DIR"] = str(Path(os.environ.get("HOME", "/root")) / ".cache" / "pip")
    return p.start(), layers


def med(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cold", type=int, default=2)
    ap.add_argument("--warm", type=int, default=5)
    ap.add_argument("--target-s", type=float, default=0.5)
    args = ap.parse_args()
    load_before = os.getloadavg()
    base = Path(tempfile.mkdtemp(prefix="sequence-bench-deps-"))
    cold: list[dict[str, float]] = []
    warm: list[dict[str, float]] = []
    stdlib: list[dict[str, float]] = []
    caches: list[Path] = []
    try:
        for i in range(args.cold):
            p, layers = platform(base)
            caches.append(layers)
            try:
                with httpx.Client(base_url=p.url, headers={"Authorization": f"Bearer {p.api_key}"},
                                  timeout=30) as http:
                    cold.append(one(p, http, folder(p.root, f"deps-cold-{i}", True)))
                    if i == args.cold - 1:  # the last platform also runs the warm and stdlib rounds
                        one(p, http, folder(p.root, "stdlib-warmup", False))
                        for j in range(args.warm):
                            stdlib.append(one(p, http, folder(p.root, f"stdlib-{j}", False)))
                            warm.append(one(p, http, folder(p.root, f"deps-warm-{j}", True)))
            finally:
                p.close()
    finally:
        for c in caches:
            subprocess.run(["chmod", "-R", "u+w", str(c)], check=False, capture_output=True)
            shutil.rmtree(c, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)
    load_after = os.getloadavg()

    rows = [("stdlib (floor)", stdlib), ("numpy+pandas warm", warm), ("numpy+pandas cold", cold)]
    print(f"\ndeploy → first log line, median of runs (load {load_before[0]:.2f} → {load_after[0]:.2f})")
    print(f"{'strategy':<22}{'runs':>5}{'deploy_cli_s':>14}{'first_s':>10}{'min':>8}{'ready_s':>10}")
    for label, rs in rows:
        print(f"{label:<22}{len(rs):>5}{med(rs, 'deploy_cli_s'):>14.3f}{med(rs, 'first_s'):>10.3f}"
              f"{min(r['first_s'] for r in rs):>8.3f}{med(rs, 'ready_s'):>10.3f}")
    added = med(warm, "first_s") - med(stdlib, "first_s")
    added_ready = med(warm, "ready_s") - med(stdlib, "ready_s")
    ok = added <= args.target_s
    print(f"\nwarm adds {added * 1000:.0f} ms to the first line over stdlib (target ≤ {args.target_s * 1000:.0f} ms: "
          f"{'met' if ok else 'MISSED'}); {added_ready * 1000:.0f} ms to 'ready' (numpy + pandas imports included); "
          f"cold adds {(med(cold, 'first_s') - med(stdlib, 'first_s')):.2f} s")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "load_before": load_before, "load_after": load_after,
           "cpus": os.cpu_count(), "stdlib": stdlib, "warm": warm, "cold": cold,
           "median": {label: {k: med(rs, k) for k in ("deploy_cli_s", "first_s", "ready_s")} for label, rs in rows},
           "warm_added_first_s": added, "warm_added_ready_s": added_ready, "target_s": args.target_s, "met": ok}
    (RESULTS / "deps_layer.json").write_text(json.dumps(out, indent=2))
    print(f"wrote {RESULTS / 'deps_layer.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
