"""The WebSocket client against a scripted local server (see _wsserver.py)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest

from sequence_markets import (
    AuthenticationError,
    RateLimitError,
    RetryPolicy,
    Sequence,
    SequenceConnectionError,
    Stream,
    StreamClosed,
    StreamError,
    __version__,
)
from sequence_markets._handshake import accept_for

from ._fakes import API_KEY, FakeClock
from ._wsserver import BINARY, CLOSE, CONT, PING, PONG, TEXT, ClientFrame, ServerConn, WSServer

CH = "prices:BTC-USD"
FAST = RetryPolicy(max_retries=3, backoff_base=0.001, backoff_max=0.01)


class RecordingClock:
    """Real time, but sleeps are recorded and skipped (reconnect backoff)."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


def _client(server: WSServer, clock: RecordingClock | None = None) -> Sequence:
    return Sequence(API_KEY, server.base_url, timeout=5.0, clock=clock or RecordingClock())


def _serve_prices(conn: ServerConn, count: int = 1) -> None:
    conn.handshake()
    channels = conn.expect_subscribe()
    conn.ack(channels)
    for i in range(count):
        conn.price(channels[0], 0.1 + i / 100)
    conn.expect_close()
    conn.send_close(1000)


@pytest.fixture
def seq_for() -> Iterator[list[Sequence]]:
    made: list[Sequence] = []
    yield made
    for seq in made:
        seq.close()


def test_stream_handshake_subscribes_and_yields_data_without_acks() -> None:
    with WSServer(_serve_prices) as server:
        seq = _client(server)
        messages = list(seq.stream([CH], max_msgs=1, duration_s=10))
        seq.close()
    assert messages == [{"channel": CH, "data": {"bid": 0.1, "ask": 0.11}}]
    conn = server.conns[0]
    assert conn.request_line == "GET /v1/stream HTTP/1.1"
    assert conn.headers["authorization"] == f"Bearer {API_KEY}"
    assert conn.headers["upgrade"] == "websocket"
    assert conn.headers["sec-websocket-version"] == "13"
    assert conn.headers["host"] == f"127.0.0.1:{server.port}"
    assert conn.headers["user-agent"] == f"sequence-markets/{__version__}"
    subscribe = conn.frames[0]
    assert (subscribe.opcode, subscribe.fin) == (TEXT, True)
    assert json.loads(subscribe.payload) == {"op": "subscribe", "channels": [CH]}
    assert all(frame.masked for frame in conn.frames)  # every client frame is masked
    assert conn.frames[-1].opcode == CLOSE  # and the iteration closed cleanly


def test_client_masks_with_a_fresh_key_per_frame() -> None:
    keys: list[bytes] = []

    def script(conn: ServerConn) -> None:
        conn.handshake()
        for _ in range(3):
            conn.sock.settimeout(5)
            head = conn._read(2)
            assert head[1] & 0x80
            keys.append(conn._read(4))
            conn._read(head[1] & 0x7F)
        conn.send_close(1000)
        conn.expect_close()

    with WSServer(script) as server:
        stream = Stream(server.url, API_KEY)
        with stream:
            stream.subscribe(["a"])
            stream.subscribe(["b"])
            stream.unsubscribe(["a"])
            with pytest.raises(StreamClosed):
                stream.recv(5)
    assert len(set(keys)) == 3


def test_fragmented_text_with_an_interleaved_ping_is_reassembled_and_ponged() -> None:
    message = json.dumps({"channel": CH, "data": {"bid": 0.42, "note": "x" * 300}}).encode()
    pieces = [message[:10], message[10:200], message[200:]]

    def script(conn: ServerConn) -> None:
        conn.handshake()
        conn.ack(conn.expect_subscribe())
        conn.send_frame(TEXT, pieces[0], fin=False)
        conn.send_frame(PING, b"are-you-there")
        conn.send_frame(CONT, pieces[1], fin=False)
        conn.send_frame(PING, b"")
        conn.send_frame(CONT, pieces[2], fin=True)
        pongs: list[ClientFrame] = []
        while len(pongs) < 2:
            frame = conn.recv_frame()
            if frame.opcode == PONG:
                pongs.append(frame)
        assert [p.payload for p in pongs] == [b"are-you-there", b""]
        assert all(p.masked for p in pongs)
        conn.expect_close()
        conn.send_close(1000)

    with WSServer(script) as server:
        seq = _client(server)
        messages = list(seq.stream([CH], max_msgs=1))
        seq.close()
    assert messages == [json.loads(message)]


