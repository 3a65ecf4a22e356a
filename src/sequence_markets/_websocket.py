"""One RFC 6455 client connection over ``socket`` (and ``ssl`` for wss://).

Knows frames, not the Sequence protocol (that is ``_stream.py``). Answers
pings, keeps an idle connection alive with its own pings, reassembles
fragmented messages, and does the close handshake.
"""

from __future__ import annotations

import os
import socket
from types import TracebackType
from typing import TYPE_CHECKING, Callable, Mapping, NoReturn, Optional, Tuple, Type, Union
from urllib.parse import urlsplit

from . import _frames as f
from ._clock import Clock, SystemClock
from ._exceptions import (
    SequenceConnectionError,
    SequenceError,
    SequenceTimeoutError,
    StreamClosed,
    StreamError,
    error_from_response,
)
from ._handshake import build_request, check_upgrade, new_key, parse_response_head
from ._retry import parse_retry_after

if TYPE_CHECKING:
    import ssl

_TIMEOUT_ERRORS = (socket.timeout, TimeoutError)
_MAX_HEAD = 64 * 1024
_READ_SIZE = 65536
_MIN_WAIT = 0.001  # settimeout(0) would make the socket non-blocking

Message = Union[str, bytes]


def connection_error(what: str, exc: BaseException) -> SequenceConnectionError:
    if isinstance(exc, _TIMEOUT_ERRORS):
        return SequenceTimeoutError(f"{what}: timed out")
    return SequenceConnectionError(f"{what}: {type(exc).__name__}: {exc}")


