"""Unit: how strategy-controlled text is rendered for a terminal (sequence.cli.terminal, output)."""

from __future__ import annotations

import io
import json

import pytest
import typer
from rich.console import Console
from rich.text import Text

from sequence.cli import output
from sequence.cli.strategy import _dropped_notice
from sequence.cli.terminal import DIM, UNDIM, LogWriter, escape_controls


@pytest.mark.parametrize(("text", "shown"), [
    ("plain text, nothing to do", "plain text, nothing to do"),
    ("title \x1b]0;pwned\x07 end", "title \\x1b]0;pwned\\x07 end"),
    ("\x1b[2J\x1b[H", "\\x1b[2J\\x1b[H"),
    ("shown\rhidden", "shown\\rhidden"),
    ("two\nlines", "two\\nlines"),
    ("secret\x08\x08\x08\x08\x08\x08public", "secret" + "\\x08" * 6 + "public"),
    ("nul \x00 del \x7f", "nul \\x00 del \\x7f"),
    ("c1 csi \x9b2J nel \x85", "c1 csi \\x9b2J nel \\x85"),
    ("bidi \u202eevil\u202c \u2066x\u2069 \u200f \u061c", "bidi \\u202eevil\\u202c \\u2066x\\u2069 \\u200f \\u061c"),
    ("lone \udc80 surrogate", "lone \\udc80 surrogate"),
    ("tab\tkept", "tab\tkept"),
    ("unicode ✓ é 日本 👨\u200d👩\u200d👧 nbsp\u00a0", "unicode ✓ é 日本 👨\u200d👩\u200d👧 nbsp\u00a0"),
    ("[red]x[/red] \\x1b literal", "[red]x[/red] \\x1b literal"),
])
def test_escape_controls_shows_every_terminal_control_and_keeps_text(text: str, shown: str) -> None:
    assert escape_controls(text) == shown


def test_no_control_character_survives_escaping() -> None:
    everything = "".join(chr(i) for i in range(0x2100)) + "\ud800\udfff"
    out = escape_controls(everything)
    bad = [c for c in out if (ord(c) < 0x20 and c != "\t") or 0x7f <= ord(c) <= 0x9f
           or c in "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
           or 0xd800 <= ord(c) <= 0xdfff]
    assert bad == []


RECS = [{"seq": 1, "ts": 1.0, "stream": "stdout", "line": "a\x1b[2Jb"},
        {"seq": 2, "ts": 2.0, "stream": "system", "line": "exit \rx"}]


def _written(writer_kw: dict[str, bool], raw_json: bool = False, notes: io.BytesIO | None = None) -> bytes:
    buf = io.BytesIO()
    w = LogWriter(buf, notes=notes, **writer_kw)
    for rec in RECS:
        w.write(rec, json.dumps(rec, ensure_ascii=False) if raw_json else None)
    w.flush()
    return buf.getvalue()


def test_log_writer_escapes_for_a_terminal_and_marks_platform_lines() -> None:
    assert _written({"escape": True}) == b"a\\x1b[2Jb\n[sequence] exit \\rx\n"
    dimmed = _written({"escape": True, "dim": True})
    assert dimmed == f"a\\x1b[2Jb\n{DIM}[sequence] exit \\rx{UNDIM}\n".encode()


def test_log_writer_raw_is_exact_and_sends_platform_lines_to_notes() -> None:
    notes = io.BytesIO()
    assert _written({"escape": False, "dim": True}, notes=notes) == b"a\x1b[2Jb\n"  # dim needs a terminal
    assert notes.getvalue() == b"[sequence] exit \rx\n"
    notes = io.BytesIO()
    assert _written({"escape": False, "notes_escape": True}, notes=notes) == b"a\x1b[2Jb\n"
    assert notes.getvalue() == b"[sequence] exit \\rx\n"
    assert _written({"escape": False}) == b"a\x1b[2Jb\nexit \rx\n"  # no notes stream: all on one


def test_log_writer_json_keeps_every_record_on_stdout() -> None:
    notes = io.BytesIO()
    assert len(_written({"escape": False, "as_json": True}, notes=notes).splitlines()) == 2
    assert notes.getvalue() == b""


def test_log_writer_json_keeps_the_servers_line_when_raw_and_escapes_on_a_terminal() -> None:
    raw = _written({"escape": False, "as_json": True}, raw_json=True)
    assert raw.splitlines() == [json.dumps(r, ensure_ascii=False).encode() for r in RECS]
    tty = _written({"escape": True, "as_json": True}, raw_json=True)
    assert b"\x1b" not in tty and b"\r" not in tty
    assert [json.loads(x) for x in tty.splitlines()] == RECS


def test_literal_renders_markup_and_controls_as_they_are() -> None:
    buf = io.StringIO()
    con = Console(file=buf, force_terminal=True, color_system=None, highlight=False, emoji=False, width=200)
    hostile = "[/bold] [red]x[/red] :smile: \x1b]0;t\x07 trailing\\"
    con.print(Text.assemble("v ", output.literal(hostile, "bold")))
    assert buf.getvalue() == "v [/bold] [red]x[/red] :smile: \\x1b]0;t\\x07 trailing\\\n"
    assert output.literal("a\nb\x1b", lines=True).plain == "a\nb\\x1b"


def test_fail_shows_the_message_literally(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit):
        output.fail("bad [/bold] value \x1b[2J\nsecond line", "hint [red]x[/red]")
    err = capsys.readouterr().err
    assert err == "error: bad [/bold] value \\x1b[2J\nsecond line\nhint: hint [red]x[/red]\n"


def test_table_cells_are_literal(capsys: pytest.CaptureFixture[str]) -> None:
    output.table(["c"], [("[red]x[/red] [/bold] \x1b[2J",)])
    out = capsys.readouterr().out
    assert "[red]x[/red] [/bold] \\x1b[2J" in out and "\x1b" not in out


@pytest.mark.parametrize(("res", "said"), [
    ({"dropped_lines": 0}, ""),
    ({}, ""),
    ({"dropped_lines": True}, ""),
    ({"dropped_lines": 1}, "1 older line of this run was dropped by the log retention limit\n"),
    ({"dropped_lines": 1200}, "1200 older lines of this run were dropped by the log retention limit\n"),
])
def test_dropped_lines_notice_goes_to_stderr(res: dict[str, object], said: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    _dropped_notice(res)
    got = capsys.readouterr()
    assert got.out == "" and got.err == said


def test_runs_at_80_columns_keep_peak_rss_and_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """README and quickstart promise `strategy runs` shows peak RSS and CPU: at 80 columns only
    the log line count gives way, and a long exit reason folds instead of pushing them out."""
    from sequence.cli.strategy import runs_table

    buf = io.StringIO()
    monkeypatch.setattr(output, "console", Console(file=buf, width=80, color_system=None, highlight=False))
    run = {"run_id": "run_0123456789", "status": "stopped", "started_at": "2026-12-01T14:58:00.123Z",
           "claimed_at": None, "duration_s": 12.34, "peak_rss_bytes": 31_000_000, "cpu_seconds": 0.52,
           "log_lines": 1234}
    long_exit = {**run, "status": "failed", "exit": {"reason": "runner lost: lease expired while the coordinator "
                                                               "was away for longer than a lease"}}
    runs_table([{**run, "exit": {"code": 0}}, long_exit])
    out = buf.getvalue()
    assert all(len(line) <= 80 for line in out.splitlines()), out
    head = out.splitlines()[0]
    assert "peak rss" in head and "cpu s" in head and "lines" not in head, out
    assert "29.6 MB" in out and "0.52" in out and "exited 0" in out, out
