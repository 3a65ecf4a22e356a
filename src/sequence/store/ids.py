"""Identifiers and credential tokens."""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
import uuid

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def new_uuid() -> str:
    return str(uuid.uuid4())


# Byte b -> the character b % 36; bytes from 252 up (252 = 7 × 36) would bias the modulo, so
# they are dropped (bytes.translate does both at C speed).
_TO_CHAR = bytes(ord(_ALPHABET[b % 36]) for b in range(256))
_BIASED = bytes(range(252, 256))

#: Random characters for :func:`short_code`, made from the OS's randomness 8 KiB at a time: a
#: read per id cost a system call on the order path (and any other thread could take the GIL
#: meanwhile); an id is then one slice of this string.
_chars = ""
_pos = 0
_pool_lock = threading.Lock()


def short_code(n: int = 8) -> str:
    """*n* random characters of ``0-9a-z``, uniformly."""
    global _chars, _pos
    with _pool_lock:
        end = _pos + n
        while end > len(_chars):
            _chars = _chars[_pos:] + secrets.token_bytes(8192).translate(_TO_CHAR, _BIASED).decode()
            _pos, end = 0, n
        out = _chars[_pos:end]
        _pos = end
    return out


def _forget_pool() -> None:  # a forked child must not hand out its parent's next ids
    global _chars, _pos
    _chars, _pos = "", 0


os.register_at_fork(after_in_child=_forget_pool)


def new_token(prefix: str, n: int = 40) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(n))


def token_hash(token: str) -> str:
    # Keys are 238-bit random strings: a plain SHA-256 is a sufficient hash
    # (no dictionary to defend against), and it keeps auth lookups O(1).
    return hashlib.sha256(token.encode()).hexdigest()


def key_prefix(mode: str) -> str:
    return f"seq_{mode}_"
