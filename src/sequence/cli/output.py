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

from sequence.cli.terminal import escape_controls

# emoji=False: ":name:" in a value is text, not an emoji code.
err_console = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)
console = Console(highlight=False, soft_wrap=True, emoji=False)


def literal(value: Any, style: str = "", *, lines: bool = False) -> Text:
    """*value* as Text that is shown as it is, never obeyed (no markup, controls escaped).
    With *lines*, its newlines stay newlines (messages of several lines)."""
    text = str(value)
    if lines:
        return Text("\n".join(escape_controls(part) for part in text.split("\n")), style=style)
    return Text(escape_controls(text), style=style)


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")
    sys.stdout.flush()


def fail(message: str, hint: str | None = None, code: int = 1) -> NoReturn:
    # Messages quote TOML sections like [hosted.env] and values: never let Rich read them as markup.
    err_console.print(Text.assemble(("error:", "bold red"), " ", literal(message, lines=True)), soft_wrap=True)
    if hint:
        err_console.print(Text.assemble(("hint:", "dim"), " ", literal(hint, lines=True)), soft_wrap=True)
    raise typer.Exit(code)


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> None:
    t = Table(title=title, show_edge=False, header_style="bold")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*[literal("" if v is None else v) for v in r])
    console.print(t)
