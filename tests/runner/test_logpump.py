"""The log pump on its own: real writer processes, failing and slow sinks, spooling."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from sequence.runner import LogPump, LogPumpConfig, LogRecord, replay_spool
from sequence.runner.logs import spool_files
from sequence.runner.logs.uploader import Backoff, Retrying
from tests.runner.helpers import Collector

pytestmark = pytest.mark.anyio

FAST_RETRY = Backoff(0.005, 0.02)


class Writer:
    """A real child process whose stdout/stderr feed a pump."""

    def __init__(self, code: str, pump: LogPump) -> None:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code], stdout=out_w, stderr=err_w, stdin=subprocess.DEVNULL
        )
        os.close(out_w)
        os.close(err_w)
        pump.attach("stdout", out_r)
        pump.attach("stderr", err_r)

    async def wait(self) -> int:
        return await asyncio.to_thread(self.proc.wait)


def _lines(n: int, width: int = 60) -> str:
    return f"import sys\nw = sys.stdout.write\nfor i in range({n}):\n    w(f'{{i:08d}} ' + 'x' * {width} + '\\n')\n"


def _expected(n: int, width: int = 60) -> list[str]:
    return [f"{i:08d} " + "x" * width for i in range(n)]


async def _until(cond: Callable[[], bool], timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition never became true"
        await asyncio.sleep(0.005)


class Outage:
    """A sink that fails (raising) while ``down`` and records what it accepts."""

    def __init__(self) -> None:
        self.down = True
        self.accepted = Collector()
        self.calls = 0

    async def __call__(self, batch: list[LogRecord]) -> None:
        self.calls += 1
        if self.down:
            raise (ConnectionError if self.calls % 2 else ValueError)("coordinator unavailable")
        await self.accepted(batch)


async def test_sink_outage_then_recovery_loses_duplicates_and_reorders_nothing(
    tmp_path: Path,
) -> None:
    sink = Outage()
    retrying = Retrying(sink, FAST_RETRY)
    cfg = LogPumpConfig(memory_bytes=64 * 1024, blocked_after_s=0.05)
    pump = LogPump(retrying, spool_dir=tmp_path / "logs", config=cfg)
    n = 50_000
    w = Writer(_lines(n), pump)
    assert await w.wait() == 0
    assert await pump.wait_eof()
    assert pump.stats.spooled_batches > 0 and spool_files(tmp_path / "logs"), "spooled to disk"
    assert retrying.failures > 0 and sink.accepted.records == []
    sink.down = False
    assert await pump.drain(60)
    assert sink.accepted.lines() == _expected(n)
    assert [r["seq"] for r in sink.accepted.records] == list(range(1, n + 1))
    assert spool_files(tmp_path / "logs") == [], "delivered spool files are removed"
    assert await pump.aclose() == []


async def test_outage_in_the_middle_of_a_run_keeps_order(tmp_path: Path) -> None:
    sink = Outage()
    sink.down = False
    cfg = LogPumpConfig(memory_bytes=32 * 1024, batch_lines=100, blocked_after_s=0.05)
    pump = LogPump(Retrying(sink, FAST_RETRY), spool_dir=tmp_path / "logs", config=cfg)
    code = "import sys, time\nfor i in range(30000):\n    print(i)\n    if i % 5000 == 0:\n        sys.stdout.flush(); time.sleep(0.02)\n"
    w = Writer(code, pump)

    async def flap() -> None:
        for _ in range(6):
            await asyncio.sleep(0.02)
            sink.down = not sink.down
        sink.down = False

    await asyncio.gather(w.wait(), flap())
    assert await pump.drain(60)
    assert [int(x) for x in sink.accepted.lines()] == list(range(30000))
    await pump.aclose()


async def test_a_batch_stored_before_the_sink_failed_is_resent_so_receivers_dedupe_by_seq(
    tmp_path: Path,
) -> None:
    stored: list[LogRecord] = []
    calls = 0

    async def lossy_ack(batch: list[LogRecord]) -> None:
        nonlocal calls
        calls += 1
        stored.extend(batch)
        if calls % 3 == 0:
            raise TimeoutError("stored, but the answer was lost")

    pump = LogPump(
        Retrying(lossy_ack, FAST_RETRY), spool_dir=tmp_path, config=LogPumpConfig(batch_lines=50)
    )
    w = Writer("for i in range(1000): print(i)", pump)
    await w.wait()
    assert await pump.drain(60)
    deduped: dict[int, str] = {}
    for r in stored:
        deduped.setdefault(r["seq"], r["line"])
    assert list(deduped) == list(range(1, 1001))
    assert [int(v) for v in deduped.values()] == list(range(1000))
    assert len(stored) > 1000, "at-least-once: some batches arrived twice"
    await pump.aclose()


async def test_backpressure_bounds_the_spool_and_blocks_the_writer(tmp_path: Path) -> None:
    release = asyncio.Event()
    got = Collector()

    async def stuck(batch: list[LogRecord]) -> None:
        await release.wait()
        await got(batch)

    spool_max = 1 << 20
    cfg = LogPumpConfig(memory_bytes=64 * 1024, spool_max_bytes=spool_max, read_chunk=64 * 1024)
    pump = LogPump(stuck, spool_dir=tmp_path, config=cfg)
    n = 300_000  # ~21 MiB of output, far beyond what may be buffered
    w = Writer(_lines(n), pump)
    await _until(lambda: pump.stats.paused)
    read = pump.stats.bytes_read
    await asyncio.sleep(0.3)
    assert pump.stats.bytes_read == read, "paused: the pipe is not read"
    assert w.proc.poll() is None, "the writer is blocked in write(), not finished"
    assert pump.stats.spool_peak_bytes <= 2 * spool_max
    assert pump.stats.bytes_read < 2 * spool_max, "read no more than the bounds allow"
    release.set()
    assert await w.wait() == 0
    assert await pump.drain(120)
    assert got.lines() == _expected(n), "slowed, never dropped"
    assert pump.stats.pauses >= 1 and not pump.stats.paused
    await pump.aclose()


async def test_undelivered_records_are_persisted_on_close_and_replayed_once(tmp_path: Path) -> None:
    ok_batches = 0

    async def dies_after_three(batch: list[LogRecord]) -> None:
        nonlocal ok_batches
        if ok_batches >= 3:
            raise ConnectionError("gone")
        ok_batches += 1
        await first(batch)

    first = Collector()
    cfg = LogPumpConfig(batch_lines=100, memory_bytes=16 * 1024)
    pump = LogPump(dies_after_three, spool_dir=tmp_path / "logs", config=cfg)
    w = Writer("for i in range(20000): print(i)", pump)
    await w.wait()
    await pump.wait_eof()
    assert not await pump.drain(0.2)
    left = await pump.aclose()
    assert left and all(p.exists() for p in left)
    second = Collector()
    assert await replay_spool(tmp_path / "logs", second) == 20000 - len(first.records)
    assert len(first.records) > 0
    seqs = [r["seq"] for r in first.records + second.records]
    assert seqs == list(range(1, 20001)), "exactly once across the restart"
    assert [int(x) for x in first.lines() + second.lines()] == list(range(20000))
    assert spool_files(tmp_path / "logs") == []


async def test_replay_stops_at_a_failing_sink_and_can_resume(tmp_path: Path) -> None:
    sink = Outage()
    pump = LogPump(sink, spool_dir=tmp_path, config=LogPumpConfig(memory_bytes=0))
    w = Writer("for i in range(5000): print(i)", pump)
    await w.wait()
    await pump.wait_eof()
    assert await pump.aclose()
    with pytest.raises((ConnectionError, ValueError)):
        await replay_spool(tmp_path, sink)
    sink.down = False
    await replay_spool(tmp_path, sink)
    first_seen: dict[int, str] = {}
    for r in sink.accepted.records:
        first_seen.setdefault(r["seq"], r["line"])
    assert list(first_seen) == list(range(1, 5001))


async def test_batches_are_bounded_by_lines_and_bytes(tmp_path: Path) -> None:
    got = Collector()
    sizes: list[tuple[int, int]] = []

    async def sink(batch: list[LogRecord]) -> None:
        sizes.append((len(batch), sum(len(r["line"]) for r in batch)))
        await got(batch)

    cfg = LogPumpConfig(batch_lines=500, batch_bytes=64 * 1024)
    pump = LogPump(sink, spool_dir=tmp_path, config=cfg)
    code = "for i in range(20000): print(i)\nfor i in range(50): print('y' * 30000)"
    w = Writer(code, pump)
    await w.wait()
    assert await pump.drain(60)
    assert len(got.records) == 20050
    assert max(n for n, _ in sizes) <= 500
    assert max(b for _, b in sizes) <= 64 * 1024 + 30000
    await pump.aclose()


async def test_small_output_is_delivered_after_linger_without_eof(tmp_path: Path) -> None:
    got = Collector()
    pump = LogPump(got, spool_dir=tmp_path, config=LogPumpConfig(linger_s=0.02))
    w = Writer("import sys, time\nprint('hello', flush=True)\ntime.sleep(30)", pump)
    try:
        await _until(lambda: got.lines() == ["hello"])
        assert w.proc.poll() is None
    finally:
        w.proc.kill()
        await w.wait()
    assert await pump.drain(10)
    await pump.aclose()


async def test_eof_wait_gives_up_on_a_pipe_nobody_writes_to(tmp_path: Path) -> None:
    got = Collector()
    pump = LogPump(got, spool_dir=tmp_path, config=LogPumpConfig(eof_idle_timeout_s=0.1))
    r, w = os.pipe()
    pump.attach("stdout", r)
    os.write(w, b"partial line without newline")
    try:
        assert await pump.wait_eof() is False
    finally:
        os.close(w)
    assert pump.stats.forced_eof
    assert await pump.drain(10)
    assert got.lines() == ["partial line without newline"]
    await pump.aclose()


async def _pump_through(sink_fail_for: float, slow_s: float, tmp_path: Path) -> tuple[LogPump, list[LogRecord]]:
    """Feed 200k lines through a pump with spool_when_slow=False and a slow/failing sink."""
    import time

    got: list[LogRecord] = []
    t0 = time.monotonic()

    async def sink(batch: list[LogRecord]) -> None:
        if time.monotonic() - t0 < sink_fail_for:
            raise RuntimeError("coordinator down")
        await asyncio.sleep(slow_s)
        got.extend(batch)

    cfg = LogPumpConfig(batch_lines=5000, memory_bytes=1 << 20, spool_when_slow=False, blocked_after_s=0.2)
    pump = LogPump(Retrying(sink, Backoff(0.05, 0.1)), spool_dir=tmp_path / "spool", config=cfg)
    r, w = os.pipe()
    pump.attach("stdout", r)
    data = b"".join(b"line %d\n" % i for i in range(200_000))

    def write() -> None:
        with os.fdopen(w, "wb") as f:
            f.write(data)

    writer = asyncio.get_running_loop().run_in_executor(None, write)
    await writer
    await pump.wait_eof(total_timeout=60)
    await pump.drain(60)
    await pump.aclose()
    return pump, got


def test_slow_sink_pauses_reading_instead_of_spooling(tmp_path: Path) -> None:
    pump, got = asyncio.run(_pump_through(0.0, 0.002, tmp_path))
    assert [x["line"] for x in got] == [f"line {i}" for i in range(200_000)]
    assert pump.stats.spooled_batches == 0 and pump.stats.pauses > 0


def test_failing_sink_spools_and_loses_nothing(tmp_path: Path) -> None:
    pump, got = asyncio.run(_pump_through(0.5, 0.0, tmp_path))
    assert [x["line"] for x in got] == [f"line {i}" for i in range(200_000)]
    assert pump.stats.spooled_batches > 0
