"""RFC 6455 framing and handshake, sans I/O."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sequence_markets import StreamError
from sequence_markets import _frames as f
from sequence_markets._handshake import (
    accept_for,
    build_request,
    check_upgrade,
    new_key,
    parse_response_head,
)
from sequence_markets._stream import decode_message


def _parse_all(data: bytes, chunk: int, *, masked: bool = False) -> list[f.Frame]:
    parser = f.FrameParser(max_frame_size=1 << 20, expect_masked=masked)
    frames = []
    for i in range(0, len(data), chunk):
        parser.feed(data[i : i + chunk])
        while (frame := parser.next_frame()) is not None:
            frames.append(frame)
    assert parser.buffered == 0
    return frames


@pytest.mark.parametrize(
    ("length", "header"),
    [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10), (70_000, 10)],
)
def test_length_encodings(length: int, header: int) -> None:
    frame = f.encode_frame(f.OP_TEXT, b"a" * length, mask_key=None)
    assert len(frame) == header + length
    masked = f.encode_frame(f.OP_TEXT, b"a" * length, mask_key=b"abcd")
    assert len(masked) == header + 4 + length
    assert masked[1] & 0x80


def test_masking_is_the_xor_of_the_rfc() -> None:
    # RFC 6455 §5.7: a masked "Hello" with key 37 fa 21 3d.
    frame = f.encode_frame(f.OP_TEXT, b"Hello", mask_key=bytes.fromhex("37fa213d"))
    assert frame == bytes.fromhex("818537fa213d7f9f4d5158")
    assert (
        f.apply_mask(f.apply_mask(b"Hello", b"\x01\x02\x03\x04"), b"\x01\x02\x03\x04") == b"Hello"
    )
    with pytest.raises(ValueError):
        f.encode_frame(f.OP_TEXT, b"x", mask_key=b"abc")


payloads = st.binary(max_size=70_000)
opcodes = st.sampled_from([f.OP_TEXT, f.OP_BINARY, f.OP_CONTINUATION])


@given(
    frames=st.lists(st.tuples(opcodes, st.booleans(), payloads), min_size=1, max_size=4),
    chunk=st.integers(min_value=1, max_value=9000),
    masked=st.booleans(),
)
def test_any_chunking_round_trips(
    frames: list[tuple[int, bool, bytes]], chunk: int, masked: bool
) -> None:
    key = b"\x9a\x01\xff\x10" if masked else None
    wire = b"".join(f.encode_frame(op, data, mask_key=key, fin=fin) for op, fin, data in frames)
    parsed = _parse_all(wire, chunk, masked=masked)
    assert [(p.opcode, p.fin, p.payload) for p in parsed] == frames


def test_parser_waits_for_a_whole_frame() -> None:
    wire = f.encode_frame(f.OP_TEXT, b"x" * 300, mask_key=None)
    parser = f.FrameParser(max_frame_size=1000)
    for byte in wire[:-1]:
        parser.feed(bytes([byte]))
        assert parser.next_frame() is None
    parser.feed(wire[-1:])
    assert parser.next_frame() == f.Frame(True, f.OP_TEXT, b"x" * 300)


@pytest.mark.parametrize(
    ("wire", "close_code"),
    [
        (bytes([0x81 | 0x40, 0]), 1002),  # RSV1
        (bytes([0x83, 0]), 1002),  # reserved opcode
        (bytes([0x81, 0x80]) + b"abcd", 1002),  # masked server frame
        (bytes([0x09, 0]), 1002),  # fragmented ping
        (bytes([0x89, 126]) + struct.pack("!H", 126), 1002),  # long ping
        (bytes([0x81, 127]) + struct.pack("!Q", 1 << 63), 1002),
        (bytes([0x82, 127]) + struct.pack("!Q", 2000), 1009),  # over the limit
    ],
)
def test_parser_rejects_bad_frames(wire: bytes, close_code: int) -> None:
    parser = f.FrameParser(max_frame_size=1000)
    parser.feed(wire)
    with pytest.raises(StreamError) as info:
        parser.next_frame()
    assert info.value.close_code == close_code


def test_assembler_joins_fragments() -> None:
    asm = f.MessageAssembler(max_message_size=100)
    assert asm.push(f.Frame(False, f.OP_TEXT, b"ab")) is None
    assert asm.push(f.Frame(False, f.OP_CONTINUATION, b"cd")) is None
    assert asm.push(f.Frame(True, f.OP_CONTINUATION, b"e")) == (f.OP_TEXT, b"abcde")
    assert asm.push(f.Frame(True, f.OP_BINARY, b"z")) == (f.OP_BINARY, b"z")


@pytest.mark.parametrize(
    ("frames", "close_code"),
    [
        ([f.Frame(True, f.OP_CONTINUATION, b"x")], 1002),
        ([f.Frame(False, f.OP_TEXT, b"x"), f.Frame(True, f.OP_TEXT, b"y")], 1002),
        ([f.Frame(False, f.OP_TEXT, b"x" * 60), f.Frame(True, f.OP_CONTINUATION, b"y" * 60)], 1009),
        ([f.Frame(True, f.OP_TEXT, b"x" * 101)], 1009),
    ],
)
def test_assembler_rejects_bad_sequences(frames: list[f.Frame], close_code: int) -> None:
    asm = f.MessageAssembler(max_message_size=100)
    with pytest.raises(StreamError) as info:
        for frame in frames:
            asm.push(frame)
    assert info.value.close_code == close_code


def test_close_payloads() -> None:
    assert f.parse_close_payload(b"") == (1005, "")
    assert f.parse_close_payload(f.encode_close_payload(1001, "bye")) == (1001, "bye")
    assert f.parse_close_payload(struct.pack("!H", 4003)) == (4003, "")
    assert f.encode_close_payload(None) == b""
    for bad in (
        b"\x03",
        struct.pack("!H", 1005),
        struct.pack("!H", 999),
        struct.pack("!H", 1000) + b"\xff",
    ):
        with pytest.raises(StreamError):
            f.parse_close_payload(bad)
    with pytest.raises(ValueError):
        f.encode_close_payload(1000, "x" * 124)


def test_handshake_request_and_accept() -> None:
    key = new_key(b"the sample nonce")
    assert key == "dGhlIHNhbXBsZSBub25jZQ=="
    request = build_request("h:81", "/v1/stream?x=1", key, {"Authorization": "Bearer k"})
    assert request.startswith(b"GET /v1/stream?x=1 HTTP/1.1\r\nHost: h:81\r\n")
    assert b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" in request
    assert b"Authorization: Bearer k\r\n" in request
    assert request.endswith(b"\r\n\r\n")
    with pytest.raises(ValueError):
        build_request("h", "/", key, {"X": "a\r\nInjected: 1"})
    with pytest.raises(ValueError):
        new_key(b"short")
    head = parse_response_head(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\n"
        b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Accept: " + accept_for(key).encode()
    )
    assert head.status == 101
    check_upgrade(head, key)


@pytest.mark.parametrize(
    "head",
    [b"garbage", b"HTTP/1.1 abc", b"HTTP/1.1 101 OK\r\nno colon here"],
)
def test_malformed_response_heads(head: bytes) -> None:
    with pytest.raises(StreamError):
        parse_response_head(head)


def test_upgrade_requires_upgrade_and_connection_headers() -> None:
    key = new_key(b"0123456789abcdef")
    good = {
        "upgrade": "websocket",
        "connection": "Upgrade",
        "sec-websocket-accept": accept_for(key),
    }
    for missing in ("upgrade", "connection"):
        headers = {k: v for k, v in good.items() if k != missing}
        with pytest.raises(StreamError, match=missing.capitalize()):
            check_upgrade(
                parse_response_head(
                    b"HTTP/1.1 101 X\r\n"
                    + "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode()
                ),
                key,
            )


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            '{"channel": "prices:X", "data": {"bid": 1}}',
            {"channel": "prices:X", "data": {"bid": 1}},
        ),
        ('{"type": "subscribed", "channels": ["prices:X"]}', None),
        ('{"channel": "prices:X", "data": {}}', None),
        ('{"channel": "", "data": {"bid": 1}}', None),
        ("", None),
        (b'{"channel": "c", "data": [1]}', {"channel": "c", "data": [1]}),
    ],
)
def test_decode_message_filters(message: str | bytes, expected: object) -> None:
    assert decode_message(message, raw=False) == expected


def test_decode_message_errors() -> None:
    with pytest.raises(StreamError, match="boom"):
        decode_message('{"type": "error", "message": "boom"}', raw=False)
    assert decode_message('{"type": "error", "message": "boom"}', raw=True) == {
        "type": "error",
        "message": "boom",
    }
    with pytest.raises(StreamError, match="UTF-8"):
        decode_message(b"\xff", raw=False)
