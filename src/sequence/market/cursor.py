"""Opaque list cursors: an offset bound to the query that produced it.

``base64url(version | offset | query fingerprint | checksum)``. The checksum
is a keyed BLAKE2b over the rest, so an edited cursor is rejected, and the
fingerprint ties a cursor to its query's filters, so a cursor from one listing
cannot page through another. The key is a constant, not a secret: cursors are
not credentials (an offset reveals nothing), and a constant key lets every
coordinator replica accept every other replica's cursors.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from collections.abc import Iterable

from .errors import BadCursor

_KEY = b"sequence.market.cursor.v1"
_VERSION = 1
_LAYOUT = struct.Struct(">BI8s")
_MAC_SIZE = 8


def fingerprint(parts: Iterable[object]) -> bytes:
    text = "\x1f".join("" if p is None else str(p) for p in parts)
    return hashlib.blake2b(text.encode(), digest_size=8).digest()


def _mac(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, key=_KEY, digest_size=_MAC_SIZE).digest()


def encode_cursor(offset: int, query: bytes) -> str:
    payload = _LAYOUT.pack(_VERSION, offset, query)
    return base64.urlsafe_b64encode(payload + _mac(payload)).rstrip(b"=").decode()


def decode_cursor(cursor: str, query: bytes) -> int:
    """The offset inside ``cursor``; :class:`BadCursor` unless we issued it for ``query``."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError) as exc:
        raise BadCursor("cursor is not valid base64") from exc
    if len(raw) != _LAYOUT.size + _MAC_SIZE:
        raise BadCursor("cursor has the wrong length")
    payload, mac = raw[: _LAYOUT.size], raw[_LAYOUT.size :]
    if not hmac.compare_digest(mac, _mac(payload)):
        raise BadCursor("cursor checksum does not match (was it edited?)")
    version, offset, fp = _LAYOUT.unpack(payload)
    if version != _VERSION:
        raise BadCursor("cursor is from an unsupported version")
    if not hmac.compare_digest(fp, query):
        raise BadCursor("cursor belongs to a different query")
    return int(offset)