class WebSocket:
    """An open client WebSocket. Not thread-safe: use it from one thread.

    ``recv(timeout)`` returns the next text (``str``) or binary (``bytes``)
    message, or ``None`` if ``timeout`` seconds pass first; buffered partial
    frames survive the timeout. It raises ``StreamClosed`` once the server's
    close frame arrives (after answering it) and ``SequenceConnectionError``
    when the connection drops without one, or when a keepalive ping gets no
    answer within ``ping_timeout``.
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        leftover: bytes = b"",
        timeout: float = 10.0,
        ping_interval: Optional[float] = 20.0,
        ping_timeout: Optional[float] = None,
        close_timeout: float = 2.0,
        max_message_size: int = 16 * 1024 * 1024,
        clock: Optional[Clock] = None,
        urandom: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._sock: Optional[socket.socket] = sock
        self._timeout = timeout
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout if ping_timeout is not None else ping_interval
        self._close_timeout = close_timeout
        self._clock = clock or SystemClock()
        self._urandom = urandom
        self._parser = f.FrameParser(max_frame_size=max_message_size)
        self._assembler = f.MessageAssembler(max_message_size=max_message_size)
        self._close_sent = False
        self._last_rx = self._clock.monotonic()
        self._ping_sent_at: Optional[float] = None
        self.close_code: Optional[int] = None
        self.close_reason = ""
        if leftover:
            self._parser.feed(leftover)

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        headers: Optional[Mapping[str, str]] = None,
        timeout: float = 10.0,
        ssl_context: Optional[ssl.SSLContext] = None,
        clock: Optional[Clock] = None,
        ping_interval: Optional[float] = 20.0,
        ping_timeout: Optional[float] = None,
        close_timeout: float = 2.0,
        max_message_size: int = 16 * 1024 * 1024,
    ) -> WebSocket:
        """Open ``ws://`` or ``wss://`` ``url`` and complete the handshake.

        A refused upgrade raises the error its HTTP status maps to (401/403 →
        ``AuthenticationError``, 5xx → ``ServerError``, ...).
        """
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"not a ws:// or wss:// URL: {url!r}")
        host = parts.hostname
        port = parts.port or (443 if scheme == "wss" else 80)
        target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
        host_header = f"[{host}]" if ":" in host else host
        if parts.port and parts.port != (443 if scheme == "wss" else 80):
            host_header += f":{port}"
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise connection_error(f"connect to {url}", exc) from exc
        try:
            _no_delay(sock)
            if scheme == "wss":
                if ssl_context is None:
                    import ssl

                    ssl_context = ssl.create_default_context()
                sock = ssl_context.wrap_socket(sock, server_hostname=host)
            key = new_key(os.urandom(16))
            sock.sendall(build_request(host_header, target, key, headers or {}))
            head, leftover = _read_head(sock)
            parsed = parse_response_head(head)
            if parsed.status != 101:
                body = _read_body(sock, parsed.headers, leftover)
                retry_after = parse_retry_after(parsed.headers, (clock or SystemClock()).time())
                raise error_from_response(
                    parsed.status,
                    parsed.headers,
                    body,
                    reason=parsed.reason,
                    retry_after=retry_after,
                )
            check_upgrade(parsed, key)
        except SequenceError:
            sock.close()
            raise
        except OSError as exc:
            sock.close()
            raise connection_error(f"WebSocket handshake with {url}", exc) from exc
        except BaseException:
            sock.close()
            raise
        return cls(
            sock,
            leftover=leftover,
            timeout=timeout,
            clock=clock,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            close_timeout=close_timeout,
            max_message_size=max_message_size,
        )

    @property
    def closed(self) -> bool:
        return self._sock is None

    def send(self, message: Message) -> None:
        """Send one text (``str``) or binary (``bytes``) message."""
        if isinstance(message, str):
            self._send_frame(f.OP_TEXT, message.encode("utf-8"))
        else:
            self._send_frame(f.OP_BINARY, bytes(message))

    def ping(self, payload: bytes = b"") -> None:
        self._send_frame(f.OP_PING, payload)

    def recv(self, timeout: Optional[float] = None) -> Optional[Message]:
        clock = self._clock
        deadline = None if timeout is None else clock.monotonic() + timeout
        while True:
            if self._sock is None:
                raise StreamClosed(self.close_code, self.close_reason)
            try:
                frame = self._parser.next_frame()
                if frame is not None:
                    self._last_rx = clock.monotonic()
                    self._ping_sent_at = None
                    message = self._on_frame(frame)
                    if message is not None:
                        return message
                    continue
            except StreamError as exc:
                if isinstance(exc, StreamClosed):
                    raise
                self._fail(exc)
            now = clock.monotonic()
            if deadline is not None and now >= deadline:
                return None
            wait = None if deadline is None else deadline - now
            wake = self._keepalive(now)
            if wake is not None:
                wait = wake if wait is None else min(wait, wake)
            self._sock.settimeout(None if wait is None else max(wait, _MIN_WAIT))
            try:
                data = self._sock.recv(_READ_SIZE)
            except _TIMEOUT_ERRORS:
                continue
            except OSError as exc:
                self._abort()
                raise connection_error("WebSocket read", exc) from exc
            if not data:
                self._abort()
                raise SequenceConnectionError("WebSocket closed without a close frame (1006)")
            self._parser.feed(data)

    def close(self, code: int = f.CLOSE_NORMAL, reason: str = "") -> None:
        """Send a close frame, wait briefly for the server's, then close the socket."""
        if self._sock is None:
            return
        try:
            if not self._close_sent:
                self._send_close(code, reason)
            deadline = self._clock.monotonic() + self._close_timeout
            while self._sock is not None:
                remaining = deadline - self._clock.monotonic()
                if remaining <= 0 or self.recv(remaining) is None:
                    break
        except SequenceError:
            pass
        finally:
            self._abort()

    def __enter__(self) -> WebSocket:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    def _on_frame(self, frame: f.Frame) -> Optional[Message]:
        opcode = frame.opcode
        if opcode == f.OP_PING:
            if not self._close_sent:
                self._send_frame(f.OP_PONG, frame.payload)
            return None
        if opcode == f.OP_PONG:
            return None
        if opcode == f.OP_CLOSE:
            code, reason = f.parse_close_payload(frame.payload)
            self.close_code, self.close_reason = code, reason
            if not self._close_sent:
                try:
                    self._send_close(None if code == f.CLOSE_NO_STATUS else code, "")
                except SequenceError:
                    pass
            self._abort()
            raise StreamClosed(code, reason)
        complete = self._assembler.push(frame)
        if complete is None:
            return None
        kind, payload = complete
        if kind == f.OP_TEXT:
            try:
                return payload.decode("utf-8")
            except UnicodeDecodeError:
                raise f.protocol_error("text message is not UTF-8", f.CLOSE_INVALID_DATA) from None
        return payload

    def _keepalive(self, now: float) -> Optional[float]:
        """Send a ping when idle; seconds until the next keepalive check."""
        if self._ping_interval is None or self._close_sent:
            return None
        if self._ping_sent_at is not None:
            assert self._ping_timeout is not None
            overdue = self._ping_sent_at + self._ping_timeout - now
            if overdue <= 0:
                self._abort()
                raise SequenceConnectionError("WebSocket keepalive ping got no answer")
            return overdue
        idle_for = now - self._last_rx
        if idle_for < self._ping_interval:
            return self._ping_interval - idle_for
        self._send_frame(f.OP_PING, self._urandom(4))
        self._ping_sent_at = now
        return self._ping_timeout

    def _send_close(self, code: Optional[int], reason: str) -> None:
        self._send_frame(f.OP_CLOSE, f.encode_close_payload(code, reason))
        self._close_sent = True

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        if self._sock is None or self._close_sent:
            raise StreamClosed(self.close_code, self.close_reason)
        data = f.encode_frame(opcode, payload, mask_key=self._urandom(4))
        try:
            self._sock.settimeout(self._timeout)
            self._sock.sendall(data)
        except OSError as exc:
            self._abort()
            raise connection_error("WebSocket write", exc) from exc

    def _fail(self, error: StreamError) -> NoReturn:
        """Close with the error's code after a protocol violation, then raise it."""
        if not self._close_sent and error.close_code is not None:
            try:
                self._send_close(error.close_code, "")
            except SequenceError:
                pass
        self._abort()
        raise error

    def _abort(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:  # pragma: no cover - close() of a dead socket
                pass


def _no_delay(sock: socket.socket) -> None:
    """Small frames (subscribe, pong, close) must not wait on Nagle's algorithm."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:  # pragma: no cover - not TCP
        pass


def _read_head(sock: socket.socket) -> Tuple[bytes, bytes]:
    """Read up to the blank line ending the response head; return (head, rest)."""
    data = b""
    while True:
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            return data[:end], data[end + 4 :]
        if len(data) > _MAX_HEAD:
            raise StreamError("handshake: response head too large")
        chunk = sock.recv(4096)
        if not chunk:
            raise SequenceConnectionError("handshake: connection closed before the response")
        data += chunk


def _read_body(sock: socket.socket, headers: Mapping[str, str], data: bytes) -> bytes:
    """Best effort: the body of a refused upgrade, for its error message."""
    try:
        length = min(int(headers.get("content-length", "0")), _MAX_HEAD)
    except ValueError:
        return data
    try:
        while len(data) < length:
            chunk = sock.recv(length - len(data))
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    return data[:length]
