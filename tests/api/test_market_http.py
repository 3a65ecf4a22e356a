"""/v1/markets and /v1/quotes through a real uvicorn server; the error envelope for each error."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from sequence.api.errors import ApiError, from_market
from sequence.market import BadCursor, BadRequest, MarketError, UnknownSymbol
from tests.api.conftest import MarketServer


def error_of(resp: httpx.Response) -> dict[str, Any]:
    body = resp.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]  # type: ignore[no-any-return]


def test_markets_and_quotes_over_http(live_server: MarketServer) -> None:
    with httpx.Client(base_url=live_server.http) as client:
        r = client.get("/v1/markets", params={"venue": "kalshi", "limit": 30, "order": "volume", "active": "true"})
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        body = r.json()
        assert len(body["markets"]) == 30 and body["next_cursor"]
        assert all(m["venue"] == "kalshi" and m["active"] for m in body["markets"])
        nxt = client.get("/v1/markets", params={"venue": "kalshi", "limit": 30, "order": "volume",
                                                "active": "true", "cursor": body["next_cursor"]})
        assert nxt.status_code == 200 and nxt.json()["markets"][0]["slug"] not in {
            m["slug"] for m in body["markets"]
        }
        poly = client.get("/v1/markets", params={"venue": "polymarket", "limit": 200,
                                                 "expand": "outcomes", "active": "1"}).json()
        token = poly["markets"][0]["yes_token_id"]
        q = client.get("/v1/quotes", params={"symbol": token, "depth": 3})
        assert q.status_code == 200
        quote = q.json()
        assert quote["symbol"] == token and len(quote["bids"]) <= 3 and quote["venue"] == "polymarket"
        default = client.get("/v1/quotes", params={"symbol": "BTC-USD"}).json()
        assert len(default["bids"]) == 10


@pytest.mark.parametrize(
    ("path", "params", "status", "code", "field"),
    [
        ("/v1/markets", {"venue": "nyse"}, 400, "bad_request", "venue"),
        ("/v1/markets", {"limit": "0"}, 400, "bad_request", "limit"),
        ("/v1/markets", {"limit": "501"}, 400, "bad_request", "limit"),
        ("/v1/markets", {"limit": "ten"}, 400, "bad_request", "limit"),
        ("/v1/markets", {"order": "random"}, 400, "bad_request", "order"),
        ("/v1/markets", {"active": "maybe"}, 400, "bad_request", "active"),
        ("/v1/markets", {"expand": "all"}, 400, "bad_request", "expand"),
        ("/v1/markets", {"cursor": "not-a-cursor"}, 400, "bad_cursor", "cursor"),
        ("/v1/quotes", {}, 400, "bad_request", "symbol"),
        ("/v1/quotes", {"symbol": "BTC-USD", "depth": "x"}, 400, "bad_request", "depth"),
        ("/v1/quotes", {"symbol": "BTC-USD", "depth": "1000"}, 400, "bad_request", "depth"),
        ("/v1/quotes", {"symbol": "NOPE-USD"}, 404, "not_found", None),
    ],
)
def test_errors_use_the_envelope(
    live_server: MarketServer, path: str, params: dict[str, str], status: int, code: str, field: str | None
) -> None:
    r = httpx.get(live_server.http + path, params=params)
    assert r.status_code == status
    err = error_of(r)
    assert err["code"] == code
    if field:
        assert err["details"]["field"] == field
    else:
        assert err["details"] == {"symbol": "NOPE-USD"}


def test_unauthenticated_requests_are_refused(make_server: Callable[..., MarketServer]) -> None:
    srv = make_server(principal=None)
    r = httpx.get(srv.http + "/v1/quotes", params={"symbol": "BTC-USD"})
    assert r.status_code == 401 and error_of(r)["code"] == "unauthorized"


def test_market_errors_become_api_errors() -> None:
    def parts(e: ApiError) -> tuple[int, str, str, dict[str, Any]]:
        return e.status, e.code, e.message, e.details

    assert parts(from_market(BadRequest("limit", "too big"))) == (400, "bad_request", "too big", {"field": "limit"})
    assert parts(from_market(BadCursor()))[:2] == (400, "bad_cursor")
    assert parts(from_market(UnknownSymbol("X"))) == (404, "not_found", "unknown symbol: 'X'", {"symbol": "X"})
    assert parts(from_market(MarketError("boom")))[:2] == (500, "market_error")
