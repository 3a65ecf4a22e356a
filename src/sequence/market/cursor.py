"""List cursors: the one text encoding, and the market listing's signed offsets.

Two schemes share :func:`b64url` / :func:`unb64url` (base64url, no padding):

* **keyset** cursors (:mod:`sequence.api.cursor`) page through store-backed
  lists — strategies, runs, graphs, fills — by the last row's sort key; the
  values are checked on the way back in;
* **signed offset** cursors (here) page through ``GET /v1/markets``, a list
  held in memory and sorted by values that move (volume, liquidity), where no
  keyset exists: ``base64url(version | offset | query fingerprint | checksum)``.
  The checksum is a keyed BLAKE2b over the rest, so an edited cursor is
  rejected, and the fingerprint ties a cursor to its query's filters, so a
  cursor from one listing cannot page through another. The key is a constant,
  not a secret: cursors are not credentials (an offset reveals nothing), and
  a constant key lets every coordinator replica accept every other replica's
  cursors.
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


def b64url(raw: bytes) -> str:
    """``raw`` as unpadded base64url text."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    """The bytes of unpadded base64url text; raises ``ValueError`` (``binascii.Error``) if it is not."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def fingerprint(parts: Iterable[object]) -> bytes:
    text = "\x1f".join("" if p is None else str(p) for p in parts)
    return hashlib.blake2b(text.encode(), digest_size=8).digest()


def _mac(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, key=_KEY, digest_size=_MAC_SIZE).digest()


def encode_cursor(offset: int, query: bytes) -> str:
    payload = _LAYOUT.pack(_VERSION, offset, query)
    return b64url(payload + _mac(payload))


def decode_cursor(cursor: str, query: bytes) -> int:
    """The offset inside ``cursor``; :class:`BadCursor` unless we issued it for ``query``."""
    try:
        raw = unb64url(cursor)
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
