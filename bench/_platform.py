"""Shared by the benchmarks: a coordinator (in-process thread) and real runners."""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
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


def run_times(cmd: list[str], n: int, env: dict[str, str] | None = None, *, pass_fds: tuple[int, ...] = (),
              user: int | None = None) -> list[float]:
    """Wall seconds of running *cmd* to completion, *n* times."""
    import subprocess

    out = []
    for _ in range(n):
        for fd in pass_fds:  # memfds are read by bwrap: rewind them
            os.lseek(fd, 0, os.SEEK_SET)
        t = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=env,
                       stdin=subprocess.DEVNULL, pass_fds=pass_fds, cwd="/", user=user, group=user,
                       extra_groups=[] if user is not None else None)
        out.append(time.perf_counter() - t)
    return out


@dataclass
class Floor:
    argv: list[str]
    pass_fds: tuple[int, ...] = ()
    user: int | None = None

    def times(self, n: int) -> list[float]:
        return run_times(self.argv, n, pass_fds=self.pass_fds, user=self.user)


def sandbox_floors() -> dict[str, Floor]:
    """Floors for a sandboxed start, built as the runner builds them
    (sequence.runner.isolation.bwrap_argv, the runtime mirror, the seccomp filter, the
    sandbox uid), then with one protection added at a time:

        bwrap (pid/ipc/uts/mount only, host uid)   what the first wave ran
        + user namespace (unprivileged uid)
        + network namespace
        + seccomp                                  = the runner's sandbox
        + supervisor                               two interpreter starts: every run pays this
    """
    import shutil

    from sequence.runner.isolation import (
        DataFds,
        bwrap_argv,
        bwrap_features,
        data_fd,
        identity_files,
    )
    from sequence.runner.runtime import discover_runtime, mirror_runtime
    from sequence.runner.sandbox import DEFAULT_RUNTIME_CACHE, SUPERVISOR_SOURCE
    from sequence.runner.seccomp import filter_bytes

    rt = discover_runtime()
    feats = bwrap_features("bwrap")
    if feats is None or shutil.which("bwrap") is None:
        raise FileNotFoundError("bwrap")
    root = os.geteuid() == 0
    mirrors = mirror_runtime(rt, DEFAULT_RUNTIME_CACHE) if root else {}
    files = {k: data_fd(k, v) for k, v in identity_files().items()}
    sec = data_fd("seccomp", filter_bytes())
    full = bwrap_argv(features=feats, runtime=rt, mirrors=mirrors, fds=DataFds(files, sec),
                      workspace_bytes=64 << 20, tmp_bytes=64 << 20)
    fds = (*files.values(), sec)
    uid = 1_200_000_000 if root else None
    exe = str(rt.executable)

    def without(argv: list[str], *opts: str, with_value: tuple[str, ...] = ()) -> list[str]:
        out: list[str] = []
        skip = 0
        for a in argv:
            if skip:
                skip -= 1
                continue
            if a in with_value:
                skip = 1
                continue
            if a in opts:
                continue
            out.append(a)
        return out

    no_seccomp = without(full, with_value=("--seccomp",))
    no_net = without(no_seccomp, "--unshare-net")
    no_user = without(no_net, "--unshare-user", "--disable-userns", "--assert-userns-disabled",
                      with_value=("--uid", "--gid"))
    py = ["--", exe, "-c", "pass"]
    sup = ["--", exe, "-I", "-S", "-c", SUPERVISOR_SOURCE, "--status", "2", "--workspace", "/workspace",
           "--", exe, "-u", "-s", "-c", "pass"]
    return {
        "bwrap (pid/ipc/uts/mount, host uid)": Floor([*no_user, *py], fds),
        "+ user namespace": Floor([*no_net, *py], fds, uid),
        "+ network namespace": Floor([*no_seccomp, *py], fds, uid),
        "+ seccomp (the runner's sandbox)": Floor([*full, *py], fds, uid),
        "+ supervisor → python -c pass": Floor([*full, *sup], fds, uid),
    }


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
