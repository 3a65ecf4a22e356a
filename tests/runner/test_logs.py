"""Log capture end to end through the sandbox: the strategy's bytes → records."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sequence.runner import LogPumpConfig, LogRecord, Sandbox, SandboxConfig, replay_spool
from tests.runner.helpers import Collector, run_code, spec_for

pytestmark = pytest.mark.anyio


def _assert_seq_contiguous(records: list) -> None:  # type: ignore[type-arg]
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))


async def test_last_line_without_newline_is_captured(sandbox: Sandbox) -> None:
    r = await run_code(sandbox, "import sys\nsys.stdout.write('first\\nno newline at the end')")
    assert r.stdout == ["first", "no newline at the end"]


async def test_one_mib_line_is_split_into_partial_records(sandbox: Sandbox) -> None:
    r = await run_code(sandbox, "print('é' * (512 * 1024))\nprint('after')")
    recs = r.logs.records
    big = [x for x in recs if x["line"] != "after"]
    assert len(big) >= 16
    assert all(x.get("partial") is True for x in big[:-1]) and "partial" not in big[-1]
    assert all(len(x["line"].encode()) <= 64 * 1024 for x in big)
    assert "".join(x["line"] for x in big) == "é" * (512 * 1024), "cut on character boundaries"
    assert recs[-1]["line"] == "after" and "partial" not in recs[-1]
    _assert_seq_contiguous(recs)


async def test_invalid_utf8_is_kept_with_replacement(sandbox: Sandbox) -> None:
    code = "import sys\nsys.stdout.buffer.write(b'ok \\xff\\xfe bad \\xe2\\x82 end\\n' + 'café\\n'.encode())"
    r = await run_code(sandbox, code)
    assert r.stdout == ["ok \ufffd\ufffd bad \ufffd end", "café"]
    assert r.info.code == 0


async def test_crlf_is_normalised_and_lone_cr_kept(sandbox: Sandbox) -> None:
    code = (
        "import sys\nsys.stdout.buffer.write(b'a\\r\\nb\\r\\n\\r\\nprogress 10%\\rprogress 20%\\n')"
    )
    r = await run_code(sandbox, code)
    assert r.stdout == ["a", "b", "", "progress 10%\rprogress 20%"]


async def test_interleaved_stdout_and_stderr_keep_order_per_stream(sandbox: Sandbox) -> None:
    code = """
import sys
for i in range(20000):
    stream = sys.stdout if i % 3 else sys.stderr
    stream.write(f"{i}\\n")
"""
    r = await run_code(sandbox, code)
    recs = r.logs.records
    _assert_seq_contiguous(recs)
    out = [int(x) for x in r.stdout]
    err = [int(x) for x in r.stderr]
    assert out == [i for i in range(20000) if i % 3]
    assert err == [i for i in range(20000) if not i % 3]
    assert {x["stream"] for x in recs} == {"stdout", "stderr"}


async def test_a_flood_of_lines_arrives_exactly_once_in_order(sandbox: Sandbox) -> None:
    code = "import sys\nw = sys.stdout.write\nfor i in range(200000):\n    w(f'line {i}\\n')"
    r = await run_code(sandbox, code)
    assert r.stdout == [f"line {i}" for i in range(200000)]
    _assert_seq_contiguous(r.logs.records)
    assert r.logs.batches >= 200, "batched (1000 lines max per batch)"


async def test_output_is_streamed_while_the_strategy_runs(sandbox: Sandbox) -> None:
    from sequence.runner import RunHandle
    from tests.runner.helpers import wait_for_line

    async def act(handle: RunHandle, logs: Collector) -> None:
        await wait_for_line(logs, "tick 3")
        assert handle.running, "lines reach the sink before the process exits"
        await handle.stop(5.0)

    code = "import time\nfor i in range(10**6):\n    print(f'tick {i}')\n    time.sleep(0.01)"
    await run_code(sandbox, code, during=act)


async def test_a_dead_sink_does_not_hang_wait_and_close_keeps_the_logs_for_replay(
    tmp_path: Path,
) -> None:
    # Bounded spool + a sink that never answers: the strategy is slowed while
    # it runs, wait() still returns at exit, close() keeps the spool on disk.
    logs_cfg = LogPumpConfig(memory_bytes=64 * 1024, spool_max_bytes=256 * 1024)
    sb = Sandbox(SandboxConfig(data_dir=tmp_path, bubblewrap=False, cgroups=False, logs=logs_cfg))

    async def dead(batch: list[LogRecord]) -> None:
        await asyncio.Event().wait()

    n = 100_000
    spec = spec_for(f"for i in range({n}): print(i)")
    handle = await sb.start(spec, dead)
    info = await asyncio.wait_for(handle.wait(), 120)
    assert info.code == 0
    assert not await handle.flush_logs(0.1)
    left = await handle.close()
    assert left, "undelivered logs stay on disk"
    assert sb.pending_spools()[spec.run_id][0] == left[0].parent
    got = Collector()
    await replay_spool(left[0].parent, got)
    assert [int(x) for x in got.lines("stdout")] == list(range(n))
    # (an unsandboxed run's first line says so, on the system stream)
    assert [r["seq"] for r in got.records] == list(range(1, len(got.records) + 1))