@pytest.mark.parametrize("size", [200, 70_000], ids=["16-bit-length", "64-bit-length"])
def test_large_messages_use_extended_lengths(size: int) -> None:
    data = {"bid": 0.5, "blob": "y" * size}

    def script(conn: ServerConn) -> None:
        conn.handshake()
        conn.ack(conn.expect_subscribe())
        conn.send_json({"channel": CH, "data": data})
        conn.expect_close()
        conn.send_close(1000)

    with WSServer(script) as server:
        seq = _client(server)
        (message,) = list(seq.stream([CH], max_msgs=1))
        seq.close()
    assert message["data"] == data


def test_abrupt_drop_reconnects_and_resubscribes_every_channel() -> None:
    def first(conn: ServerConn) -> None:
        conn.handshake()
        conn.ack(conn.expect_subscribe())
        conn.price(CH, 0.1)
        conn.abort()

    def second(conn: ServerConn) -> None:
        conn.handshake()
        channels = conn.expect_subscribe()
        assert channels == [CH, "prices:ETH-USD"]
        conn.ack(channels)
        conn.price(CH, 0.2)
        conn.expect_close()
        conn.send_close(1000)

    clock = FakeClock()  # time moves only when the client sleeps: exact backoff values
    with WSServer(first, second) as server:
        seq = Sequence(API_KEY, server.base_url, clock=clock)
        messages = list(seq.stream([CH, "prices:ETH-USD"], max_msgs=2, duration_s=20))
        seq.close()
    assert [m["data"]["bid"] for m in messages] == [0.1, 0.2]
    assert server.connections == 2
    assert len(clock.sleeps) == 1  # one backoff before the reconnect
    assert 0.25 <= clock.sleeps[0] <= 0.5  # first step of the default stream policy


def test_unsubscribed_channels_are_not_resubscribed() -> None:
    def first(conn: ServerConn) -> None:
        conn.handshake()
        assert conn.expect_subscribe() == ["a", "b"]
        assert conn.recv_json() == {"op": "unsubscribe", "channels": ["a"]}
        conn.abort(rst=True)

    def second(conn: ServerConn) -> None:
        conn.handshake()
        assert conn.expect_subscribe() == ["b"]
        conn.price("b", 0.3)
        conn.expect_close()
        conn.send_close(1000)

    with WSServer(first, second) as server:
        stream = Stream(server.url, API_KEY, channels=["a", "b"], retry=FAST)
        with stream:
            stream.unsubscribe("a")
            assert stream.channels == ("b",)
            message = stream.recv(10)
            assert stream.reconnects == 1
        assert message == {"channel": "b", "data": {"bid": 0.3, "ask": 0.31}}


def test_abrupt_drop_without_reconnect_raises_connection_error() -> None:
    def script(conn: ServerConn) -> None:
        conn.handshake()
        conn.expect_subscribe()
        conn.abort()

    with WSServer(script) as server:
        seq = _client(server)
        with pytest.raises(SequenceConnectionError):
            list(seq.stream([CH], reconnect=False, duration_s=10))
        seq.close()
    assert server.connections == 1


