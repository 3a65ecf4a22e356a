"""Process plumbing the live-venue benchmarks share: CPU pinning, ports, waiting for a server,
and the nearest-rank percentile they report (p as a fraction). Standard library only, so the
venue and platform subprocesses import it cheaply."""

from __future__ import annotations

import os
import socket
import subprocess
import time


def pin(cpus: set[int]) -> None:
    """Keep this process on *cpus* (the benches put the venue and the platform on separate cores)."""
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, cpus)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Until something listens on *port*, or *proc* exits (an error)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.args} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not start")


def pct(xs: list[float], p: float) -> float:
    """The nearest-rank percentile, *p* a fraction (0.99)."""
    s = sorted(xs)
    return s[min(len(s) - 1, int(p * len(s)))]
