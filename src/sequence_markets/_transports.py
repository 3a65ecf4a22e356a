"""Transports: the one place the HTTP client touches the network.

A transport has one method, ``handle(request) -> response``. It does not
interpret statuses, retry with backoff or decode JSON; the client does that,
so it works the same over ``HTTPTransport`` and over ``MockTransport``.
"""

from __future__ import annotations

import http.client
import select
import socket
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple, Type
from urllib.parse import urlsplit

from ._exceptions import SequenceConnectionError, SequenceTimeoutError
from ._models import Request, Response

if TYPE_CHECKING:
    import ssl

# Failures that mean "the idle keep-alive connection was already dead".
_STALE_ERRORS = (ConnectionError, http.client.BadStatusLine)
_TIMEOUT_ERRORS = (socket.timeout, TimeoutError)

_Origin = Tuple[str, str, int]


class BaseTransport:
    """Sends one request and returns its response. Subclass and override
    ``handle`` (and ``close`` if you hold connections).

    Raise ``SequenceConnectionError`` (or ``SequenceTimeoutError``) when there
    is no response; the client retries those for idempotent requests.
    """

    def handle(self, request: Request) -> Response:
        """Send ``request`` and return the complete response."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections. The transport must not be used afterwards."""

    def __enter__(self) -> BaseTransport:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()


class MockTransport(BaseTransport):
    """Answers every request with ``handler(request)``, without any I/O.

    ::

        def handler(request):
            assert request.path == "/v1/quotes"
            return Response.from_json(200, {"symbol": "BTC-USD", "nbbo": {...}})

        seq = Sequence("seq_test_x", "http://sequence.test", transport=MockTransport(handler))

    The handler may raise ``SequenceConnectionError`` to simulate a dropped
    connection.
    """

    def __init__(self, handler: Callable[[Request], Response]) -> None:
        self._handler = handler

    def handle(self, request: Request) -> Response:
        response = self._handler(request)
        if not isinstance(response, Response):
            raise TypeError(
                f"MockTransport handler returned {type(response).__name__}, not Response"
            )
        return response


class HTTPTransport(BaseTransport):
    """HTTP/1.1 over ``http.client`` with persistent connections.

    Connections are kept open and reused, one per concurrent caller (so a
    client shared by threads is safe), at most ``max_idle`` idle per origin.
    An idle connection the server has closed is noticed before reuse; if a
    reused connection fails before any response arrives, an idempotent
    request is re-sent once on a fresh connection at no backoff cost.

    ``timeout`` bounds connecting and every socket read or write.
    ``ssl_context`` defaults to ``ssl.create_default_context()``.
    """

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        ssl_context: Optional[ssl.SSLContext] = None,
        max_idle: int = 4,
    ) -> None:
        self._timeout = timeout
        self._ssl_context = ssl_context
        self._max_idle = max_idle
        self._idle: Dict[_Origin, List[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def handle(self, request: Request) -> Response:
        origin, target = _route(request.url)
        for attempt in (0, 1):
            conn, reused = self._checkout(origin)
            try:
                conn.request(request.method, target, body=request.content, headers=request.headers)
                raw = conn.getresponse()
                content = raw.read()
            except Exception as exc:
                conn.close()
                if (
                    attempt == 0
                    and reused
                    and request.idempotent
                    and isinstance(exc, _STALE_ERRORS)
                ):
                    continue
                if isinstance(exc, _TIMEOUT_ERRORS):
                    raise SequenceTimeoutError(
                        f"timed out: {request.method} {request.url}"
                    ) from exc
                if isinstance(exc, (OSError, http.client.HTTPException)):
                    raise SequenceConnectionError(
                        f"{request.method} {request.url}: {type(exc).__name__}: {exc}"
                    ) from exc
                raise
            headers = {key.lower(): value for key, value in raw.getheaders()}
            if raw.will_close:
                conn.close()
            else:
                self._checkin(origin, conn)
            return Response(raw.status, headers=headers, content=content, reason=raw.reason)
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    def __del__(self) -> None:
        # Strategies often never close their client; close pooled sockets
        # when it is collected rather than leave them to the socket finalizer.
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    def _checkout(self, origin: _Origin) -> Tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            if self._closed:
                raise SequenceConnectionError("transport is closed")
            pool = self._idle.get(origin)
            while pool:
                conn = pool.pop()
                if _is_dropped(conn):
                    conn.close()
                    continue
                return conn, True
        return self._connect(origin), False

    def _checkin(self, origin: _Origin, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            pool = self._idle.setdefault(origin, [])
            if not self._closed and len(pool) < self._max_idle:
                pool.append(conn)
                return
        conn.close()

    def _connect(self, origin: _Origin) -> http.client.HTTPConnection:
        scheme, host, port = origin
        if scheme == "https":
            if self._ssl_context is None:
                import ssl

                self._ssl_context = ssl.create_default_context()
            return http.client.HTTPSConnection(
                host, port, timeout=self._timeout, context=self._ssl_context
            )
        return http.client.HTTPConnection(host, port, timeout=self._timeout)


def _route(url: str) -> Tuple[_Origin, str]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    port = parts.port or (443 if scheme == "https" else 80)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return (scheme, parts.hostname, port), target


def _is_dropped(conn: http.client.HTTPConnection) -> bool:
    """True if an idle connection is unusable: readable while idle means EOF."""
    sock = conn.sock
    if sock is None:
        return True
    try:
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable)
    except (OSError, ValueError):
        return True
