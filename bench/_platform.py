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


# --- helpers for the runner benchmarks (runner_deploy_latency, runner_density, runner_restart) ---


def host() -> dict[str, Any]:
    """What the numbers were measured on: CPUs, load average (1/5/15 min), Python."""
    import os
    import platform as _pf

    return {"cpus": os.cpu_count(), "loadavg": [round(x, 2) for x in os.getloadavg()],
            "python": _pf.python_version(), "machine": _pf.machine()}


def summarize(xs: list[float], scale: float = 1.0, digits: int = 1) -> dict[str, Any]:
    """n, min, p50, p90, p99, max and mean of *xs* (times *scale*, rounded)."""
    if not xs:
        return {"n": 0}
    ys = [x * scale for x in xs]
    return {"n": len(ys), "min": round(min(ys), digits), "p50": round(median(ys), digits),
            "p90": round(pct(ys, 90), digits), "p99": round(pct(ys, 99), digits),
            "max": round(max(ys), digits), "mean": round(statistics.fmean(ys), digits)}


def deploy(c: Any, name: str, main: str, **extra: Any) -> dict[str, Any]:
    """POST /v1/strategies (started) with a one-file artifact; returns the strategy."""
    from tests.helpers import create_body

    r = c.post("/v1/strategies", json=create_body(name=name, files={"main.py": main}, start=True, **extra))
    if r.status_code not in (200, 201):
        raise RuntimeError(f"deploy {name}: {r.status_code} {r.text}")
    out: dict[str, Any] = r.json()
    return out


def run_times(cmd: list[str], n: int, env: dict[str, str] | None = None) -> list[float]:
    """Wall seconds of running *cmd* to completion, *n* times."""
    import subprocess

    out = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=env,
                       stdin=subprocess.DEVNULL)
        out.append(time.perf_counter() - t)
    return out


def sandbox_pass_argv(scratch: Path) -> tuple[list[str], list[str]]:
    """Two floors for a sandboxed start, built exactly as the runner builds them
    (sequence.runner.isolation.bwrap_argv and the in-sandbox supervisor):
    ``bwrap … -- python -c pass`` and ``bwrap … -- supervisor -- python -u -s -c pass``.
    Returns (bwrap_python, bwrap_supervisor_python); the caller runs them with cwd anywhere."""
    import shutil

    from sequence.runner.isolation import bwrap_argv, write_identity_files
    from sequence.runner.runtime import discover_runtime
    from sequence.runner.sandbox import SUPERVISOR_SOURCE

    rt = discover_runtime()
    bw = shutil.which("bwrap")
    if bw is None:
        raise FileNotFoundError("bwrap")
    ws = scratch / "workspace"
    ws.mkdir(parents=True, exist_ok=True)
    passwd, group = write_identity_files(scratch)
    opts = bwrap_argv(bwrap=bw, runtime=rt, workspace=ws, passwd=passwd, group=group, tmp_bytes=64 << 20)
    exe = str(rt.executable)
    # The supervisor writes its status line to fd 2 here (any open fd will do).
    sup = [*opts, "--", exe, "-I", "-S", "-c", SUPERVISOR_SOURCE, "2", "-", "--", exe, "-u", "-s", "-c", "pass"]
    return [*opts, "--", exe, "-c", "pass"], sup


class CpuMeter:
    """CPU seconds and RSS of one process (``pid``), or of this process minus the
    calling (main) thread — i.e. the in-process coordinator's threads — when pid is None."""

    def __init__(self, pid: int | None = None) -> None:
        import threading

        import psutil

        self.proc = psutil.Process(pid)
        self.own = pid is None
        self.main_tid = threading.get_native_id()

    def cpu(self) -> float:
        t = self.proc.cpu_times()
        total = t.user + t.system
        if self.own:
            for th in self.proc.threads():
                if th.id == self.main_tid:
                    total -= th.user_time + th.system_time
        return float(total)

    def rss(self) -> int:
        return int(self.proc.memory_info().rss)


def measure_window(meters: dict[str, CpuMeter], seconds: float, step: float = 1.0) -> dict[str, dict[str, Any]]:
    """Sleep *seconds* on the calling thread; per meter: CPU as % of one core over the
    window, and RSS sampled every *step* (median and max, MB)."""
    c0 = {k: m.cpu() for k, m in meters.items()}
    t0 = time.monotonic()
    rss: dict[str, list[int]] = {k: [] for k in meters}
    while time.monotonic() - t0 < seconds:
        for k, m in meters.items():
            rss[k].append(m.rss())
        time.sleep(step)
    wall = time.monotonic() - t0
    out = {}
    for k, m in meters.items():
        used = m.cpu() - c0[k]
        out[k] = {"window_s": round(wall, 2), "cpu_s": round(used, 3), "cpu_pct_of_core": round(100 * used / wall, 2),
                  "rss_mb_median": round(median(rss[k]) / 2**20, 1), "rss_mb_max": round(max(rss[k]) / 2**20, 1)}
    return out
