"""``Stream``: the ``/v1/stream`` subscription protocol on top of ``WebSocket``.

Client → server: ``{"op": "subscribe" | "unsubscribe", "channels": [...]}``.
Server → client: ``{"type": "subscribed", "channels": [...]}`` acks,
``{"channel": "prices:<symbol>", "data": {...}}`` messages, and
``{"type": "error", "message": ..., ...}`` errors.
"""

from __future__ import annotations

import json
import random
from types import TracebackType
from typing import (
    TYPE_CHECKING,
    Any,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Tuple,
    Type,
    Union,
)

from ._clock import Clock, SystemClock
from ._exceptions import (
    RateLimitError,
    SequenceConnectionError,
    SequenceError,
    ServerError,
    StreamClosed,
    StreamError,
)
from ._retry import RetryPolicy
from ._websocket import Message, WebSocket

if TYPE_CHECKING:
    import ssl

#: Close codes after which the server expects (or tolerates) a reconnect:
#: going away, internal error, service restart, try again later, bad gateway.
RECONNECT_CLOSE_CODES = frozenset({1001, 1011, 1012, 1013, 1014})
#: Close codes that end an iteration quietly rather than raising.
GRACEFUL_CLOSE_CODES = frozenset({None, 1000, 1001})

DEFAULT_STREAM_RETRY = RetryPolicy(max_retries=10, backoff_base=0.5, backoff_max=10.0)
#: A connection that lived this long was healthy: its drop starts a fresh
#: retry budget, so a quiet stream survives occasional drops indefinitely.
HEALTHY_AFTER_S = 30.0

Channels = Union[str, Iterable[str]]


def channel_list(channels: Channels) -> List[str]:
    """Accept one channel name or an iterable of them."""
    names = [channels] if isinstance(channels, str) else list(channels)
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError(f"channel names are non-empty strings, not {name!r}")
    return names


def decode_message(message: Message, *, raw: bool) -> Optional[Dict[str, Any]]:
    """One server message → a dict to hand the user, or ``None`` to skip it.

    Skipped unless ``raw``: empty frames, acks and anything without both a
    ``channel`` and non-empty ``data`` (the "empty WebSocket frames"
    pitfall). A ``{"type": "error"}`` message raises ``StreamError`` unless
    ``raw``. A message that is not a JSON object raises ``StreamError``.
    """
    if isinstance(message, bytes):
        try:
            message = message.decode("utf-8")
        except UnicodeDecodeError:
            raise StreamError("binary stream message is not UTF-8 JSON") from None
    if not message.strip():
        return None
    try:
        decoded = json.loads(message)
    except ValueError:
        raise StreamError(f"stream message is not JSON: {message[:100]!r}") from None
    if not isinstance(decoded, dict):
        raise StreamError(f"stream message is not a JSON object: {message[:100]!r}")
    if raw:
        return decoded
    if decoded.get("type") == "error":
        details = {k: v for k, v in decoded.items() if k not in ("type", "message", "code")}
        code = decoded.get("code")
        raise StreamError(
            str(decoded.get("message") or "stream error"),
            code=None if code is None else str(code),
            details=details,
        )
    if decoded.get("channel") and decoded.get("data"):
        return decoded
    return None


