"""Identifiers and credential tokens."""

from __future__ import annotations

import hashlib
import secrets
import uuid

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def new_uuid() -> str:
    return str(uuid.uuid4())


def short_code(n: int = 8) -> str:
    """*n* random characters of ``0-9a-z``, uniformly (one ``urandom`` call, not one per character:
    graph and fill ids are made on the order path)."""
    out: list[str] = []
    while len(out) < n:
        # 252 = 7 × 36: bytes from 252 up would bias the modulo, so they are dropped.
        out.extend(_ALPHABET[b % 36] for b in secrets.token_bytes(n + 4) if b < 252)
    return "".join(out[:n])


def new_token(prefix: str, n: int = 40) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(n))


def token_hash(token: str) -> str:
    # Keys are 238-bit random strings: a plain SHA-256 is a sufficient hash
    # (no dictionary to defend against), and it keeps auth lookups O(1).
    return hashlib.sha256(token.encode()).hexdigest()


def key_prefix(mode: str) -> str:
    return f"seq_{mode}_"
