"""In-memory stand-ins: a clock, a request recorder and a tiny market API."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sequence_markets import MockTransport, Request, Response, RetryPolicy, Sequence

API_KEY = "seq_test_abc123"
BASE_URL = "http://sequence.test"


class FakeClock:
    """Time that only moves when the SDK sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.epoch = 1_700_000_000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.epoch + self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Recorder:
    """A MockTransport handler that records requests and replays answers.

    Each answer is a Response, an exception to raise, or a callable taking the
    request. The last answer repeats once the queue is down to one.
    """

    def __init__(self, *answers: Response | BaseException | Callable[[Request], Response]):
        self.answers = list(answers) or [Response.from_json(200, {})]
        self.requests: list[Request] = []

    def __call__(self, request: Request) -> Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, BaseException):
            raise answer
        if isinstance(answer, Response):
            return answer
        return answer(request)

    @property
    def last(self) -> Request:
        return self.requests[-1]


def client(
    handler: Callable[[Request], Response],
    *,
    clock: FakeClock | None = None,
    retry: RetryPolicy | None = None,
    api_key: str | None = API_KEY,
) -> Sequence:
    return Sequence(
        api_key,
        BASE_URL,
        transport=MockTransport(handler),
        clock=clock or FakeClock(),
        retry=retry,
    )


class FakeMarket:
    """Just enough of the market API for the seed's examples, as a handler."""

    def __init__(self) -> None:
        self.markets = {
            "kalshi": [
                # One-sided YES book, two-sided NO book: exercises the fallback.
                {
                    "venue": "kalshi",
                    "slug": "KXBTC-100K",
                    "title": "BTC > 100k?",
                    "instrument_type": "prediction",
                    "yes_token_id": "KXBTC-100K-YES",
                    "no_token_id": "KXBTC-100K-NO",
                    "active": True,
                    "volume": 9000,
                    "liquidity": 5000,
                    "tick_size": 0.01,
                },
            ],
            "polymarket": [
                {
                    "venue": "polymarket",
                    "slug": "world-cup-winner-brazil",
                    "outcome_name": "Brazil",
                    "instrument_type": "prediction",
                    "yes_token_id": "0xbrazil",
                    "is_placeholder_outcome": False,
                    "active": True,
                    "volume": 100000,
                    "liquidity": 20000,
                    "tick_size": 0.001,
                },
            ],
        }
        self.books: dict[str, dict[str, Any]] = {
            "KXBTC-100K-YES": {"bid": None, "ask": 0.12, "tick_size": 0.01, "venue": "kalshi"},
            "KXBTC-100K-NO": {"bid": 0.86, "ask": 0.88, "tick_size": 0.01, "venue": "kalshi"},
            "0xbrazil": {"bid": 0.151, "ask": 0.153, "tick_size": 0.001, "venue": "polymarket"},
        }
        self.graphs: dict[str, dict[str, Any]] = {}
        self.graph_keys: dict[str, str] = {}
        self.fills: list[dict[str, Any]] = []
        self.requests: list[Request] = []
        self.fill_on_submit = False

    def __call__(self, request: Request) -> Response:
        self.requests.append(request)
        path, params = request.path, request.params
        if path == "/v1/health":
            return Response.from_json(200, {"ok": True, "version": "0.4.0"})
        if request.header("Authorization") != f"Bearer {API_KEY}":
            return _error(401, "unauthorized", "bad key")
        if path == "/v1/markets":
            rows = self.markets.get(params.get("venue", ""), [])
            return Response.from_json(200, {"markets": rows, "next_cursor": None})
        if path == "/v1/quotes":
            book = self.books.get(params["symbol"])
            if book is None:
                return _error(404, "not_found", "unknown symbol")
            bid, ask = book["bid"], book["ask"]
            mid = None if bid is None or ask is None else round((bid + ask) / 2, 6)
            return Response.from_json(
                200,
                {
                    "symbol": params["symbol"],
                    "venue": book["venue"],
                    "instrument_type": "prediction",
                    "tick_size": book["tick_size"],
                    "ts": 1.0,
                    "nbbo": {"bid": bid, "ask": ask, "mid": mid, "bid_size": 10, "ask_size": 10},
                    "bids": [] if bid is None else [{"price": bid, "size": 10}],
                    "asks": [] if ask is None else [{"price": ask, "size": 10}],
                },
            )
        if path == "/v1/graphs" and request.method == "POST":
            key = request.header("Idempotency-Key") or ""
            if key in self.graph_keys:
                graph = self.graphs[self.graph_keys[key]]
            else:
                body = request.json()
                graph_id = f"graph_{len(self.graphs) + 1}"
                graph = {
                    "graph_id": graph_id,
                    "status": "active",
                    "body": body,
                    "node_count": len(body["nodes"]),
                    "edge_count": len(body["edges"]),
                }
                self.graphs[graph_id] = graph
                self.graph_keys[key] = graph_id
                if self.fill_on_submit:
                    for node in body["nodes"]:
                        self.fills.insert(
                            0,
                            {
                                "node_order_id": f"graph:{graph_id}:{node['node_id']}:1",
                                "graph_id": graph_id,
                                "symbol": node["symbol"],
                                "qty": node["qty"],
                                "qty_1e8": round(node["qty"] * 1e8),
                            },
                        )
            return Response.from_json(
                200, {k: graph[k] for k in ("graph_id", "status", "node_count", "edge_count")}
            )
        if path.startswith("/v1/graphs/"):
            parts = path.split("/")
            found = self.graphs.get(parts[3])
            if found is None:
                return _error(404, "not_found", "no such graph")
            graph = found
            if len(parts) == 5 and parts[4] == "cancel":
                graph["status"] = "cancelled"
            return Response.from_json(
                200, {"graph_id": graph["graph_id"], "status": graph["status"]}
            )
        if path == "/v1/fills":
            rows = [
                f
                for f in self.fills
                if params.get("symbol") in (None, f["symbol"])
                and params.get("graph_id") in (None, f["graph_id"])
            ]
            return Response.from_json(200, {"fills": rows[: int(params.get("limit", 50))]})
        return _error(404, "not_found", f"no route {path}")


def _error(status: int, code: str, message: str) -> Response:
    return Response(
        status,
        headers={"Content-Type": "application/json", "X-Request-ID": "req-1"},
        content=json.dumps({"error": {"code": code, "message": message, "details": {}}}).encode(),
    )