class Stream:
    """A subscription to ``/v1/stream`` that survives disconnects.

    ::

        with seq.open_stream(["prices:BTC-USD"]) as stream:
            msg = stream.recv(timeout=5)   # {"channel": ..., "data": {...}} or None
            stream.subscribe(["fills"])
            for msg in stream:             # until closed
                ...

    Connects lazily (on the first ``recv``/``subscribe``, or on entering
    ``with``). When the connection drops, or the server closes with a code in
    ``RECONNECT_CLOSE_CODES``, it reconnects with backoff (``retry``) and
    re-subscribes every channel, as long as ``reconnect`` is true; messages
    sent while disconnected are lost, and each channel's snapshot is sent
    again on re-subscribe. A refused upgrade (401/403/404) is not retried.

    Returned messages are ``{"channel", "data"}`` dicts; acks and empty
    frames are skipped and ``{"type": "error"}`` messages raise
    ``StreamError``. With ``raw=True`` every JSON message is returned as is.
    One consumer thread per stream.
    """

    def __init__(
        self,
        url: str,
        api_key: Optional[str] = None,
        *,
        channels: Channels = (),
        timeout: float = 10.0,
        reconnect: bool = True,
        retry: Optional[RetryPolicy] = None,
        ping_interval: Optional[float] = 20.0,
        raw: bool = False,
        ssl_context: Optional[ssl.SSLContext] = None,
        headers: Optional[Mapping[str, str]] = None,
        clock: Optional[Clock] = None,
    ) -> None:
        self.url = url
        self._headers: Dict[str, str] = dict(headers or {})
        if api_key:
            self._headers["Authorization"] = "Bearer " + api_key
        self._channels: Dict[str, None] = dict.fromkeys(channel_list(channels))
        self._timeout = timeout
        self._reconnect = reconnect
        self._retry = retry or DEFAULT_STREAM_RETRY
        self._ping_interval = ping_interval
        self._raw = raw
        self._ssl_context = ssl_context
        self._clock = clock or SystemClock()
        self._rng = random.Random()
        self._ws: Optional[WebSocket] = None
        self._failures = 0
        self._next_attempt_at = 0.0
        self._connected_at = 0.0
        self._closed = False
        self.reconnects = 0

    @property
    def channels(self) -> Tuple[str, ...]:
        """The channels subscribed to (and re-subscribed after a reconnect)."""
        return tuple(self._channels)

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed

    def connect(self, timeout: Optional[float] = None) -> Stream:
        """Connect now (and subscribe the channels given so far)."""
        deadline = None if timeout is None else self._clock.monotonic() + timeout
        if not self._ensure_connected(deadline):
            raise SequenceConnectionError(f"could not connect to {self.url} in time")
        return self

    def subscribe(self, channels: Channels) -> None:
        """Add channels. Errors for bad names arrive later, from ``recv``."""
        new = [name for name in channel_list(channels) if name not in self._channels]
        if not new:
            return
        self._channels.update(dict.fromkeys(new))
        if self._ws is None:
            self._ensure_connected(None)  # subscribes every channel, new ones included
        else:
            self._send_op("subscribe", new)

    def unsubscribe(self, channels: Channels) -> None:
        """Remove channels; they are not re-subscribed after a reconnect."""
        gone = [name for name in channel_list(channels) if name in self._channels]
        for name in gone:
            del self._channels[name]
        if gone and self._ws is not None:
            self._send_op("unsubscribe", gone)

    def recv(self, timeout: Optional[float] = None) -> Optional[Dict[str, Any]]:
        """The next message, or ``None`` if ``timeout`` seconds pass first
        (reconnecting counts against the timeout). Raises ``StreamClosed``
        once the stream is closed for good."""
        clock = self._clock
        deadline = None if timeout is None else clock.monotonic() + timeout
        while True:
            if not self._ensure_connected(deadline):
                return None
            ws = self._ws
            assert ws is not None
            remaining = None if deadline is None else max(0.0, deadline - clock.monotonic())
            try:
                message = ws.recv(remaining)
            except StreamClosed as exc:
                self._dropped(exc, exc.close_code in RECONNECT_CLOSE_CODES)
                continue
            except SequenceConnectionError as exc:
                self._dropped(exc, True)
                continue
            except StreamError:
                self._ws = None
                raise
            if message is None:
                return None
            try:
                decoded = decode_message(message, raw=self._raw)
            except StreamError as exc:
                self._forget_failed_channels(exc.details)
                raise
            if decoded is not None:
                self._failures = 0
                return decoded

    def close(self) -> None:
        """Close handshake, then close the socket. Idempotent."""
        self._closed = True
        ws, self._ws = self._ws, None
        if ws is not None:
            ws.close()

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        """Messages until the stream closes (quietly on close codes 1000/1001)."""
        while True:
            try:
                message = self.recv(None)
            except StreamClosed as exc:
                if exc.close_code in GRACEFUL_CLOSE_CODES:
                    return
                raise
            if message is not None:
                yield message

    def __enter__(self) -> Stream:
        return self.connect()

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "connected" if self.connected else "idle"
        return f"<Stream {self.url} {state} channels={list(self._channels)}>"

    def _ensure_connected(self, deadline: Optional[float]) -> bool:
        """Connect, retrying per policy; False if ``deadline`` comes first."""
        clock = self._clock
        while self._ws is None:
            if self._closed:
                raise StreamClosed()
            now = clock.monotonic()
            wait = self._next_attempt_at - now
            if wait > 0:
                if deadline is not None and now + wait > deadline:
                    clock.sleep(max(0.0, deadline - now))
                    return False
                clock.sleep(wait)
            elif deadline is not None and now >= deadline:
                return False
            timeout = self._timeout
            if deadline is not None:
                timeout = max(0.001, min(timeout, deadline - clock.monotonic()))
            try:
                ws = WebSocket.connect(
                    self.url,
                    headers=self._headers,
                    timeout=timeout,
                    ssl_context=self._ssl_context,
                    clock=clock,
                    ping_interval=self._ping_interval,
                )
            except SequenceError as exc:
                self._schedule_retry(exc, _retryable_connect_error(exc))
                continue
            self._ws = ws
            self._connected_at = clock.monotonic()
            if self._channels:
                self._send_op("subscribe", list(self._channels))
        return True

    def _send_op(self, op: str, channels: List[str]) -> None:
        ws = self._ws
        assert ws is not None
        payload = json.dumps({"op": op, "channels": channels}, separators=(",", ":"))
        try:
            ws.send(payload)
        except SequenceConnectionError as exc:
            # The next recv() reconnects and re-subscribes everything.
            self._dropped(exc, True)

    def _dropped(self, exc: SequenceError, retryable: bool) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            ws.close()
        if self._clock.monotonic() - self._connected_at >= HEALTHY_AFTER_S:
            self._failures = 0
        self._schedule_retry(exc, retryable)
        self.reconnects += 1  # counted only when a reconnect is scheduled

    def _schedule_retry(self, exc: SequenceError, retryable: bool) -> None:
        if not (retryable and self._reconnect) or self._closed:
            raise exc
        self._failures += 1
        if self._failures > self._retry.max_retries:
            raise exc
        delay = self._retry.backoff(self._failures - 1, self._rng.random())
        if isinstance(exc, RateLimitError) and exc.retry_after is not None:
            delay = max(delay, exc.retry_after)
        self._next_attempt_at = self._clock.monotonic() + delay

    def _forget_failed_channels(self, details: Mapping[str, Any]) -> None:
        """Do not re-subscribe channels the server refused."""
        named = details.get("channels") or details.get("channel") or ()
        names = [named] if isinstance(named, str) else named
        if isinstance(names, (list, tuple)):
            for name in names:
                if isinstance(name, str):
                    self._channels.pop(name, None)


def _retryable_connect_error(exc: SequenceError) -> bool:
    # A server restarting answers 5xx or nothing; 401/403/404 will not heal.
    return isinstance(exc, (SequenceConnectionError, RateLimitError, ServerError))
