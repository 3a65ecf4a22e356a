"""Log pump throughput: a chatty strategy's stdout → records → sink.

The target is >= 150,000 lines/s end to end (coordinator included); this
measures the runner's part alone.  The ceiling is the same ``print`` loop
writing to /dev/null (no pipe, no pump): the pump cannot beat its producer.

    .venv/bin/python bench/runner_logpump.py [--lines 1000000] [--repeat 3]

Prints a table and writes bench/results/runner_logpump.json.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import os
import platform
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from sequence.runner import LogPump, LogPumpConfig, LogRecord, RunSpec, Sandbox, SandboxConfig

LINE = (
    '{"ts": 1732550000.123, "event": "tick", "i": %d, "bid": 0.45, "ask": 0.47, "venue": "kalshi"}'
)


def producer_code(n: int) -> str:
    return f"line = {LINE!r}\nfor i in range({n}):\n    print(line % i)\n"


def run_ceiling(n: int, unbuffered: bool) -> float:
    flags = ["-u"] if unbuffered else []
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, *flags, "-c", producer_code(n)],
        stdout=subprocess.DEVNULL,
        check=True,
    )
    return time.perf_counter() - t0


class NullSink:
    def __init__(self) -> None:
        self.records = 0
        self.last_seq = 0

    async def __call__(self, batch: list[LogRecord]) -> None:
        self.records += len(batch)
        self.last_seq = batch[-1]["seq"]


class JsonSink(NullSink):
    """Pays for serialising each batch, as an HTTP upload would."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    async def __call__(self, batch: list[LogRecord]) -> None:
        self.bytes += len(json.dumps({"lines": batch}).encode())
        await super().__call__(batch)


class SlowSink(NullSink):
    """Sleeps per batch: the pump must spool to disk and catch up."""

    async def __call__(self, batch: list[LogRecord]) -> None:
        await asyncio.sleep(0.002)
        await super().__call__(batch)


async def run_pump(
    n: int, sink: NullSink, unbuffered: bool, config: LogPumpConfig | None = None
) -> tuple[float, LogPump]:
    with tempfile.TemporaryDirectory() as tmp:
        pump = LogPump(sink, spool_dir=Path(tmp), config=config)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        flags = ["-u"] if unbuffered else []
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, *flags, "-c", producer_code(n)], stdout=out_w, stderr=err_w
        )
        os.close(out_w)
        os.close(err_w)
        pump.attach("stdout", out_r)
        pump.attach("stderr", err_r)
        await pump.wait_eof()
        await pump.drain()
        elapsed = time.perf_counter() - t0
        await asyncio.to_thread(proc.wait)
        await pump.aclose()
    assert sink.records == n and sink.last_seq == n, (sink.records, n)
    return elapsed, pump


async def run_sandbox(n: int) -> tuple[float, str]:
    with tempfile.TemporaryDirectory() as tmp:
        sb = Sandbox(SandboxConfig(data_dir=Path(tmp)))
        report = sb.check()
        buf = io.BytesIO()
        data = producer_code(n).encode()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            info = tarfile.TarInfo("main.py")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        artifact = buf.getvalue()
        spec = RunSpec(
            run_id="bench",
            strategy_id="bench",
            client_id="bench",
            api_key="seq_test_bench",
            api_url="http://127.0.0.1:1",
            is_sandbox=True,
            artifact=artifact,
            artifact_sha256=hashlib.sha256(artifact).hexdigest(),
        )
        sink = NullSink()
        t0 = time.perf_counter()
        handle = await sb.start(spec, sink)
        info = await handle.wait()
        await handle.flush_logs()
        elapsed = time.perf_counter() - t0
        await handle.close()
    assert info.code == 0 and sink.records == n, (info, sink.records)
    return elapsed, report.level


