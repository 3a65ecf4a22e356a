"""What goes on the wire for each method, through MockTransport (no I/O)."""

from __future__ import annotations

import json
import uuid

import pytest

from sequence_markets import (
    AuthenticationError,
    Request,
    Response,
    Sequence,
    SequenceError,
    __version__,
)

from ._fakes import API_KEY, BASE_URL, Recorder, client


def test_get_requests_carry_bearer_auth_user_agent_and_accept() -> None:
    rec = Recorder(Response.from_json(200, {"markets": []}))
    with client(rec) as seq:
        seq.markets()
    request = rec.last
    assert request.header("Authorization") == f"Bearer {API_KEY}"
    assert request.header("User-Agent") == f"sequence-markets/{__version__}"
    assert request.header("Accept") == "application/json"
    assert request.content is None


def test_health_is_unauthenticated_get_and_returns_true_on_ok() -> None:
    rec = Recorder(Response.from_json(200, {"ok": True, "version": "0.4.0"}))
    assert client(rec).health() is True
    assert (rec.last.method, rec.last.url) == ("GET", f"{BASE_URL}/v1/health")
    assert rec.last.header("Authorization") is None


def test_health_works_without_an_api_key() -> None:
    rec = Recorder(Response.from_json(200, {"ok": True}))
    assert client(rec, api_key=None).health() is True


@pytest.mark.parametrize(
    "answer",
    [
        Response.from_json(200, {"ok": False}),
        Response.from_json(503, {"error": {"code": "down", "message": "down"}}),
        Response(200, content=b"<html>proxy</html>"),
    ],
)
def test_health_returns_false_when_not_ok(answer: Response) -> None:
    rec = Recorder(answer)
    assert client(rec).health() is False
    assert len(rec.requests) == 1  # a probe: no retries


def test_markets_defaults_send_limit_and_order_only() -> None:
    rec = Recorder(Response.from_json(200, {"markets": [], "next_cursor": None}))
    assert client(rec).markets() == {"markets": [], "next_cursor": None}
    assert rec.last.method == "GET"
    assert rec.last.path == "/v1/markets"
    assert rec.last.params == {"limit": "50", "order": "volume"}


def test_markets_sends_every_filter_with_booleans_as_true_false() -> None:
    rec = Recorder(Response.from_json(200, {"markets": []}))
    seq = client(rec)
    seq.markets(
        venue="polymarket",
        limit=200,
        order="volume",
        active=True,
        expand="outcomes",
        q="world cup",
        cursor="c2",
    )
    assert rec.last.params == {
        "venue": "polymarket",
        "limit": "200",
        "order": "volume",
        "active": "true",
        "expand": "outcomes",
        "q": "world cup",
        "cursor": "c2",
    }
    seq.markets(active=False)
    assert rec.last.params["active"] == "false"
    assert "world+cup" in rec.requests[0].url or "world%20cup" in rec.requests[0].url


def test_quote_sends_symbol_and_depth() -> None:
    rec = Recorder(Response.from_json(200, {"symbol": "0xabc", "nbbo": {}}))
    client(rec).quote("0xabc", depth=3)
    assert rec.last.path == "/v1/quotes"
    assert rec.last.params == {"symbol": "0xabc", "depth": "3"}
    client(rec).quote("BTC-USD")
    assert rec.last.params == {"symbol": "BTC-USD", "depth": "1"}