def test_server_close_handshake_is_answered_and_ends_the_iteration() -> None:
    replies: list[tuple[int | None, str]] = []

    def script(conn: ServerConn) -> None:
        conn.handshake()
        conn.ack(conn.expect_subscribe())
        conn.price(CH, 0.1)
        conn.send_close(1000, "done")
        replies.append(conn.expect_close())
        conn.expect_eof()

    with WSServer(script) as server:
        seq = _client(server)
        messages = list(seq.stream([CH]))  # no bounds: ends only because the server closed
        seq.close()
    assert len(messages) == 1
    assert replies == [(1000, "")]
    assert server.connections == 1  # 1000 is final: no reconnect


def test_going_away_close_triggers_a_reconnect() -> None:
    def first(conn: ServerConn) -> None:
        conn.handshake()
        conn.expect_subscribe()
        conn.send_close(1012, "restarting")
        assert conn.expect_close()[0] == 1012

    with WSServer(first, _serve_prices) as server:
        stream = Stream(server.url, API_KEY, channels=[CH], retry=FAST)
        with stream:
            assert stream.recv(10) == {"channel": CH, "data": {"bid": 0.1, "ask": 0.11}}
    assert server.connections == 2


def test_policy_violation_close_is_raised_not_retried() -> None:
    def script(conn: ServerConn) -> None:
        conn.handshake()
        conn.expect_subscribe()
        conn.send_close(1008, "key revoked")
        conn.expect_close()

    with WSServer(script) as server:
        seq = _client(server)
        with pytest.raises(StreamClosed) as info:
            list(seq.stream([CH]))
        seq.close()
    assert (info.value.close_code, info.value.close_reason) == (1008, "key revoked")
    assert server.connections == 1


def test_client_close_sends_a_masked_close_frame_and_waits_for_the_reply() -> None:
    seen: list[tuple[int | None, str]] = []

    def script(conn: ServerConn) -> None:
        conn.handshake()
        seen.append(conn.expect_close())
        assert conn.frames[-1].masked
        conn.send_close(1000)
        conn.expect_eof()

    with WSServer(script) as server:
        stream = Stream(server.url, API_KEY).connect()
        assert stream.connected
        stream.close()
        stream.close()  # idempotent
        assert not stream.connected
        with pytest.raises(StreamClosed):
            stream.recv(0.1)
        assert list(stream) == []  # iteration over a closed stream just ends
    assert seen == [(1000, "")]


def test_subscribe_error_raises_stream_error_and_yields_nothing() -> None:
    def script(conn: ServerConn) -> None:
        conn.handshake()
        channels = conn.expect_subscribe()
        conn.send_json(
            {
                "type": "error",
                "code": "unknown_channel",
                "message": "unknown channel 'pricez:X'",
                "channel": channels[0],
            }
        )
        conn.expect_close()
        conn.send_close(1000)

    with WSServer(script) as server:
        seq = _client(server)
        received = []
        with pytest.raises(StreamError) as info:
            for message in seq.stream(["pricez:X"], duration_s=10):
                received.append(message)  # pragma: no cover - nothing is yielded
        seq.close()
    assert received == []
    assert info.value.code == "unknown_channel"
    assert "pricez:X" in info.value.message
    assert info.value.details == {"channel": "pricez:X"}


def test_refused_channel_is_dropped_from_resubscription() -> None:
    def first(conn: ServerConn) -> None:
        conn.handshake()
        conn.expect_subscribe()
        conn.send_json({"type": "error", "message": "bad", "channels": ["bad"]})
        conn.price("good", 1.0)
        conn.abort()

    def second(conn: ServerConn) -> None:
        conn.handshake()
        assert conn.expect_subscribe() == ["good"]
        conn.price("good", 2.0)
        conn.expect_close()
        conn.send_close(1000)

    with (
        WSServer(first, second) as server,
        Stream(server.url, API_KEY, channels=["good", "bad"], retry=FAST) as stream,
    ):
        with pytest.raises(StreamError, match="bad"):
            stream.recv(10)
        assert stream.channels == ("good",)
        assert stream.recv(10)["data"]["bid"] == 1.0  # type: ignore[index]
        assert stream.recv(10)["data"]["bid"] == 2.0  # type: ignore[index]


