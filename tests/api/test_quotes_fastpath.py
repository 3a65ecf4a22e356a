"""GET /v1/quotes answered before the framework (api/fastpath.py) answers exactly as the route.

The fast path takes only the plain case — a cached key, ``symbol`` and an optional
``depth`` in bounds, a ready book — and hands everything else to the route. These
tests run a real coordinator over HTTP and check both halves: the plain case is
served by the fast path with the route's bytes and headers, and every other case
(bad input, unknown symbol, no key, a revoked key) gets the route's answer.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from sequence.api.fastpath import _args
from tests.helpers import LiveServer

SYMBOL = "BTC-USD"


def _fast(server: LiveServer) -> Any:
    return server._server.config.app.quotes_fast_path  # type: ignore[attr-defined]


def _shape(r: httpx.Response) -> tuple[int, set[str], str]:
    return r.status_code, {k for k in r.headers if k not in ("date", "server")}, r.headers["content-type"]


def test_the_plain_case_is_served_before_the_framework_with_the_routes_answer(server: LiveServer) -> None:
    fast = _fast(server)
    assert fast is not None
    server.core.market.pump()  # type: ignore[union-attr]
    with server.client() as c:
        before = fast.served
        by_route = c.get(f"/v1/quotes?symbol={SYMBOL}&depth=3")  # first use of the key: not cached yet
        assert fast.served == before and by_route.status_code == 200
        by_fast = c.get(f"/v1/quotes?symbol={SYMBOL}&depth=3")
        assert fast.served == before + 1
        assert _shape(by_fast) == _shape(by_route)
        assert by_fast.json().keys() == by_route.json().keys() and by_fast.json()["symbol"] == SYMBOL
        assert len(by_fast.json()["bids"]) <= 3
        # The same bytes as the route for the same book (nothing pumped between the two).
        server.core.market.pump()  # type: ignore[union-attr]
        a = c.get(f"/v1/quotes?symbol={SYMBOL}&depth=3")
        b = c.get(f"/v1/quotes?symbol={SYMBOL}&depth=3&depth=3")  # a repeat: the route's turn
        assert fast.served == before + 2
        assert a.content == b.content
        # The request id is echoed, and the metrics count it like the route's.
        r = c.get(f"/v1/quotes?symbol={SYMBOL}", headers={"X-Request-Id": "abc123"})
        assert r.headers["x-request-id"] == "abc123" and fast.served == before + 3
        assert len(r.json()["bids"]) <= 10  # the default depth
        metrics = c.get("/metrics").text
        assert 'method="GET",route="/v1/quotes",status="200"' in metrics


@pytest.mark.parametrize(("query", "status", "field"), [
    ("", 400, "symbol"),
    ("symbol=", 400, "symbol"),
    ("symbol=BTC-USD&depth=abc", 400, "depth"),
    ("symbol=BTC-USD&depth=101", 400, "depth"),
    ("symbol=BTC-USD&depth=-1", 400, "depth"),
    ("symbol=NOPE-NOPE", 404, None),
    ("symbol=BTC%2DUSD", 200, None),  # percent-encoded: parsed by the route
    ("symbol=BTC-USD&depth=", 200, None),  # an empty optional parameter means "not given"
    ("symbol=BTC-USD&extra=1", 200, None),  # unknown parameters are ignored, as by the route
])
def test_everything_else_gets_the_routes_answer(server: LiveServer, query: str, status: int,
                                                 field: str | None) -> None:
    fast = _fast(server)
    with server.client() as c:
        c.get(f"/v1/quotes?symbol={SYMBOL}")  # the key is cached from here on
        before = fast.served
        r = c.get(f"/v1/quotes?{query}")
        assert r.status_code == status, r.text
        if field is not None:
            assert r.json()["error"]["details"]["field"] == field
        assert fast.served == before  # none of these is the plain case


def test_no_key_a_wrong_key_and_a_revoked_key_are_refused(server: LiveServer) -> None:
    fast = _fast(server)
    cid, key = server.new_client("revoked")
    with httpx.Client(base_url=server.url, timeout=30) as raw:
        assert raw.get(f"/v1/quotes?symbol={SYMBOL}").status_code == 401
        assert raw.get(f"/v1/quotes?symbol={SYMBOL}", headers={"Authorization": "Bearer seq_live_nope"}).status_code == 401
    with server.client(key) as c:
        assert c.get(f"/v1/quotes?symbol={SYMBOL}").status_code == 200
        served = fast.served
        assert c.get(f"/v1/quotes?symbol={SYMBOL}").status_code == 200
        assert fast.served == served + 1  # cached: the fast path answers
        key_id = next(k["key_id"] for k in server.core.store.list_api_keys(cid))
        server.core.store.revoke_api_key(cid, key_id)
        server.core.auth.invalidate()  # what DELETE /v1/keys/{id} does
        r = c.get(f"/v1/quotes?symbol={SYMBOL}")
        assert r.status_code == 401 and fast.served == served + 1


@pytest.mark.parametrize(("raw", "expected"), [
    (b"symbol=BTC-USD", ("BTC-USD", 10)),
    (b"symbol=BTC-USD&depth=0", ("BTC-USD", 0)),
    (b"depth=100&symbol=X", ("X", 100)),
    (b"symbol=BTC-USD&depth=101", None),
    (b"symbol=BTC-USD&depth=1000", None),
    (b"symbol=BTC-USD&depth=-1", None),
    (b"symbol=BTC-USD&depth=", None),
    (b"symbol=BTC-USD&symbol=ETH-USD", None),
    (b"symbol=BTC-USD&depth=1&depth=2", None),
    (b"symbol=%42TC", None),
    (b"symbol=a+b", None),
    (b"symbol", None),
    (b"symbol=", None),
    (b"depth=5", None),
    (b"", None),
    (b"symbol=BTC\x01", None),
    (b"symbol=BTC-USD&other=1", None),
])
def test_only_plain_query_strings_are_taken(raw: bytes, expected: tuple[str, int] | None) -> None:
    assert _args(raw) == expected