def best(fn: Callable[[], float], repeat: int) -> float:
    return min(fn() for _ in range(repeat))


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def abest(
    fn: Callable[[], Awaitable[tuple[float, object]]], repeat: int
) -> tuple[float, object, float]:
    """Best wall time of *repeat* runs, with the runner process's own CPU seconds."""
    results = []
    for _ in range(repeat):
        c0 = _cpu()
        wall, extra = await fn()
        results.append((wall, extra, _cpu() - c0))
    return min(results, key=lambda r: r[0])


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-sandbox", action="store_true", help="skip the bwrap+cgroup row")
    args = ap.parse_args()
    n, rep = args.lines, args.repeat
    line_bytes = len(LINE % 500_000) + 1

    rows: list[dict[str, object]] = []

    def add(name: str, seconds: float, note: str = "", cpu: float | None = None) -> None:
        rows.append(
            {
                "scenario": name,
                "lines": n,
                "seconds": round(seconds, 4),
                "lines_per_s": round(n / seconds),
                "mib_per_s": round(n * line_bytes / seconds / 2**20, 1),
                # CPU the runner itself spent per line (robust to a busy host)
                "runner_cpu_us_per_line": None if cpu is None else round(cpu / n * 1e6, 3),
                "note": note,
            }
        )

    add(
        "ceiling: print loop > /dev/null",
        best(lambda: run_ceiling(n, False), rep),
        "producer alone",
    )
    add(
        "ceiling: print loop -u > /dev/null",
        best(lambda: run_ceiling(n, True), rep),
        "producer alone, unbuffered",
    )
    t, _, cpu = await abest(lambda: run_pump(n, NullSink(), False), rep)
    add("pipe -> pump -> null sink", t, cpu=cpu)
    t, _, cpu = await abest(lambda: run_pump(n, NullSink(), True), rep)
    add("pipe -> pump -> null sink (-u producer)", t, "PYTHONUNBUFFERED=1, as strategies run", cpu)
    t, _, cpu = await abest(lambda: run_pump(n, JsonSink(), False), rep)
    add("pipe -> pump -> json.dumps sink", t, "sink serialises each batch", cpu)
    slow_cfg = LogPumpConfig(memory_bytes=256 * 1024)
    t, pump, cpu = await abest(lambda: run_pump(n, SlowSink(), False, slow_cfg), rep)
    assert isinstance(pump, LogPump)
    add(
        "pipe -> pump -> slow sink (2 ms/batch)",
        t,
        f"spooled {pump.stats.spooled_batches} batches, peak {pump.stats.spool_peak_bytes >> 20} MiB",
        cpu,
    )
    if not args.no_sandbox:
        t, level, cpu = await abest(lambda: run_sandbox(n), rep)
        add(
            "sandbox (bwrap+cgroup) -u -> pump -> null sink",
            t,
            f"isolation {level}, incl. start/stop",
            cpu,
        )

    ceiling = float(rows[0]["lines_per_s"])  # type: ignore[arg-type]
    width = max(len(str(r["scenario"])) for r in rows)
    print(
        f"{n:,} lines of {line_bytes} bytes; {os.cpu_count()} CPUs; Python {platform.python_version()}"
    )
    load = os.getloadavg()[0]
    print(f"load average at the end: {load:.2f} (a busy host lowers the wall-clock rows)")
    head = f"{'scenario':<{width}}  {'lines/s':>11}  {'MiB/s':>7}  {'vs ceiling':>10}  {'cpu us/line':>11}  note"
    print(head)
    for r in rows:
        ratio = float(r["lines_per_s"]) / ceiling  # type: ignore[arg-type]
        cpu_us = (
            "-" if r["runner_cpu_us_per_line"] is None else f"{r['runner_cpu_us_per_line']:.2f}"
        )
        print(
            f"{r['scenario']:<{width}}  {r['lines_per_s']:>11,}  {r['mib_per_s']:>7}  "
            f"{ratio:>9.0%}  {cpu_us:>11}  {r['note']}"
        )
    out = Path(__file__).parent / "results" / "runner_logpump.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "benchmark": "runner_logpump",
                "target_lines_per_s": 150_000,
                "lines": n,
                "line_bytes": line_bytes,
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "load_average": os.getloadavg()[0],
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    asyncio.run(main())
