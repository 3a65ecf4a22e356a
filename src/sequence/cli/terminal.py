"""Strategy-controlled text on the operator's terminal: shown, never obeyed.

A strategy decides the bytes of its log lines, its env and manifest values and
(through its exit) parts of its exit reason.  Printed as they are, an escape
sequence retitles the window, clears the screen or moves the cursor, and a
lone ``\\r`` or a backspace overwrites what was printed before it.  On a
terminal the CLI therefore shows every such character escaped, the way
Python's ``repr()`` writes it (tab excepted):

* C0 controls except tab, DEL and the C1 controls (U+0080–U+009F): ``\\x1b``,
  ``\\r``, ``\\n``, ``\\x08``, ``\\x9b``, …;
* the bidirectional overrides, embeddings, isolates and marks that reorder
  what the eye reads ("Trojan Source"): ``\\u202e``, …;
* lone surrogates (a non-conforming server): ``\\udc80``.

Tab is kept.  Backslashes are not doubled, so the rendering is for reading,
not for parsing: ``--raw`` (or a pipe) gives the exact text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, BinaryIO

from sequence.shown import escape_controls

__all__ = ["DIM", "SYSTEM_PREFIX", "UNDIM", "LogWriter", "escape_controls"]

# SGR "faint" and its reset ("normal intensity"): the only escapes the CLI itself adds to log output.
DIM, UNDIM = "\x1b[2m", "\x1b[22m"
SYSTEM_PREFIX = "[sequence] "


class LogWriter:
    """Writes log records as lines of bytes.

    *escape* (stdout is a terminal and ``--raw`` was not given): each line
    through :func:`escape_controls`, platform lines (stream ``system``)
    prefixed ``[sequence]`` and, with *dim*, faint; ``--json`` records are
    re-encoded with ``ensure_ascii``.

    Otherwise the strategy's lines are written exactly as stored (the
    server's own NDJSON line when following with ``--json``), and its lines
    only: platform lines go to *notes* (stderr), prefixed ``[sequence]`` and
    escaped when *notes_escape* (stderr is a terminal) — so ``| jq`` and
    ``> file`` get exactly what the strategy printed.  With ``--json`` every
    record stays on stdout; its ``stream`` tells them apart.
    """

    def __init__(self, out: BinaryIO, *, escape: bool, dim: bool = False, as_json: bool = False,
                 notes: BinaryIO | None = None, notes_escape: bool = False) -> None:
        self.out = out
        self.escape = escape
        self.dim = dim and escape
        self.as_json = as_json
        self.notes = notes
        self.notes_escape = notes_escape

    def write(self, rec: Mapping[str, Any], raw_json: str | None = None) -> None:
        line = str(rec.get("line", ""))
        system = rec.get("stream") == "system"
        if self.as_json:
            text = raw_json if raw_json is not None and not self.escape else json.dumps(rec)
        elif self.escape:
            text = escape_controls(line)
            if system:
                text = f"{DIM}{SYSTEM_PREFIX}{text}{UNDIM}" if self.dim else SYSTEM_PREFIX + text
        elif system and self.notes is not None:
            self.out.flush()  # keep the order where both reach the same screen
            note = escape_controls(line) if self.notes_escape else line
            self.notes.write(_encode(SYSTEM_PREFIX + note))
            self.notes.flush()
            return
        else:
            text = line
        self.out.write(_encode(text))

    def flush(self) -> None:
        self.out.flush()


def _encode(text: str) -> bytes:
    # "replace": lone surrogates cannot be UTF-8 (the runner stores lines decoded with "replace").
    return text.encode("utf-8", "replace") + b"\n"
