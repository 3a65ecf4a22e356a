"""A scripted RFC 6455 server on stdlib socket + threading, for client tests.

Written independently of the SDK's framing code (so the tests are not the
SDK checking itself). Each accepted connection runs the next script, a
function of a ``ServerConn``, in its own thread; whatever a script raises is
collected and re-raised by ``close()``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import ssl
import struct
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


class ClientFrame(NamedTuple):
    fin: bool
    opcode: int
    payload: bytes
    masked: bool


class ServerConn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.settimeout(10)
        self.buffer = b""
        self.request_line = ""
        self.headers: dict[str, str] = {}
        self.frames: list[ClientFrame] = []  # every frame the client sent

    # -- bytes ---------------------------------------------------------------

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("client closed the connection")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    # -- handshake -------------------------------------------------------------

    def read_request(self) -> None:
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise EOFError("no handshake")
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        self.request_line = lines[0]
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()

    def handshake(self, *, accept: str | None = None, extra: str = "") -> None:
        """Read the upgrade request and accept it."""
        self.read_request()
        key = self.headers["sec-websocket-key"]
        if accept is None:
            accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
        self.send_raw(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{extra}\r\n"
            ).encode()
        )

    def refuse(self, status: int, body: dict[str, Any], headers: str = "") -> None:
        self.read_request()
        content = json.dumps(body).encode()
        self.send_raw(
            (
                f"HTTP/1.1 {status} Refused\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(content)}\r\n{headers}\r\n"
            ).encode()
            + content
        )

    # -- frames ---------------------------------------------------------------

    def recv_frame(self) -> ClientFrame:
        b0, b1 = self._read(2)
        length = b1 & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._read(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._read(8))
        masked = bool(b1 & 0x80)
        key = self._read(4) if masked else b""
        payload = bytearray(self._read(length))
        if masked:
            for i in range(length):
                payload[i] ^= key[i % 4]
        frame = ClientFrame(bool(b0 & 0x80), b0 & 0x0F, bytes(payload), masked)
        self.frames.append(frame)
        return frame

    def recv_message(self) -> tuple[int, bytes]:
        """The next data message; control frames are recorded and skipped."""
        parts: list[bytes] = []
        opcode = None
        while True:
            frame = self.recv_frame()
            if frame.opcode in (PING, PONG, CLOSE):
                if frame.opcode == CLOSE:
                    raise EOFError(f"client sent close {frame.payload!r}")
                continue
            if opcode is None:
                opcode = frame.opcode
            parts.append(frame.payload)
            if frame.fin:
                return opcode, b"".join(parts)

    def recv_json(self) -> Any:
        opcode, payload = self.recv_message()
        assert opcode == TEXT
        return json.loads(payload)

    def expect_subscribe(self) -> list[str]:
        message = self.recv_json()
        assert message["op"] == "subscribe", message
        channels: list[str] = message["channels"]
        return channels

    def send_frame(
        self,
        opcode: int,
        payload: bytes = b"",
        *,
        fin: bool = True,
        mask: bool = False,
        rsv: int = 0,
    ) -> None:
        head = bytes([(0x80 if fin else 0) | rsv | opcode])
        n = len(payload)
        bit = 0x80 if mask else 0
        if n < 126:
            head += bytes([bit | n])
        elif n < 65536:
            head += bytes([bit | 126]) + struct.pack("!H", n)
        else:
            head += bytes([bit | 127]) + struct.pack("!Q", n)
        if mask:
            key = b"\x01\x02\x03\x04"
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
            head += key
        self.send_raw(head + payload)

    def send_json(self, obj: Any) -> None:
        self.send_frame(TEXT, json.dumps(obj).encode())

    def ack(self, channels: list[str]) -> None:
        self.send_json({"type": "subscribed", "channels": channels})

    def price(self, channel: str, bid: float) -> None:
        self.send_json({"channel": channel, "data": {"bid": bid, "ask": bid + 0.01}})

    def send_close(self, code: int = 1000, reason: str = "") -> None:
        self.send_frame(CLOSE, struct.pack("!H", code) + reason.encode())

    def expect_close(self) -> tuple[int | None, str]:
        """Read until the client's close frame; return its code and reason."""
        while True:
            frame = self.recv_frame()
            if frame.opcode == CLOSE:
                if not frame.payload:
                    return None, ""
                return struct.unpack("!H", frame.payload[:2])[0], frame.payload[2:].decode()

    def expect_eof(self) -> None:
        while True:
            try:
                if not self.sock.recv(65536):
                    return
            except ConnectionResetError:
                return

    def abort(self, *, rst: bool = False) -> None:
        """Drop the TCP connection with no close frame: a FIN after the data
        already sent, or with ``rst`` a reset (which may discard that data)."""
        if rst:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    def close(self) -> None:
        self.sock.close()


Script = Callable[[ServerConn], None]


class WSServer:
    def __init__(self, *scripts: Script, ssl_context: ssl.SSLContext | None = None) -> None:
        self._scripts = list(scripts)
        self._ssl_context = ssl_context
        self.errors: list[BaseException] = []
        self.conns: list[ServerConn] = []
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self._listener.settimeout(0.02)
        self.port = self._listener.getsockname()[1]
        tls = ssl_context is not None
        self.url = f"{'wss' if tls else 'ws'}://127.0.0.1:{self.port}/v1/stream"
        self.base_url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True)
        self._acceptor.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                continue
            sock.settimeout(10)
            conn = ServerConn(sock)
            self.conns.append(conn)
            script = self._scripts.pop(0) if self._scripts else None
            thread = threading.Thread(target=self._run, args=(script, conn), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _run(self, script: Script | None, conn: ServerConn) -> None:
        try:
            if self._ssl_context is not None:
                conn.sock = self._ssl_context.wrap_socket(conn.sock, server_side=True)
            if script is not None:
                script(conn)
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            conn.close()

    @property
    def connections(self) -> int:
        return len(self.conns)

    def close(self) -> None:
        self._stop.set()
        self._acceptor.join(5)
        self._listener.close()
        for thread in self._threads:
            thread.join(10)
        if self.errors:
            raise self.errors[0]

    def __enter__(self) -> WSServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
