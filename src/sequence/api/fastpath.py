"""``GET /v1/quotes`` answered before the framework: the API's hottest path.

A cached quote costs a few microseconds; FastAPI's middleware stack and router
cost several times that per request (bench/market_quotes.py). So the
coordinator's app (:class:`CoordinatorApp`) looks at each request first: a
``GET /v1/quotes`` whose bearer key is in the verified-key cache, whose query
string is a plain ``symbol=…&depth=…`` within bounds, and whose book is ready
is answered here — the same bytes the route would send (``quote_json``), the
same headers, the same request id and metrics. Anything else — no or unknown
key, a bad or unusual parameter, an unknown symbol, a live book not fed yet —
goes to the route, which answers it (and its errors) exactly as before. The
fast path never refuses a request itself, so it cannot answer differently
from the route; ``tests/api/test_quotes_fastpath.py`` compares the two.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from sequence.api.auth import bearer
from sequence.market.service import DEFAULT_DEPTH, MAX_DEPTH

if TYPE_CHECKING:
    from prometheus_client import Counter, Histogram

    from sequence.api.auth import Authenticator
    from sequence.market.service import MarketService

PATH = "/v1/quotes"
_JSON = (b"content-type", b"application/json")


def request_id() -> bytes:
    """A new request id: 16 hex digits (``os.urandom``: a quarter of ``uuid4``'s cost)."""
    return os.urandom(8).hex().encode()


class QuotesFastPath:
    def __init__(self, market: MarketService, auth: Authenticator, requests: Counter, latency: Histogram) -> None:
        """``requests`` and ``latency``: the app's request counter and latency histogram
        (``Metrics.requests``/``.latency``), counted as the route's would be."""
        self.market = market
        self.auth = auth
        self._count = requests.labels("GET", PATH, "200")
        self._latency = latency.labels(PATH)
        self.served = 0  # answered here (the rest went to the route)

    async def __call__(self, scope: Scope, send: Send) -> bool:
        """Answer the request if it is the plain, authorised, valid case; False: the route's turn."""
        start = time.perf_counter()
        authorization = rid = None
        for k, v in scope["headers"]:
            if k == b"authorization":
                authorization = v
            elif k == b"x-request-id":
                rid = v[:64]
        if authorization is None:
            return False
        token = bearer(authorization.decode("latin-1"))
        if token is None or self.auth.cached(token) is None:
            return False
        args = _args(scope.get("query_string", b""))
        if args is None:
            return False
        symbol, depth = args
        market = self.market
        try:
            if not market.ensure(symbol):
                return False
            body = market.quote_json(symbol, depth)
        except Exception:  # an unknown symbol and the like: the route says which
            return False
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-length", b"%d" % len(body)), _JSON, (b"x-request-id", rid or request_id())]})
        await send({"type": "http.response.body", "body": body})
        self.served += 1
        self._count.inc()
        self._latency.observe(time.perf_counter() - start)
        return True


def _args(raw: bytes) -> tuple[str, int] | None:
    """``symbol`` and ``depth`` from a plain query string, or None for anything else."""
    if not raw or b"%" in raw or b"+" in raw:
        return None
    symbol: str | None = None
    depth = DEFAULT_DEPTH
    seen_depth = False
    for part in raw.split(b"&"):
        name, eq, value = part.partition(b"=")
        if name == b"symbol" and symbol is None and eq and value:
            symbol = value.decode("latin-1")
        elif name == b"depth" and not seen_depth and value.isdigit() and len(value) <= 3:
            seen_depth = True
            depth = int(value)
            if depth > MAX_DEPTH:
                return None
        else:
            return None  # a repeat, an empty value, another parameter: the route decides
    return (symbol, depth) if symbol is not None and symbol.isprintable() else None


class CoordinatorApp(FastAPI):
    """The coordinator's FastAPI app, with :class:`QuotesFastPath` in front of it."""

    quotes_fast_path: QuotesFastPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast = self.quotes_fast_path
        if (fast is not None and scope["type"] == "http" and scope["path"] == PATH and scope["method"] == "GET"
                and await fast(scope, send)):
            return
        await super().__call__(scope, receive, send)


__all__ = ["CoordinatorApp", "QuotesFastPath", "request_id"]

