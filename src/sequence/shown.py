"""Text a strategy decides, made safe to show: every character that could control a
terminal or reorder what a reader sees written as a visible escape.

Used by the CLI on a terminal (``sequence.cli.terminal``: what it escapes and why) and
by the dashboard's pages (the Jinja filter ``shown``; its script has the same rule for
what it receives live, ``shown()`` in ``dashboard.js``): a log line, an exit reason or
an env value with ``\u202e`` in it once read backwards in the browser ("Trojan Source").
"""

from __future__ import annotations

import re

_ESCAPED = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r"}


def _escape_one(m: re.Match[str]) -> str:
    ch = m.group()
    if ch in _NAMED:
        return _NAMED[ch]
    cp = ord(ch)
    return f"\\x{cp:02x}" if cp < 0x100 else f"\\u{cp:04x}"


def escape_controls(text: str) -> str:
    """*text* with every character that could control a terminal (or reorder
    what it shows) written as a visible escape; tab is kept."""
    if text.isprintable():  # the common case, in C: every escaped character is non-printable
        return text
    return _ESCAPED.sub(_escape_one, text)


def escape_controls_keep_lines(text: str) -> str:
    """:func:`escape_controls` on each line of *text*; its newlines stay newlines (a message of
    several lines, pretty-printed JSON)."""
    return "\n".join(escape_controls(part) for part in text.split("\n"))
