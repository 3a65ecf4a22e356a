"""The end-to-end example's own pieces, without a platform: the hand-rolled
WebSocket client against a raw-socket server speaking RFC 6455 frames the
awkward ways (piggybacked on the 101, fragmented, 16- and 64-bit lengths,
pings, acks, empty data, close), and its pure helpers."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest

from tests.acceptance.harness import EXAMPLES

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hosted_strategy_prediction",
                                                  EXAMPLES / "hosted_strategy_prediction.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """An unmasked server frame."""
    head = bytearray([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head.append(n)
    elif n < 1 << 16:
        head += bytes([126]) + struct.pack("!H", n)
    else:
        head += bytes([127]) + struct.pack("!Q", n)
    return bytes(head) + payload


def text(obj: Any) -> bytes:
    return frame(0x1, json.dumps(obj).encode())


class Peer:
    """The server side of one connection: reads client frames (which must be masked)."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn, self.buf = conn, b""

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.conn.recv(65536)
            if not chunk:
                raise ConnectionError("client went away")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_frame(self) -> tuple[int, bytes]:
        b0, b1 = self._exact(2)
        assert b1 & 0x80, "client frames must be masked"
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self._exact(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self._exact(8))
        mask = self._exact(4)
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(self._exact(n)))
        return b0 & 0x0F, data


