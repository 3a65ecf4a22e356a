"""``Sequence``: the client strategies use."""

from __future__ import annotations

import os
import random
import uuid
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
    Type,
)
from typing import Sequence as SequenceType

from ._api import RequestBuilder, decode_json, decode_object, normalize_base_url, stream_url
from ._clock import Clock, SystemClock
from ._exceptions import (
    SequenceConnectionError,
    SequenceError,
    ServerError,
    StreamClosed,
    error_from_response,
)
from ._graph import cross_price, fills_of_graph, node
from ._models import Request, Response
from ._retry import RETRY_STATUSES, RetryPolicy, parse_retry_after
from ._stream import GRACEFUL_CLOSE_CODES, Channels, Stream, channel_list
from ._transports import BaseTransport, HTTPTransport

if TYPE_CHECKING:
    import ssl

JSONObject = Dict[str, Any]


class Sequence:
    """Client for the Sequence market API.

    ``Sequence(api_key, base_url)`` — both fall back to the environment the
    runner injects, ``SEQUENCE_API_KEY`` and ``SEQUENCE_API_URL``.

    Every call returns the server's decoded JSON object and raises a
    ``SequenceError`` subclass on failure. Idempotent calls (every GET, the
    cancel POST, and the graph submit, which carries an ``Idempotency-Key``)
    are retried with exponential backoff and jitter on connection errors,
    429 (honouring ``Retry-After``) and 502/503/504; see ``RetryPolicy``.

    ``timeout`` bounds connecting and each socket read or write, in seconds.
    ``transport`` replaces the network (``MockTransport`` for tests);
    ``clock`` replaces time (sleeps between retries, polling deadlines).
    One client may be shared by threads; it keeps one persistent HTTP/1.1
    connection per concurrent caller. ``close()`` it, or use ``with``.
    """

    def __init__(
        self,
        api_key: Optional[str] = None,
        base_url: Optional[str] = None,
        *,
        timeout: float = 10.0,
        retry: Optional[RetryPolicy] = None,
        transport: Optional[BaseTransport] = None,
        ssl_context: Optional[ssl.SSLContext] = None,
        clock: Optional[Clock] = None,
    ) -> None:
        api_key = api_key or os.environ.get("SEQUENCE_API_KEY") or None
        base_url = base_url or os.environ.get("SEQUENCE_API_URL")
        if not base_url:
            raise SequenceError("no API URL: pass Sequence(base_url=...) or set SEQUENCE_API_URL")
        self.base_url = normalize_base_url(base_url)
        self.timeout = timeout
        self._api_key = api_key
        self._build = RequestBuilder(self.base_url, api_key)
        self._retry = retry or RetryPolicy()
        self._ssl_context = ssl_context
        self._transport = transport or HTTPTransport(timeout=timeout, ssl_context=ssl_context)
        self._clock = clock or SystemClock()
        self._rng = random.Random()

    # -- market API -------------------------------------------------------

    def health(self) -> bool:
        """``True`` if the API answers ``{"ok": true}``.

        ``False`` (not an exception) when it is unreachable or failing (5xx);
        a single attempt, no retries. Needs no API key.
        """
        try:
            response = self._send(self._build.health(), retry=False)
            return decode_object(response).get("ok") is True
        except (SequenceConnectionError, ServerError):
            return False
        except SequenceError as exc:
            if exc.status is not None and 200 <= exc.status < 300:  # 2xx, not JSON
                return False
            raise

    def markets(
        self,
        venue: Optional[str] = None,
        limit: Optional[int] = 50,
        order: Optional[str] = "volume",
        active: Optional[bool] = None,
        expand: Optional[str] = None,
        q: Optional[str] = None,
        cursor: Optional[str] = None,
    ) -> JSONObject:
        """``GET /v1/markets`` → ``{"markets": [...], "next_cursor": ...}``.

        Pass the previous page's ``next_cursor`` as ``cursor`` for the next.
        ``expand="outcomes"`` gives one row per Polymarket outcome.
        """
        return self._call(self._build.markets(venue, limit, order, active, expand, q, cursor))

    def quote(self, symbol: str, depth: int = 1) -> JSONObject:
        """``GET /v1/quotes`` → one book snapshot: ``nbbo``, ``bids``, ``asks``,
        ``tick_size``. Unknown symbol → ``NotFoundError``."""
        return self._call(self._build.quote(symbol, depth))

    def node(
        self,
        node_id: str,
        symbol: str,
        side: str,
        qty: float,
        venue: Optional[str] = None,
        instrument_type: str = "spot",
        limit_price: Optional[float] = None,
        urgency: str = "normal",
        **extra: Any,
    ) -> JSONObject:
        """Build one graph node (a dict). No I/O.

        ``instrument_type="prediction"`` is required for Kalshi and
        Polymarket; ``urgency="high"`` asks the engine to match now.
        """
        return node(
            node_id, symbol, side, qty, venue, instrument_type, limit_price, urgency, **extra
        )

    def graph(
        self,
        nodes: SequenceType[Mapping[str, Any]],
        edges: Optional[Iterable[Mapping[str, Any]]] = None,
        sandbox: Optional[bool] = None,
        *,
        idempotency_key: Optional[str] = None,
    ) -> JSONObject:
        """``POST /v1/graphs`` → ``{"graph_id", "status", "node_count", "edge_count"}``.

        Nodes that are no edge's target get ``activation="root"`` (they fire
        on submit), the others ``"triggered"``. ``sandbox=None`` leaves the
        choice to the server (``seq_test_*`` keys are always sandboxed).

        Sent with an ``Idempotency-Key`` (a fresh UUID4 unless you pass one),
        the same on every retry, so a retried submit never makes a second
        graph. Pass your own stable key to also survive a process restart.
        """
        key = idempotency_key or str(uuid.uuid4())
        return self._call(self._build.submit_graph(nodes, edges, sandbox, key))

    def graph_status(self, graph_id: str) -> JSONObject:
        """``GET /v1/graphs/{graph_id}`` → the graph with per-node state.

        To learn whether an order filled, prefer ``fills()`` or
        ``wait_for_fills()``."""
        return self._call(self._build.graph_status(graph_id))

    def cancel(self, graph_id: str) -> JSONObject:
        """``POST /v1/graphs/{graph_id}/cancel``: cancel every working node."""
        return self._call(self._build.cancel(graph_id))

    def fills(
        self,
        symbol: Optional[str] = None,
        graph_id: Optional[str] = None,
        limit: Optional[int] = 50,
    ) -> JSONObject:
        """``GET /v1/fills`` → ``{"fills": [...]}``, newest first."""
        response = self._send(self._build.fills(symbol, graph_id, limit))
        body = decode_json(response)
        if isinstance(body, list):  # tolerate a server that sends a bare list
            return {"fills": body}
        if isinstance(body, dict):
            return body
        return decode_object(response)  # raises: neither an object nor a list

    def positions(self) -> JSONObject:
        """``GET /v1/positions`` → this client's positions."""
        return self._call(self._build.positions())

    # -- helpers for the common trading pitfalls --------------------------

    def wait_for_fills(
        self,
        graph_id: str,
        symbol: Optional[str] = None,
        timeout: float = 8.0,
        *,
        poll_interval: float = 0.2,
    ) -> List[JSONObject]:
        """Poll ``fills()`` until the graph has fills; return them (newest first).

        Matches on the ``node_order_id`` prefix ``graph:{graph_id}:``, so fills
        from earlier submissions on the same symbol never count. Returns as
        soon as there is at least one fill, or ``[]`` after ``timeout``
        seconds: a resting order is not an error.
        """
        clock = self._clock
        deadline = clock.monotonic() + timeout
        while True:
            page = self.fills(symbol=symbol, graph_id=graph_id, limit=100)
            found = fills_of_graph(page.get("fills") or (), graph_id)
            if found:
                return found
            remaining = deadline - clock.monotonic()
            if remaining <= 0:
                return []
            clock.sleep(min(poll_interval, remaining))

    def tick_size(self, symbol: str) -> float:
        """The symbol's price increment, from its quote."""
        tick = self.quote(symbol, depth=1).get("tick_size")
        if not isinstance(tick, (int, float)) or isinstance(tick, bool) or tick <= 0:
            raise SequenceError(f"the quote for {symbol!r} has no usable tick_size: {tick!r}")
        return float(tick)

    cross_price = staticmethod(cross_price)

    # -- streaming ------------------------------------------------------------

    def stream(
        self,
        channels: Channels,
        *,
        duration_s: Optional[float] = None,
        max_msgs: Optional[int] = None,
        reconnect: bool = True,
        raw: bool = False,
    ) -> Iterator[JSONObject]:
        """Iterate ``{"channel", "data"}`` messages from ``/v1/stream``.

        Stops after ``duration_s`` seconds or ``max_msgs`` messages,
        whichever comes first (``None``: no bound), or when the server closes
        the stream normally. Acks and empty frames are skipped; an error
        message from the server (e.g. an unknown channel) raises
        ``StreamError``. Drops are survived by reconnecting and
        re-subscribing unless ``reconnect=False``. Connects on the first
        ``next()``; the socket is closed when the iteration ends.
        """
        names = channel_list(channels)
        if duration_s is not None and duration_s < 0:
            raise ValueError("duration_s must be >= 0")
        if max_msgs is not None and max_msgs < 0:
            raise ValueError("max_msgs must be >= 0")
        stream = self.open_stream(names, reconnect=reconnect, raw=raw)
        return _bounded(stream, self._clock, duration_s, max_msgs)

    def open_stream(
        self,
        channels: Channels = (),
        *,
        reconnect: bool = True,
        raw: bool = False,
        retry: Optional[RetryPolicy] = None,
        ping_interval: Optional[float] = 20.0,
    ) -> Stream:
        """A ``Stream`` on ``/v1/stream`` with this client's key; no I/O yet."""
        headers = self._build.auth_headers()  # AuthenticationError without a key
        return Stream(
            stream_url(self.base_url),
            channels=channels,
            timeout=self.timeout,
            reconnect=reconnect,
            retry=retry,
            ping_interval=ping_interval,
            raw=raw,
            ssl_context=self._ssl_context,
            headers=headers,
            clock=self._clock,
        )

    # -- lifecycle ------------------------------------------------------------

    def close(self) -> None:
        """Close pooled connections."""
        self._transport.close()

    def __enter__(self) -> Sequence:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Sequence(base_url={self.base_url!r})"

    # -- sending ---------------------------------------------------------------

    def _call(self, request: Request) -> JSONObject:
        return decode_object(self._send(request))

    def _send(self, request: Request, *, retry: bool = True) -> Response:
        """Send with retries; return a 2xx response or raise."""
        policy = self._retry
        max_retries = policy.max_retries if retry and request.idempotent else 0
        attempt = 0
        while True:
            try:
                response = self._transport.handle(request)
            except SequenceConnectionError:
                if attempt >= max_retries:
                    raise
                delay = policy.backoff(attempt, self._rng.random())
            else:
                status = response.status
                if 200 <= status < 300:
                    return response
                retry_after = None
                if status in (429, 503):
                    retry_after = parse_retry_after(response.headers, self._clock.time())
                error = error_from_response(
                    status,
                    response.headers,
                    response.content,
                    reason=response.reason,
                    retry_after=retry_after,
                )
                if status not in RETRY_STATUSES or attempt >= max_retries:
                    raise error
                if retry_after is None:
                    delay = policy.backoff(attempt, self._rng.random())
                elif retry_after > policy.max_retry_after:
                    raise error
                else:
                    delay = retry_after
            attempt += 1
            self._clock.sleep(delay)


def _bounded(
    stream: Stream, clock: Clock, duration_s: Optional[float], max_msgs: Optional[int]
) -> Iterator[JSONObject]:
    deadline = None if duration_s is None else clock.monotonic() + duration_s
    count = 0
    try:
        while max_msgs is None or count < max_msgs:
            timeout = None if deadline is None else deadline - clock.monotonic()
            if timeout is not None and timeout <= 0:
                return
            try:
                message = stream.recv(timeout)
            except StreamClosed as exc:
                if exc.close_code in GRACEFUL_CLOSE_CODES:
                    return
                raise
            if message is not None:
                count += 1
                yield message
    finally:
        stream.close()