def test_graph_posts_json_body_with_activation_and_idempotency_key() -> None:
    rec = Recorder(
        Response.from_json(
            200, {"graph_id": "graph_1", "status": "active", "node_count": 2, "edge_count": 1}
        )
    )
    seq = client(rec)
    a = seq.node("a", "BTC-USD", "buy", 1.0, venue="coinbase", limit_price=50000.0)
    b = seq.node("b", "BTC-USD", "sell", 1.0, venue="coinbase")
    resp = seq.graph([a, b], edges=[{"from": "a", "to": "b", "trigger": "filled"}], sandbox=True)
    assert resp["graph_id"] == "graph_1"
    request = rec.last
    assert (request.method, request.url) == ("POST", f"{BASE_URL}/v1/graphs")
    assert request.header("Content-Type") == "application/json"
    assert request.header("Authorization") == f"Bearer {API_KEY}"
    assert uuid.UUID(request.header("Idempotency-Key") or "").version == 4
    assert request.idempotent is True
    body = request.json()
    assert body == {
        "nodes": [
            {
                "node_id": "a",
                "symbol": "BTC-USD",
                "side": "buy",
                "qty": 1.0,
                "venue": "coinbase",
                "instrument_type": "spot",
                "limit_price": 50000.0,
                "urgency": "normal",
                "activation": "root",
            },
            {
                "node_id": "b",
                "symbol": "BTC-USD",
                "side": "sell",
                "qty": 1.0,
                "venue": "coinbase",
                "instrument_type": "spot",
                "urgency": "normal",
                "activation": "triggered",
            },
        ],
        "edges": [{"from": "a", "to": "b", "trigger": "filled"}],
        "sandbox": True,
    }


def test_graph_without_edges_or_sandbox_sends_empty_edges_and_omits_sandbox() -> None:
    rec = Recorder(Response.from_json(200, {"graph_id": "g"}))
    seq = client(rec)
    seq.graph([seq.node("leg", "X", "buy", 1)])
    body = rec.last.json()
    assert body["edges"] == []
    assert "sandbox" not in body
    seq.graph([seq.node("leg", "X", "buy", 1)], edges=[], sandbox=False)
    assert rec.last.json()["sandbox"] is False


def test_each_graph_call_gets_a_fresh_idempotency_key_unless_given() -> None:
    rec = Recorder(Response.from_json(200, {"graph_id": "g"}))
    seq = client(rec)
    node = seq.node("leg", "X", "buy", 1)
    seq.graph([node])
    seq.graph([node])
    seq.graph([node], idempotency_key="run-7:step-3")
    keys = [r.header("Idempotency-Key") for r in rec.requests]
    assert keys[0] != keys[1]
    assert keys[2] == "run-7:step-3"


def test_graph_status_and_cancel_quote_the_id() -> None:
    rec = Recorder(Response.from_json(200, {"graph_id": "g/1", "status": "cancelled"}))
    seq = client(rec)
    seq.graph_status("graph_a/b")
    assert (rec.last.method, rec.last.path) == ("GET", "/v1/graphs/graph_a%2Fb")
    seq.cancel("graph_x")
    assert (rec.last.method, rec.last.path) == ("POST", "/v1/graphs/graph_x/cancel")
    assert rec.last.content is None
    assert rec.last.idempotent is True
    assert rec.last.header("Authorization") == f"Bearer {API_KEY}"


def test_cancel_tolerates_an_empty_body() -> None:
    assert client(Recorder(Response(204))).cancel("g") == {}


def test_fills_sends_filters_and_returns_the_server_dict() -> None:
    page = {"fills": [{"node_order_id": "graph:g:leg:1", "qty_1e8": 100000000}]}
    rec = Recorder(Response.from_json(200, page))
    seq = client(rec)
    assert seq.fills(symbol="X", limit=10) == page
    assert rec.last.path == "/v1/fills"
    assert rec.last.params == {"symbol": "X", "limit": "10"}
    seq.fills(graph_id="g")
    assert rec.last.params == {"graph_id": "g", "limit": "50"}


def test_fills_wraps_a_bare_list_in_the_documented_dict() -> None:
    rec = Recorder(Response.from_json(200, [{"node_order_id": "graph:g:a:1"}]))
    assert client(rec).fills() == {"fills": [{"node_order_id": "graph:g:a:1"}]}


