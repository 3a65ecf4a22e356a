"""Benchmark: the pure matching core alone, orders per second on one core.

No I/O, no event loop: a seeded stream of orders against one ``Book`` with a
realistic ladder (10 levels a side around 0.50, 0.01 tick), the way the engine
drives it — venue orders' book deltas are applied to the book, paper orders
never touch it. Scenarios:

* ``paper marketable``  — sandbox orders that walk 1-3 levels and fill;
* ``paper resting+cancel`` — sandbox orders that rest, cancelled later;
* ``venue mixed``       — live orders on a simulated venue: ~40 % take, the rest
                          rest visibly; cancels; the venue replenishes levels;
* ``rematch``           — the book changes under 1,000 resting orders (half of
                          them crossed each time): one ``rematch`` pass per change.

Then cProfile of ``venue mixed``: the top functions, so the cost of the
pure-Python book (``iter_levels``, ``set_level``, ``insort``) is visible.

    python bench/trading_matching.py [--orders 200000]

Prints tables and writes bench/results/trading_matching.json. Target ≥ 20,000 orders/s.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from sequence.market.book import Book, Side  # noqa: E402
from sequence.trading.matching import LevelDelta, MatchingCore, Order  # noqa: E402

TICK = 100
MID = 5000


def ladder() -> Book:
    b = Book("BENCH", tick=TICK)
    rng = random.Random(1)
    for i in range(10):
        b.set_level(Side.BID, MID - TICK * (i + 1), rng.randint(50, 500) * 100)
        b.set_level(Side.ASK, MID + TICK * i, rng.randint(50, 500) * 100)
    return b


def apply(b: Book, events: list[Any]) -> None:
    for e in events:
        if type(e) is LevelDelta:
            b.set_level(e.side, e.price, max(0, b.size_at(e.side, e.price) + e.delta))


def replenish(b: Book, rng: random.Random) -> None:
    """The venue requotes: refill the ladder so takers always find depth."""
    for i in range(10):
        bid, ask = MID - TICK * (i + 1), MID + TICK * i
        if b.size_at(Side.BID, bid) < 5000:
            b.set_level(Side.BID, bid, b.size_at(Side.BID, bid) + rng.randint(50, 500) * 100)
        if b.size_at(Side.ASK, ask) < 5000:
            b.set_level(Side.ASK, ask, b.size_at(Side.ASK, ask) + rng.randint(50, 500) * 100)


def paper_marketable(n: int) -> tuple[int, float]:
    rng = random.Random(2)
    b = ladder()
    core = MatchingCore("BENCH")
    orders = []
    for i in range(n):
        buy = rng.random() < 0.5
        side = Side.BID if buy else Side.ASK
        limit = MID + TICK * rng.randint(0, 2) if buy else MID - TICK * rng.randint(1, 3)
        orders.append(Order(f"p{i}", side, limit, rng.randint(1, 300) * 100))
    t0 = time.perf_counter()
    for o in orders:
        core.submit(o, b, 0)
        if o.order_id in core:
            core.cancel(o.order_id)
    return n, time.perf_counter() - t0


def paper_resting(n: int) -> tuple[int, float]:
    rng = random.Random(3)
    b = ladder()
    core = MatchingCore("BENCH")
    orders = []
    for i in range(n):
        buy = rng.random() < 0.5
        side = Side.BID if buy else Side.ASK
        limit = MID - TICK * rng.randint(1, 20) if buy else MID + TICK * rng.randint(0, 19)
        orders.append(Order(f"r{i}", side, limit, rng.randint(1, 300) * 100))
    t0 = time.perf_counter()
    live: list[str] = []
    for o in orders:
        core.submit(o, b, 0)
        live.append(o.order_id)
        if len(live) > 1000:
            core.cancel(live.pop(0))
    return n, time.perf_counter() - t0


def venue_specs(n: int) -> list[tuple[str, Side, int, int, str]]:
    rng = random.Random(4)
    specs = []
    for i in range(n):
        buy = rng.random() < 0.5
        side = Side.BID if buy else Side.ASK
        take = rng.random() < 0.4
        if buy:
            limit = MID + TICK * rng.randint(0, 2) if take else MID - TICK * rng.randint(1, 15)
        else:
            limit = MID - TICK * rng.randint(1, 3) if take else MID + TICK * rng.randint(0, 14)
        specs.append((f"v{i}", side, limit, rng.randint(1, 300) * 100, f"c{rng.randint(0, 9)}"))
    return specs


def venue_run(specs: list[tuple[str, Side, int, int, str]]) -> None:
    rng = random.Random(6)
    b = ladder()
    core = MatchingCore("BENCH")
    live: list[str] = []
    for i, (oid, side, limit, qty, owner) in enumerate(specs):
        ev = core.submit(Order(oid, side, limit, qty, paper=False, owner=owner, seq=i), b, 0)
        apply(b, ev)
        if oid in core:
            live.append(oid)
        if len(live) > 500:
            apply(b, core.cancel(live.pop(rng.randrange(len(live)))))
        if i % 20 == 0:
            replenish(b, rng)


def venue_mixed(n: int) -> tuple[int, float]:
    specs = venue_specs(n)
    t0 = time.perf_counter()
    venue_run(specs)
    return n, time.perf_counter() - t0


def rematch(n: int) -> tuple[int, float]:
    """``n`` book changes, each re-matching 1,000 resting paper orders (~half crossed)."""
    rng = random.Random(5)
    b = ladder()
    passes = max(1, n // 1000)
    t0 = 0.0
    total = 0.0
    for _ in range(passes):
        core = MatchingCore("BENCH")
        for i in range(1000):
            core.submit(Order(f"x{i}", Side.BID, MID - TICK * rng.randint(1, 4), 100), b, 0)
        b.set_level(Side.ASK, MID - 2 * TICK, 10**9)  # the ask drops through half of them
        t0 = time.perf_counter()
        core.rematch(b, 1)
        total += time.perf_counter() - t0
        b.set_level(Side.ASK, MID - 2 * TICK, 0)
    return passes * 1000, total


SCENARIOS: dict[str, Callable[[int], tuple[int, float]]] = {
    "paper marketable (fill + cancel rest)": paper_marketable,
    "paper resting + cancel": paper_resting,
    "venue mixed (take/rest/cancel, deltas applied)": venue_mixed,
    "rematch (1,000 resting per book change)": rematch,
}


def profile(n: int, top: int = 15) -> list[dict[str, Any]]:
    specs = venue_specs(n)
    prof = cProfile.Profile()
    prof.enable()
    venue_run(specs)
    prof.disable()
    stats = pstats.Stats(prof, stream=io.StringIO())
    stats.sort_stats("tottime")
    rows = []
    for (file, line, fn), (_cc, nc, tt, ct, _callers) in sorted(
            stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]:  # type: ignore[attr-defined]
        where = f"{Path(file).name}:{line}" if line else file
        rows.append({"function": f"{fn} ({where})", "calls": nc, "tottime_s": round(tt, 4),
                     "cumtime_s": round(ct, 4)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--orders", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3, help="best of N runs per scenario")
    args = ap.parse_args()
    rows = []
    for name, fn in SCENARIOS.items():
        best = 0.0
        for _ in range(args.repeat):
            n, secs = fn(args.orders)
            best = max(best, n / secs)
        rows.append({"scenario": name, "orders": n, "orders_per_s": round(best), "us_per_order": round(1e6 / best, 2),
                     "target": ">= 20000"})
    prof = profile(min(args.orders, 100_000))
    result = {"benchmark": "trading_matching", "python": platform.python_version(),
              "machine": platform.machine(), "cpus": os.cpu_count(), "rows": rows, "profile_venue_mixed": prof}
    print(f"matching core, one core (python {result['python']}, best of {args.repeat})")
    print(f"{'scenario':50} {'orders':>9} {'orders/s':>10} {'us/order':>9}")
    for r in rows:
        print(f"{r['scenario']:50} {r['orders']:9d} {r['orders_per_s']:10d} {r['us_per_order']:9.2f}")
    print("\ncProfile, venue mixed — top functions by own time")
    print(f"{'function':70} {'calls':>9} {'tottime s':>10} {'cumtime s':>10}")
    for p in prof:
        print(f"{p['function'][:70]:70} {p['calls']:9d} {p['tottime_s']:10.4f} {p['cumtime_s']:10.4f}")
    out = ROOT / "bench" / "results" / "trading_matching.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
