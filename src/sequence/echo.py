"""Echoing what a caller sent inside an error message: its ``repr``, clipped.

A value a client sent can be long, contain controls, or be a secret pasted in
the wrong field; ``repr`` shows controls escaped and the clip bounds the size.
"""

from __future__ import annotations


def shown(value: object, limit: int = 64) -> str:
    """``repr(value)`` clipped to ``limit`` characters, for echoing a caller's input back in a message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