def test_raw_mode_returns_acks_and_errors_as_messages() -> None:
    def script(conn: ServerConn) -> None:
        conn.handshake()
        channels = conn.expect_subscribe()
        conn.ack(channels)
        conn.send_json({"type": "error", "message": "nope"})
        conn.send_frame(TEXT, b"")
        conn.price(CH, 0.1)
        conn.expect_close()
        conn.send_close(1000)

    with WSServer(script) as server:
        seq = _client(server)
        messages = list(seq.stream([CH], max_msgs=3, raw=True))
        seq.close()
    assert messages == [
        {"type": "subscribed", "channels": [CH]},
        {"type": "error", "message": "nope"},
        {"channel": CH, "data": {"bid": 0.1, "ask": 0.11}},
    ]


def test_empty_frames_welcome_messages_and_binary_json_are_handled() -> None:
    def script(conn: ServerConn) -> None:
        conn.handshake()
        conn.expect_subscribe()
        conn.send_frame(TEXT, b"")
        conn.send_frame(TEXT, b"   ")
        conn.send_json({"type": "welcome", "data": {}})
        conn.send_json({"channel": CH, "data": {}})
        conn.send_frame(BINARY, json.dumps({"channel": CH, "data": {"bid": 1}}).encode())
        conn.expect_close()
        conn.send_close(1000)

    with WSServer(script) as server:
        seq = _client(server)
        assert list(seq.stream([CH], max_msgs=1)) == [{"channel": CH, "data": {"bid": 1}}]
        seq.close()


def test_duration_bounds_a_quiet_stream() -> None:
    def script(conn: ServerConn) -> None:
        conn.handshake()
        conn.ack(conn.expect_subscribe())
        conn.expect_close()
        conn.send_close(1000)

    with WSServer(script) as server:
        seq = _client(server)
        assert list(seq.stream([CH], duration_s=0.2)) == []
        seq.close()


def test_max_msgs_zero_never_connects() -> None:
    with WSServer() as server:
        seq = _client(server)
        assert list(seq.stream([CH], max_msgs=0)) == []
        seq.close()
    assert server.connections == 0


def test_recv_timeout_keeps_a_partial_frame() -> None:
    message = json.dumps({"channel": CH, "data": {"bid": 0.7}}).encode()
    frame = bytes([0x81, len(message)]) + message
    client_timed_out = threading.Event()

    def script(conn: ServerConn) -> None:
        conn.handshake()
        conn.expect_subscribe()
        conn.send_raw(frame[:7])
        assert client_timed_out.wait(10)
        conn.send_raw(frame[7:])
        conn.expect_close()
        conn.send_close(1000)

    with WSServer(script) as server, Stream(server.url, API_KEY, channels=[CH]) as stream:
        assert stream.recv(0.05) is None
        client_timed_out.set()
        assert stream.recv(10) == {"channel": CH, "data": {"bid": 0.7}}


def test_idle_connection_is_kept_alive_with_pings() -> None:
    def script(conn: ServerConn) -> None:
        conn.handshake()
        conn.expect_subscribe()
        frame = conn.recv_frame()
        assert frame.opcode == PING and frame.masked and len(frame.payload) == 4
        conn.send_frame(PONG, frame.payload)
        conn.price(CH, 0.9)
        conn.expect_close()
        conn.send_close(1000)

    with (
        WSServer(script) as server,
        Stream(server.url, API_KEY, channels=[CH], ping_interval=0.05) as stream,
    ):
        assert stream.recv(10) == {"channel": CH, "data": {"bid": 0.9, "ask": 0.91}}


