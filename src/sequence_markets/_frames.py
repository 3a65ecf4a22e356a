"""RFC 6455 framing, sans I/O: bytes in, frames and messages out.

``FrameParser`` accepts bytes in any chunking (a frame may arrive split over
many reads, or many frames in one), so a read timeout never loses data.
"""

from __future__ import annotations

import struct
from typing import List, NamedTuple, Optional, Tuple

from ._exceptions import StreamError

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

DATA_OPCODES = frozenset({OP_CONTINUATION, OP_TEXT, OP_BINARY})
CONTROL_OPCODES = frozenset({OP_CLOSE, OP_PING, OP_PONG})

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_NO_STATUS = 1005
CLOSE_ABNORMAL = 1006
CLOSE_INVALID_DATA = 1007
CLOSE_TOO_BIG = 1009

# Codes a peer may put in a close frame (RFC 6455 §7.4).
_SENDABLE_CODES = frozenset(
    {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
)

_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")


class Frame(NamedTuple):
    fin: bool
    opcode: int
    payload: bytes


def protocol_error(message: str, close_code: int = CLOSE_PROTOCOL_ERROR) -> StreamError:
    return StreamError(f"WebSocket protocol error: {message}", close_code=close_code)


def apply_mask(data: bytes, key: bytes) -> bytes:
    """XOR ``data`` with the 4-byte ``key`` repeated (masking is symmetric)."""
    length = len(data)
    if not length:
        return b""
    repeated = (key * (length // 4 + 1))[:length]
    return (int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")).to_bytes(length, "big")


def encode_frame(
    opcode: int, payload: bytes, *, mask_key: Optional[bytes], fin: bool = True
) -> bytes:
    """One frame. Clients must pass a fresh random 4-byte ``mask_key``."""
    length = len(payload)
    head = bytearray([(0x80 if fin else 0) | opcode])
    mask_bit = 0x80 if mask_key is not None else 0
    if length < 126:
        head.append(mask_bit | length)
    elif length < 1 << 16:
        head.append(mask_bit | 126)
        head += _U16.pack(length)
    else:
        head.append(mask_bit | 127)
        head += _U64.pack(length)
    if mask_key is None:
        return bytes(head) + payload
    if len(mask_key) != 4:
        raise ValueError("mask_key must be 4 bytes")
    return bytes(head) + mask_key + apply_mask(payload, mask_key)


def encode_close_payload(code: Optional[int], reason: str = "") -> bytes:
    if code is None:
        return b""
    data = _U16.pack(code) + reason.encode("utf-8")
    if len(data) > 125:
        raise ValueError("close reason too long")
    return data


def parse_close_payload(payload: bytes) -> Tuple[int, str]:
    """``(code, reason)`` of a received close frame; 1005 when it has no code."""
    if not payload:
        return CLOSE_NO_STATUS, ""
    if len(payload) == 1:
        raise protocol_error("close frame with a 1-byte payload")
    (code,) = _U16.unpack_from(payload)
    if code not in _SENDABLE_CODES and not 3000 <= code <= 4999:
        raise protocol_error(f"invalid close code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise protocol_error("close reason is not UTF-8", CLOSE_INVALID_DATA) from None
    return code, reason


class FrameParser:
    """Incremental frame decoder for frames sent by a server (unmasked)."""

    def __init__(self, *, max_frame_size: int, expect_masked: bool = False) -> None:
        self._buffer = bytearray()
        self._pos = 0
        self._max = max_frame_size
        self._expect_masked = expect_masked

    def feed(self, data: bytes) -> None:
        if self._pos and self._pos >= len(self._buffer) // 2:
            del self._buffer[: self._pos]
            self._pos = 0
        self._buffer += data

    @property
    def buffered(self) -> int:
        return len(self._buffer) - self._pos

    def next_frame(self) -> Optional[Frame]:
        """The next complete frame, or ``None`` until more bytes are fed."""
        buf, pos = self._buffer, self._pos
        available = len(buf) - pos
        if available < 2:
            return None
        first, second = buf[pos], buf[pos + 1]
        fin = bool(first & 0x80)
        opcode = first & 0x0F
        if first & 0x70:
            raise protocol_error("reserved bits set (no extension was negotiated)")
        if opcode not in DATA_OPCODES and opcode not in CONTROL_OPCODES:
            raise protocol_error(f"unknown opcode {opcode:#x}")
        masked = bool(second & 0x80)
        if masked != self._expect_masked:
            raise protocol_error("masked frame from the server" if masked else "unmasked frame")
        length = second & 0x7F
        header = 2
        if length == 126:
            if available < 4:
                return None
            (length,) = _U16.unpack_from(buf, pos + 2)
            header = 4
        elif length == 127:
            if available < 10:
                return None
            (length,) = _U64.unpack_from(buf, pos + 2)
            if length >> 63:
                raise protocol_error("64-bit length with the top bit set")
            header = 10
        if opcode in CONTROL_OPCODES and (length > 125 or not fin):
            raise protocol_error("control frame fragmented or longer than 125 bytes")
        if length > self._max:
            raise protocol_error(f"frame of {length} bytes exceeds the limit", CLOSE_TOO_BIG)
        key = b""
        if masked:
            if available < header + 4:
                return None
            key = bytes(buf[pos + header : pos + header + 4])
            header += 4
        end = pos + header + length
        if len(buf) < end:
            return None
        payload = bytes(buf[pos + header : end])
        self._pos = end
        if masked:
            payload = apply_mask(payload, key)
        return Frame(fin, opcode, payload)


class MessageAssembler:
    """Joins a data frame and its continuation frames into one message."""

    def __init__(self, *, max_message_size: int) -> None:
        self._max = max_message_size
        self._opcode: Optional[int] = None
        self._parts: List[bytes] = []
        self._size = 0

    def push(self, frame: Frame) -> Optional[Tuple[int, bytes]]:
        """``(opcode, payload)`` once a message is complete, else ``None``."""
        if frame.opcode == OP_CONTINUATION:
            if self._opcode is None:
                raise protocol_error("continuation frame without a message to continue")
        elif self._opcode is not None:
            raise protocol_error("new data frame before the previous message ended")
        else:
            if frame.fin:
                self._check_size(len(frame.payload))
                return frame.opcode, frame.payload
            self._opcode = frame.opcode
        self._size += len(frame.payload)
        self._check_size(self._size)
        self._parts.append(frame.payload)
        if not frame.fin:
            return None
        opcode, payload = self._opcode, b"".join(self._parts)
        assert opcode is not None
        self._opcode, self._parts, self._size = None, [], 0
        return opcode, payload

    def _check_size(self, size: int) -> None:
        if size > self._max:
            raise protocol_error(f"message of {size}+ bytes exceeds the limit", CLOSE_TOO_BIG)
