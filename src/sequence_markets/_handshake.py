"""The WebSocket opening handshake (RFC 6455 §4), sans I/O."""

from __future__ import annotations

import base64
import hashlib
from typing import Dict, Mapping, NamedTuple

from ._exceptions import StreamError

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def new_key(nonce: bytes) -> str:
    """``Sec-WebSocket-Key`` from 16 random bytes."""
    if len(nonce) != 16:
        raise ValueError("the nonce must be 16 bytes")
    return base64.b64encode(nonce).decode("ascii")


def accept_for(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` a server must answer to ``key``."""
    digest = hashlib.sha1((key + _GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def build_request(host: str, target: str, key: str, headers: Mapping[str, str]) -> bytes:
    lines = [
        f"GET {target} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    for name, value in headers.items():
        if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
            raise ValueError(f"invalid header {name!r}")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class ResponseHead(NamedTuple):
    status: int
    reason: str
    headers: Dict[str, str]  # lower-case names


def parse_response_head(head: bytes) -> ResponseHead:
    """Parse the status line and headers (``head`` ends before the blank line)."""
    text = head.decode("latin-1")
    status_line, _, rest = text.partition("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise StreamError(f"handshake: malformed status line {status_line[:80]!r}")
    headers: Dict[str, str] = {}
    for line in rest.split("\r\n"):
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise StreamError(f"handshake: malformed header line {line[:80]!r}")
        name = name.strip().lower()
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return ResponseHead(int(parts[1]), parts[2] if len(parts) > 2 else "", headers)


def check_upgrade(head: ResponseHead, key: str) -> None:
    """Raise ``StreamError`` unless ``head`` accepts the upgrade for ``key``."""
    headers = head.headers
    if headers.get("upgrade", "").lower() != "websocket":
        raise StreamError("handshake: missing 'Upgrade: websocket'")
    connection = {token.strip().lower() for token in headers.get("connection", "").split(",")}
    if "upgrade" not in connection:
        raise StreamError("handshake: missing 'Connection: Upgrade'")
    if headers.get("sec-websocket-accept") != accept_for(key):
        raise StreamError("handshake: wrong Sec-WebSocket-Accept")
    if headers.get("sec-websocket-extensions"):
        raise StreamError("handshake: server chose an extension the client did not offer")