def test_unanswered_keepalive_ping_means_dead_connection_and_a_reconnect() -> None:
    release = threading.Event()

    def silent(conn: ServerConn) -> None:
        conn.handshake()
        conn.expect_subscribe()
        assert conn.recv_frame().opcode == PING  # and never answer it
        assert release.wait(10)

    def second(conn: ServerConn) -> None:
        release.set()
        _serve_prices(conn)

    with (
        WSServer(silent, second) as server,
        Stream(server.url, API_KEY, channels=[CH], ping_interval=0.05, retry=FAST) as stream,
    ):
        assert stream.recv(10) == {"channel": CH, "data": {"bid": 0.1, "ask": 0.11}}
        assert stream.reconnects == 1


def test_gives_up_after_the_retry_budget() -> None:
    def refuse(conn: ServerConn) -> None:
        conn.refuse(503, {"error": {"code": "unavailable", "message": "starting"}})

    with WSServer(refuse, refuse, refuse) as server:
        stream = Stream(
            server.url, API_KEY, channels=[CH], retry=RetryPolicy(max_retries=2, backoff_base=0.001)
        )
        with pytest.raises(Exception) as info:
            stream.recv(10)
        stream.close()
    assert info.value.status == 503  # type: ignore[attr-defined]
    assert server.connections == 3


def test_rate_limited_upgrade_waits_for_retry_after() -> None:
    def limited(conn: ServerConn) -> None:
        conn.refuse(
            429, {"error": {"code": "rate_limited", "message": "slow"}}, "Retry-After: 7\r\n"
        )

    clock = FakeClock()
    with WSServer(limited, _serve_prices) as server:
        stream = Stream(server.url, API_KEY, channels=[CH], clock=clock, retry=FAST)
        with stream:
            assert stream.recv(10) is not None
    assert clock.sleeps == [7.0]


def test_refused_upgrade_maps_the_status_and_is_not_retried() -> None:
    def script(conn: ServerConn) -> None:
        conn.refuse(
            401, {"error": {"code": "unauthorized", "message": "bad key"}}, "X-Request-ID: r-9\r\n"
        )

    with WSServer(script) as server:
        seq = _client(server)
        with pytest.raises(AuthenticationError) as info:
            list(seq.stream([CH]))
        seq.close()
    assert (info.value.status, info.value.code, info.value.request_id) == (
        401,
        "unauthorized",
        "r-9",
    )
    assert server.connections == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"accept": "d3Jvbmc="}, "Sec-WebSocket-Accept"),
        ({"extra": "Sec-WebSocket-Extensions: permessage-deflate\r\n"}, "extension"),
    ],
)
def test_bad_handshake_answers_are_rejected(kwargs: dict[str, str], match: str) -> None:
    def script(conn: ServerConn) -> None:
        conn.handshake(**kwargs)
        conn.expect_eof()

    with WSServer(script) as server, pytest.raises(StreamError, match=match):
        Stream(server.url, API_KEY).connect()


@pytest.mark.parametrize(
    ("send", "close_code"),
    [
        (lambda c: c.send_frame(TEXT, b'{"a": 1}', mask=True), 1002),
        (lambda c: c.send_frame(TEXT, b"{}", rsv=0x40), 1002),
        (lambda c: c.send_frame(0x3, b"{}"), 1002),
        (lambda c: c.send_frame(CONT, b"{}"), 1002),
        (lambda c: c.send_frame(PING, b"x" * 126), 1002),
        (lambda c: c.send_frame(TEXT, b"\xff\xfe"), 1007),
    ],
    ids=["masked", "rsv", "opcode", "orphan-continuation", "long-ping", "bad-utf8"],
)
def test_protocol_violations_close_with_the_right_code(send, close_code: int) -> None:  # type: ignore[no-untyped-def]
    codes: list[int | None] = []

    def script(conn: ServerConn) -> None:
        conn.handshake()
        conn.expect_subscribe()
        send(conn)
        codes.append(conn.expect_close()[0])

    with (
        WSServer(script) as server,
        Stream(server.url, API_KEY, channels=[CH]) as stream,
        pytest.raises(StreamError) as info,
    ):
        stream.recv(10)
    assert info.value.close_code == close_code
    assert codes == [close_code]


