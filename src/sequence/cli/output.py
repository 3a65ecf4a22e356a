"""Output helpers: Rich for people, plain JSON for ``--json`` and pipes.

Values that come from the platform's data (a strategy's env, manifest, exit
reason, table cells) are never interpolated into Rich markup: they are printed
as :func:`literal` Text (``Text.assemble`` for a line mixing them with styled
words) or through :func:`table`, so markup in them is shown as it is, and
their control characters are escaped (:mod:`sequence.cli.terminal`).
``--json`` output is ``json.dumps`` with ``ensure_ascii``, which escapes every
control character itself.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from sequence.cli.errors import CliError
from sequence.cli.terminal import escape_controls
from sequence.shown import escape_controls_keep_lines

# emoji=False: ":name:" in a value is text, not an emoji code.
err_console = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)
console = Console(highlight=False, soft_wrap=True, emoji=False)


def literal(value: Any, style: str = "", *, lines: bool = False) -> Text:
    """*value* as Text that is shown as it is, never obeyed (no markup, controls escaped).
    With *lines*, its newlines stay newlines (messages of several lines)."""
    text = str(value)
    if lines:
        return Text(escape_controls_keep_lines(text), style=style)
    return Text(escape_controls(text), style=style)


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")
    sys.stdout.flush()


def render_error(exc: CliError) -> NoReturn:
    """The one place a :class:`CliError` becomes output: ``error: …`` (and ``hint: …``)
    on stderr, shown literally, and the exit code."""
    # Messages quote TOML sections like [hosted.env] and values: never let Rich read them as markup.
    err_console.print(Text.assemble(("error:", "bold red"), " ", literal(exc.message, lines=True)), soft_wrap=True)
    if exc.hint:
        err_console.print(Text.assemble(("hint:", "dim"), " ", literal(exc.hint, lines=True)), soft_wrap=True)
    raise typer.Exit(exc.code)


def fail(message: str, hint: str | None = None, code: int = 1) -> NoReturn:
    """Stop the command here: ``error: message`` (and the hint) on stderr, exit ``code``."""
    render_error(CliError(message, hint, code))


STATUS_STYLES = {"running": "green", "queued": "yellow", "stopping": "yellow", "claimed": "yellow",
                 "starting": "yellow", "failed": "red", "lost": "red", "stopped": "dim", "exited": "dim"}


def status_text(status: Any) -> Text:
    """A status word, coloured (the colour is dropped by NO_COLOR and pipes)."""
    return literal(status, STATUS_STYLES.get(str(status), ""))


def short_id(value: Any, n: int = 8) -> str:
    """The head of a UUID-ish id: enough to tell rows apart in a table (commands take names)."""
    text = "" if value is None else str(value)
    return text[:n]


def when(iso: Any) -> str:
    """An ISO-8601 UTC time as ``2026-11-30 06:53:08`` (seconds, no zone noise)."""
    if not iso:
        return ""
    text = str(iso).replace("T", " ")
    return text[:19]


def exit_words(last_exit: dict[str, Any] | None) -> str:
    """A run's end in words: ``exited 0``, ``exited 3``, ``killed by SIGKILL``, ``out of memory`` …"""
    if not last_exit:
        return ""
    reason = last_exit.get("reason")
    if last_exit.get("oom"):
        return "out of memory"
    if reason:
        return str(reason).removeprefix("runner lost: ")[:60]
    if last_exit.get("signal") is not None:
        return f"killed by signal {last_exit['signal']}"
    if last_exit.get("code") is not None:
        return f"exited {last_exit['code']}"
    return ""


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None, *,
          keep: Sequence[str] = (), drop: Sequence[str] = ()) -> None:
    """Rows of values, shown literally, fitted to the terminal.

    Columns in *keep* are never cut (names). When the rows do not fit, the
    columns in *drop* go first, in that order (ids, hashes: the commands take
    names), then the others are folded."""
    grid: list[list[Any]] = [list(r) for r in rows]
    cols = list(columns)

    def width(i: int) -> int:
        cells = [len(v.plain) if isinstance(v, Text) else len(str("" if v is None else v)) for v in (r[i] for r in grid)]
        return max([len(cols[i]), *cells])

    for name in drop:
        if sum(width(i) for i in range(len(cols))) + 3 * (len(cols) - 1) <= console.width:
            break
        if name in cols:
            i = cols.index(name)
            cols.pop(i)
            for r in grid:
                r.pop(i)
    t = Table(title=title, show_edge=False, header_style="bold", pad_edge=False)
    for i, c in enumerate(cols):
        if c in keep:
            t.add_column(c, no_wrap=True, min_width=width(i))
        else:
            t.add_column(c, overflow="fold")
    for r in grid:
        t.add_row(*[v if isinstance(v, Text) else literal("" if v is None else v) for v in r])
    console.print(t)


def confirm_or_refuse(question: str, yes: bool) -> None:
    """Ask *question* on a terminal (no: "nothing changed", exit 1). Without a terminal to ask
    on, refuse unless *yes*: a script or a pipe deleted at once, never asked."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise CliError(f"{question.rstrip('?')}: not without --yes (there is no terminal to ask on)",
                       "add --yes (-y) to do it without asking")
    if not typer.confirm(question):
        err_console.print("nothing changed")
        raise typer.Exit(1)