def test_positions_gets_v1_positions() -> None:
    rec = Recorder(Response.from_json(200, {"positions": []}))
    assert client(rec).positions() == {"positions": []}
    assert (rec.last.method, rec.last.path, rec.last.params) == ("GET", "/v1/positions", {})


def test_base_url_prefix_and_trailing_slash_are_kept_and_trimmed() -> None:
    rec = Recorder(Response.from_json(200, {"ok": True}))
    from sequence_markets import MockTransport

    seq = Sequence(API_KEY, "https://example.com/sequence/", transport=MockTransport(rec))
    seq.health()
    assert rec.last.url == "https://example.com/sequence/v1/health"


def test_constructor_falls_back_to_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from sequence_markets import MockTransport

    monkeypatch.setenv("SEQUENCE_API_KEY", "seq_live_env")
    monkeypatch.setenv("SEQUENCE_API_URL", "http://10.0.0.1:8000")
    rec = Recorder(Response.from_json(200, {"markets": []}))
    seq = Sequence(transport=MockTransport(rec))
    assert seq.base_url == "http://10.0.0.1:8000"
    seq.markets()
    assert rec.last.url.startswith("http://10.0.0.1:8000/v1/markets?")
    assert rec.last.header("Authorization") == "Bearer seq_live_env"


def test_positional_arguments_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from sequence_markets import MockTransport

    monkeypatch.setenv("SEQUENCE_API_KEY", "seq_live_env")
    monkeypatch.setenv("SEQUENCE_API_URL", "http://env.invalid")
    rec = Recorder(Response.from_json(200, {}))
    seq = Sequence("seq_live_arg", "http://arg.test", transport=MockTransport(rec))
    seq.positions()
    assert rec.last.url == "http://arg.test/v1/positions"
    assert rec.last.header("Authorization") == "Bearer seq_live_arg"


def test_missing_base_url_is_a_sequence_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEQUENCE_API_URL", raising=False)
    with pytest.raises(SequenceError, match="SEQUENCE_API_URL"):
        Sequence("k")


@pytest.mark.parametrize("bad", ["ftp://x", "api.example.com", "http://h/?q=1", "http://h:port"])
def test_malformed_base_url_is_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        Sequence("k", bad)


def test_missing_api_key_raises_before_sending(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEQUENCE_API_KEY", raising=False)
    rec = Recorder()
    seq = client(rec, api_key=None)
    with pytest.raises(AuthenticationError, match="SEQUENCE_API_KEY"):
        seq.quote("X")
    with pytest.raises(AuthenticationError):
        seq.stream(["prices:X"])
    assert rec.requests == []


def test_repr_does_not_leak_the_key() -> None:
    assert API_KEY not in repr(client(Recorder()))


def test_non_object_json_is_a_sequence_error() -> None:
    with pytest.raises(SequenceError, match="JSON object"):
        client(Recorder(Response.from_json(200, [1, 2]))).quote("X")
    with pytest.raises(SequenceError, match="not valid JSON") as info:
        client(Recorder(Response(200, content=b"{nope"))).quote("X")
    assert info.value.status == 200


def test_request_and_response_helpers() -> None:
    request = Request(
        "POST", "http://h/p?a=1&b=", headers={"X-Y": "z"}, content=json.dumps({"k": 1}).encode()
    )
    assert request.path == "/p"
    assert request.params == {"a": "1", "b": ""}
    assert request.header("x-y") == "z"
    assert request.json() == {"k": 1}
    assert "POST http://h/p" in repr(request)
    response = Response.from_json(201, {"a": 1}, headers={"X-Request-ID": "r"})
    assert response.headers == {"content-type": "application/json", "x-request-id": "r"}
    assert response.json() == {"a": 1}
    assert repr(response) == "<Response 201>"


def test_mock_transport_rejects_a_handler_that_returns_the_wrong_type() -> None:
    from sequence_markets import MockTransport

    seq = Sequence(API_KEY, BASE_URL, transport=MockTransport(lambda r: {"a": 1}))  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="not Response"):
        seq.quote("X")