def test_non_json_message_is_a_stream_error() -> None:
    def script(conn: ServerConn) -> None:
        conn.handshake()
        conn.expect_subscribe()
        conn.send_frame(TEXT, b"hello")
        conn.send_frame(TEXT, b"[1, 2]")
        conn.expect_close()
        conn.send_close(1000)

    with WSServer(script) as server, Stream(server.url, API_KEY, channels=[CH]) as stream:
        with pytest.raises(StreamError, match="not JSON"):
            stream.recv(10)
        with pytest.raises(StreamError, match="not a JSON object"):
            stream.recv(10)


def test_connect_to_a_closed_port_fails_fast_without_reconnect() -> None:
    with WSServer() as server:
        url = server.url
    with pytest.raises(SequenceConnectionError):
        Stream(url, API_KEY, reconnect=False).connect()


def test_stream_iterates_until_a_graceful_close() -> None:
    with WSServer(lambda c: _serve_prices(c, count=3)) as server:
        stream = Stream(server.url, API_KEY, channels=[CH])
        with stream:
            bids = []
            for message in stream:
                bids.append(message["data"]["bid"])
                if len(bids) == 3:
                    stream.close()
    assert bids == pytest.approx([0.1, 0.11, 0.12])


def test_rate_limit_error_class_for_streams_is_the_http_one() -> None:
    assert issubclass(RateLimitError, Exception)  # a refused upgrade reuses the HTTP error map


@pytest.mark.parametrize("bad", ["", 3, None])
def test_channel_names_are_validated(bad: object) -> None:
    with pytest.raises(ValueError):
        Stream("ws://127.0.0.1:1/v1/stream", channels=[bad])  # type: ignore[list-item]


def test_ws_url_follows_the_base_url_scheme_and_prefix() -> None:
    seq = Sequence(API_KEY, "https://api.example.com/prefix")
    assert seq.open_stream().url == "wss://api.example.com/prefix/v1/stream"
    seq.close()
    seq = Sequence(API_KEY, "http://127.0.0.1:8000")
    assert seq.open_stream().url == "ws://127.0.0.1:8000/v1/stream"
    seq.close()


def test_accept_key_matches_the_rfc_example() -> None:
    assert accept_for("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_a_long_healthy_connection_restores_the_retry_budget() -> None:
    clock = RecordingClock()
    offset = {"s": 0.0}
    clock.monotonic = lambda: time.monotonic() + offset["s"]  # type: ignore[method-assign]

    def quiet_drop(conn: ServerConn) -> None:
        conn.handshake()
        conn.ack(conn.expect_subscribe())  # an ack is not data: no budget reset
        conn.abort()

    def aged_drop(conn: ServerConn) -> None:
        conn.handshake()
        conn.ack(conn.expect_subscribe())
        offset["s"] += 31.0  # this connection "lived" past HEALTHY_AFTER_S
        conn.abort()

    policy = RetryPolicy(max_retries=1, backoff_base=0.001)
    with (
        WSServer(quiet_drop, aged_drop, _serve_prices) as server,
        Stream(server.url, API_KEY, channels=[CH], retry=policy, clock=clock) as stream,
    ):
        assert stream.recv(60) == {"channel": CH, "data": {"bid": 0.1, "ask": 0.11}}
        assert stream.reconnects == 2
    assert server.connections == 3


def test_quiet_connections_that_keep_dropping_exhaust_the_budget() -> None:
    def quiet_drop(conn: ServerConn) -> None:
        conn.handshake()
        conn.ack(conn.expect_subscribe())
        conn.abort()

    policy = RetryPolicy(max_retries=1, backoff_base=0.001)
    with WSServer(quiet_drop, quiet_drop) as server:
        stream = Stream(server.url, API_KEY, channels=[CH], retry=policy)
        with pytest.raises(SequenceConnectionError):
            stream.recv(10)
        stream.close()
    assert server.connections == 2
