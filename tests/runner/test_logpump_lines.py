"""Line splitting under any chunking (property-based), through a real pipe."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sequence.runner import LogPump, LogPumpConfig, LogRecord
from tests.runner.helpers import Collector


def _run_chunks(chunks: list[bytes], read_chunk: int, max_line: int) -> list[LogRecord]:
    async def main() -> list[LogRecord]:
        got = Collector()
        cfg = LogPumpConfig(read_chunk=read_chunk, max_line_bytes=max_line, linger_s=0.001)
        pump = LogPump(got, spool_dir=Path("/nonexistent-never-spooled"), config=cfg)
        r, w = os.pipe()
        pump.attach("stdout", r)

        def feed() -> None:
            for c in chunks:
                os.write(w, c)
            os.close(w)

        t = threading.Thread(target=feed)
        t.start()
        await pump.wait_eof(idle_timeout=30)
        assert await pump.drain(30)
        await pump.aclose()
        t.join()
        return got.records

    return asyncio.run(main())


_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=200)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pieces=st.lists(st.tuples(_text, st.sampled_from(["\n", "\r\n", "", "\r"])), max_size=30),
    cuts=st.lists(st.integers(min_value=1, max_value=50), max_size=20),
    read_chunk=st.integers(min_value=1, max_value=64),
    max_line=st.integers(min_value=16, max_value=64),
)
def test_any_chunking_reconstructs_the_same_lines(
    pieces: list[tuple[str, str]], cuts: list[int], read_chunk: int, max_line: int
) -> None:
    data = "".join(a + b for a, b in pieces).encode()
    chunks, pos = [], 0
    for c in cuts:
        if pos < len(data):
            chunks.append(data[pos : pos + c])
            pos += c
    chunks.append(data[pos:])
    records = _run_chunks([c for c in chunks if c], read_chunk, max_line)

    expected = data.replace(b"\r\n", b"\n").split(b"\n")
    if expected and expected[-1] == b"":
        expected.pop()
    lines: list[str] = []
    current = ""
    for rec in records:
        assert len(rec["line"].encode()) <= max_line
        current += rec["line"]
        if not rec.get("partial"):
            lines.append(current)
            current = ""
    assert current == ""
    assert lines == [e.decode() for e in expected]
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))


def test_invalid_utf8_split_across_reads_never_crashes() -> None:
    chunks = [b"\xff\xfe", b"abc\xe2", b"\x82\xac\n\x80", b"\n\xc3", b"\xa9"]
    records = _run_chunks(chunks, read_chunk=3, max_line=16)
    assert [r["line"] for r in records] == ["\ufffd\ufffdabc€", "\ufffd", "é"]


def test_a_secret_is_masked_in_a_last_line_without_a_newline_and_in_the_end_of_a_long_line() -> None:
    """The stream's last line with no newline, and the rest of a line longer than the line
    limit after its cut parts, were emitted without masking: a strategy ending with
    ``sys.stdout.write(token)`` stored its secret in plain text."""
    secret = "abcdefghij-secret"

    async def main() -> list[LogRecord]:
        got = Collector()
        cfg = LogPumpConfig(max_line_bytes=64, linger_s=0.001)
        pump = LogPump(got, spool_dir=Path("/nonexistent-never-spooled"), config=cfg, mask=[secret])
        r, w = os.pipe()
        pump.attach("stdout", r)
        os.write(w, ("x" * 100 + " " + secret + "\n").encode())  # cut at 64: the rest holds it
        os.write(w, ("D " + secret).encode())  # no newline, then EOF
        os.close(w)
        await pump.wait_eof(idle_timeout=30)
        assert await pump.drain(30)
        await pump.aclose()
        return got.records

    lines = [rec["line"] for rec in asyncio.run(main())]
    assert lines[-1] == "D ***" and lines[-2].endswith(" ***"), lines
    assert not [x for x in lines if secret in x]