class Server:
    """Accepts one WebSocket upgrade and hands the connection to ``script``."""

    def __init__(self, script: Callable[[Peer, bytes], None], *, status: bytes = b"101 Switching Protocols",
                 first: bytes = b"") -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.script, self.status, self.first = script, status, first
        self.request = b""
        self.client_frames: list[tuple[int, bytes]] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            conn, _ = self.sock.accept()
            with conn:
                while b"\r\n\r\n" not in self.request:
                    self.request += conn.recv(4096)
                key = next(line.split(b":", 1)[1].strip() for line in self.request.split(b"\r\n")
                           if line.lower().startswith(b"sec-websocket-key:"))
                accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
                # Frames in the same packet as the 101: the client must not lose them.
                conn.sendall(b"HTTP/1.1 " + self.status + b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                             b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n" + self.first)
                peer = Peer(conn)
                if self.status.startswith(b"101"):
                    opcode, sub = peer.read_frame()
                    self.client_frames.append((opcode, sub))
                    self.script(peer, sub)
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def join(self) -> None:
        self.thread.join(timeout=10)
        self.sock.close()
        if self.error is not None:
            raise self.error


def collect(example: ModuleType, server: Server, **kw: Any) -> list[dict[str, Any]]:
    it: Iterator[dict[str, Any]] = example.ws_subscribe(server.url, "seq_test_k", ["prices:A", "prices:B"],
                                                         duration_s=kw.pop("duration_s", 5.0),
                                                         max_msgs=kw.pop("max_msgs", 100))
    return list(it)


def test_ws_subscribe_handles_every_frame_shape_and_filters_acks(example: ModuleType) -> None:
    seen: dict[str, Any] = {}
    big = {"channel": "prices:A", "data": {"bid": 0.4, "pad": "x" * 300}}       # 16-bit length
    huge = {"channel": "prices:B", "data": {"bid": 0.6, "pad": "y" * 70_000}}   # 64-bit length
    frag = json.dumps({"channel": "prices:A", "data": {"bid": 0.41}}).encode()

    def script(peer: Peer, sub: bytes) -> None:
        seen["sub"] = json.loads(sub)
        c = peer.conn
        c.sendall(text({"channel": "prices:A", "data": {}}))                    # empty data: filtered
        c.sendall(frame(0x9, b"hb"))                                              # ping → pong
        seen["pong"] = peer.read_frame()
        c.sendall(frame(0x1, frag[:10], fin=False) + frame(0x0, frag[10:20], fin=False))
        c.sendall(frame(0x9, b"mid"))                                             # control frame mid-message
        seen["pong2"] = peer.read_frame()
        time.sleep(0.05)
        c.sendall(frame(0x0, frag[20:]))                                          # final fragment
        c.sendall(text(big))
        data = text(huge)
        c.sendall(data[:5])                                                       # split header
        time.sleep(0.05)
        c.sendall(data[5:])
        c.sendall(frame(0x8, struct.pack("!H", 1000)))                            # close → echo
        seen["close"] = peer.read_frame()

    server = Server(script, first=text({"type": "subscribed", "channels": ["prices:A", "prices:B"]}))
    msgs = collect(example, server)
    server.join()

    assert seen["sub"] == {"op": "subscribe", "channels": ["prices:A", "prices:B"]}
    assert server.client_frames[0][0] == 0x1  # a text frame
    assert seen["pong"] == (0xA, b"hb") and seen["pong2"] == (0xA, b"mid")
    assert seen["close"][0] == 0x8 and seen["close"][1][:2] == struct.pack("!H", 1000)
    assert [m["data"]["bid"] for m in msgs] == [0.41, 0.4, 0.6]
    assert len(msgs[2]["data"]["pad"]) == 70_000
    assert b"Authorization: Bearer seq_test_k" in server.request
    assert server.request.startswith(b"GET /v1/stream HTTP/1.1\r\n")


def test_ws_subscribe_stops_at_max_msgs_and_says_goodbye(example: ModuleType) -> None:
    seen: dict[str, Any] = {}

    def script(peer: Peer, _sub: bytes) -> None:
        for i in range(10):
            peer.conn.sendall(text({"channel": "prices:A", "data": {"bid": i}}))
        seen["close"] = peer.read_frame()

    server = Server(script)
    msgs = collect(example, server, max_msgs=3)
    server.join()
    assert [m["data"]["bid"] for m in msgs] == [0, 1, 2]
    assert seen["close"] == (0x8, struct.pack("!H", 1000))


def test_ws_subscribe_stops_at_its_deadline_when_the_stream_is_silent(example: ModuleType) -> None:
    def script(peer: Peer, _sub: bytes) -> None:
        try:
            peer.read_frame()  # the goodbye
        except ConnectionError:
            pass

    server = Server(script)
    t0 = time.monotonic()
    msgs = collect(example, server, duration_s=1.0)
    elapsed = time.monotonic() - t0
    server.join()
    assert msgs == []
    assert 0.9 <= elapsed < 4.5  # the deadline plus at most one 2 s socket timeout


def test_ws_subscribe_raises_on_a_refused_upgrade_and_on_a_stream_error(example: ModuleType) -> None:
    server = Server(lambda p, s: None, status=b"401 Unauthorized")
    with pytest.raises(RuntimeError, match="handshake failed"):
        collect(example, server)
    server.join()

    server = Server(lambda p, s: p.conn.sendall(text({"type": "error", "code": "unknown_symbol",
                                                       "message": "no such symbol"})))
    with pytest.raises(RuntimeError, match="unknown_symbol"):
        collect(example, server)
    server.join()


@pytest.mark.parametrize(("bid", "price"), [(0.85, 0.42), (0.53, 0.26), (0.02, 0.01), (0.01, 0.01),
                                            (0.0, 0.01), (None, 0.01), (0.99, 0.49)])
def test_safe_resting_price_is_half_the_bid_in_whole_cents(example: ModuleType, bid: float | None,
                                                           price: float) -> None:
    assert example.safe_resting_price(bid) == price


def test_walk_book_logs_five_levels_per_side_and_skips_empty_sides(
        example: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    class FakeSeq:
        def quote(self, symbol: str, depth: int) -> dict[str, Any]:
            assert depth == 5
            return {"symbol": symbol, "nbbo": {"bid": 0.5, "ask": None},
                    "bids": [{"price": 0.5 - i / 100, "size": 10 + i} for i in range(7)], "asks": []}

    q = example.walk_book(FakeSeq(), "kalshi", "K-YES")
    recs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert q["nbbo"]["bid"] == 0.5
    assert [r["event"] for r in recs] == ["book_level"] * 5
    assert [r["level"] for r in recs] == [0, 1, 2, 3, 4]
    assert {r["side"] for r in recs} == {"bid"} and recs[0]["venue"] == "kalshi"
