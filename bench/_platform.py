"""Shared by the benchmarks: a coordinator (in-process thread) and real runners."""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import LiveServer, start_server  # noqa: E402
from tests.integration.conftest import Runner  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def platform(**settings: Any) -> tuple[LiveServer, Path]:
    tmp = Path(tempfile.mkdtemp(prefix="sequence-bench-"))
    return start_server(tmp / "data", environ={}, **settings), tmp


def runner(srv: LiveServer, tmp: Path, name: str = "r1", **kw: Any) -> Runner:
    return Runner(srv, tmp / name, **kw)


def wait_for(pred: Callable[[], Any], timeout: float = 120.0, interval: float = 0.005) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not met in time")
        time.sleep(interval)


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def table(title: str, rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))


def write(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2))
    print(f"\nwrote {path}")
    return path


median = statistics.median
