"""HTTPTransport against a real local HTTP/1.1 server."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from sequence_markets import (
    HTTPTransport,
    NotFoundError,
    Request,
    Response,
    RetryPolicy,
    Sequence,
    SequenceConnectionError,
    SequenceTimeoutError,
    _transports,
)

from ._fakes import API_KEY, FakeClock, FakeMarket
from ._httpserver import DROP_AFTER, LocalHTTPServer

QUOTE = {"symbol": "X", "tick_size": 0.01, "nbbo": {"bid": 0.4, "ask": 0.41}}


@pytest.fixture
def market() -> Iterator[tuple[LocalHTTPServer, FakeMarket]]:
    fake = FakeMarket()
    with LocalHTTPServer(fake) as server:
        yield server, fake


def test_many_calls_reuse_one_tcp_connection(market: tuple[LocalHTTPServer, FakeMarket]) -> None:
    server, _ = market
    with Sequence(API_KEY, server.base_url) as seq:
        assert seq.health() is True
        for _ in range(25):
            assert seq.quote("KXBTC-100K-NO")["nbbo"]["bid"] == 0.86
        seq.graph([seq.node("leg", "KXBTC-100K-NO", "buy", 1, instrument_type="prediction")])
        seq.fills(symbol="KXBTC-100K-NO")
    assert len(server.requests) == 28
    assert server.connections == 1


def test_requests_arrive_with_the_documented_headers(
    market: tuple[LocalHTTPServer, FakeMarket],
) -> None:
    server, _ = market
    with Sequence(API_KEY, server.base_url) as seq:
        seq.graph([seq.node("leg", "X", "buy", 1)])
        seq.cancel("graph_1")
    post, cancel = server.requests
    assert post.header("Authorization") == f"Bearer {API_KEY}"
    assert post.header("Idempotency-Key")
    assert post.header("Content-Type") == "application/json"
    assert post.header("Connection") in (None, "keep-alive")  # HTTP/1.1 default
    assert post.json()["nodes"][0]["activation"] == "root"
    assert cancel.header("Content-Length") == "0"


def test_errors_from_a_real_server_are_mapped(market: tuple[LocalHTTPServer, FakeMarket]) -> None:
    server, _ = market
    with Sequence(API_KEY, server.base_url) as seq:
        with pytest.raises(NotFoundError) as info:
            seq.quote("nope")
        assert info.value.request_id == "req-1"
        assert seq.quote("0xbrazil")["tick_size"] == 0.001  # the connection survives
    assert server.connections == 1


def test_server_closing_an_idle_connection_is_survived() -> None:
    calls = {"n": 0}

    def handler(request: Request) -> Response:
        calls["n"] += 1
        headers = {DROP_AFTER: "1"} if calls["n"] == 2 else {}
        return Response.from_json(200, QUOTE, headers=headers)

    with LocalHTTPServer(handler) as server, Sequence(API_KEY, server.base_url) as seq:
        for _ in range(5):
            seq.quote("X")
    assert calls["n"] == 5
    assert server.connections == 2


def test_connection_close_header_is_obeyed() -> None:
    def handler(request: Request) -> Response:
        return Response.from_json(200, QUOTE, headers={"Connection": "close"})

    with LocalHTTPServer(handler) as server, Sequence(API_KEY, server.base_url) as seq:
        for _ in range(3):
            seq.quote("X")
    assert server.connections == 3


def test_a_dead_connection_missed_by_the_idle_check_is_retried_once_at_no_cost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Simulate the race where the server closes just after the idle check.
    monkeypatch.setattr(_transports, "_is_dropped", lambda conn: False)
    calls = {"n": 0}

    def handler(request: Request) -> Response:
        calls["n"] += 1
        return Response.from_json(200, QUOTE, headers={DROP_AFTER: "1"})

    clock = FakeClock()
    with LocalHTTPServer(handler) as server, Sequence(API_KEY, server.base_url, clock=clock) as seq:
        for _ in range(3):
            seq.quote("X")
    assert calls["n"] == 3
    assert server.connections == 3
    assert clock.sleeps == []  # handled inside the transport, no backoff


def test_connection_refused_is_a_connection_error_after_retries() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    clock = FakeClock()
    with Sequence(
        API_KEY, f"http://127.0.0.1:{port}", clock=clock, retry=RetryPolicy(max_retries=2)
    ) as seq:
        with pytest.raises(SequenceConnectionError) as info:
            seq.quote("X")
        assert isinstance(info.value.__cause__, ConnectionRefusedError)
        assert seq.health() is False
    assert len(clock.sleeps) == 2


def test_a_silent_server_times_out() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept)
    thread.start()
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with (
            Sequence(API_KEY, url, timeout=0.2, retry=RetryPolicy(max_retries=0)) as seq,
            pytest.raises(SequenceTimeoutError),
        ):
            seq.quote("X")
    finally:
        stop.set()
        thread.join()
        for sock in accepted:
            sock.close()
        listener.close()


def test_server_errors_are_retried_over_the_same_connection() -> None:
    calls = {"n": 0}

    def handler(request: Request) -> Response:
        calls["n"] += 1
        if calls["n"] < 3:
            return Response.from_json(
                503, {"error": {"code": "busy", "message": "m"}}, headers={"Retry-After": "0"}
            )
        return Response.from_json(200, QUOTE)

    clock = FakeClock()
    with LocalHTTPServer(handler) as server, Sequence(API_KEY, server.base_url, clock=clock) as seq:
        assert seq.quote("X") == QUOTE
    assert clock.sleeps == [0.0, 0.0]
    assert server.connections == 1


def test_threads_sharing_a_client_each_get_a_connection() -> None:
    def handler(request: Request) -> Response:
        return Response.from_json(200, QUOTE)

    errors: list[BaseException] = []
    with LocalHTTPServer(handler) as server, Sequence(API_KEY, server.base_url) as seq:

        def work() -> None:
            try:
                for _ in range(20):
                    assert seq.quote("X") == QUOTE
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    assert len(server.requests) == 80
    assert server.connections <= 4


def test_closed_transport_refuses_requests() -> None:
    transport = HTTPTransport()
    transport.close()
    with pytest.raises(SequenceConnectionError, match="closed"):
        transport.handle(Request("GET", "http://127.0.0.1:1/v1/health"))


def test_transport_rejects_non_http_urls() -> None:
    with HTTPTransport() as transport, pytest.raises(ValueError):
        transport.handle(Request("GET", "ws://127.0.0.1:1/v1/stream"))
