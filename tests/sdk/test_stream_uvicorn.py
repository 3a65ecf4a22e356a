"""The stream client against a real ASGI WebSocket server (FastAPI on uvicorn).

The app below speaks API.md's /v1/stream protocol; integration tests against
the real coordinator live with the coordinator.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest

fastapi = pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from fastapi import FastAPI, WebSocket, WebSocketDisconnect  # noqa: E402

from sequence_markets import (  # noqa: E402
    AuthenticationError,
    Sequence,
    Stream,
    StreamError,
)

from ._fakes import API_KEY  # noqa: E402

PING_INTERVAL = 0.05


def _price(channel: str, n: int) -> dict[str, object]:
    symbol = channel.split(":", 1)[1]
    bid = round(0.40 + n / 100, 2)
    return {
        "channel": channel,
        "data": {"symbol": symbol, "bid": bid, "ask": bid + 0.02, "mid": bid + 0.01, "ts": 1.0 + n},
    }


def make_app() -> FastAPI:
    app = FastAPI()

    @app.websocket("/v1/stream")
    async def stream(ws: WebSocket) -> None:
        if ws.headers.get("authorization") != f"Bearer {API_KEY}":
            await ws.close(code=1008)  # before accept: uvicorn answers HTTP 403
            return
        await ws.accept()
        try:
            while True:
                message = await ws.receive_json()
                channels = message.get("channels", [])
                if message.get("op") != "subscribe":
                    continue
                good = [c for c in channels if c.split(":")[0] in ("prices", "slow", "big")]
                for bad in [c for c in channels if c not in good]:
                    await ws.send_json(
                        {
                            "type": "error",
                            "code": "unknown_channel",
                            "message": f"unknown channel {bad!r}",
                            "channel": bad,
                        }
                    )
                if not good:
                    continue
                await ws.send_json({"type": "subscribed", "channels": good})
                for channel in good:
                    kind = channel.split(":")[0]
                    if kind == "slow":
                        await asyncio.sleep(30 * PING_INTERVAL)  # idle across many server pings
                    if kind == "big":
                        await ws.send_json({"channel": channel, "data": {"blob": "z" * 100_000}})
                        continue
                    for n in range(3):
                        await ws.send_json(_price(channel, n))
        except WebSocketDisconnect:
            return

    return app


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        make_app(),
        log_level="warning",
        lifespan="off",
        ws="websockets-sansio",
        ws_ping_interval=PING_INTERVAL,
        ws_ping_timeout=10 * PING_INTERVAL,  # a client that never pongs is dropped mid-idle
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(10)
    sock.close()


def test_stream_yields_snapshots_and_updates_for_each_channel(base_url: str) -> None:
    with Sequence(API_KEY, base_url) as seq:
        messages = list(seq.stream(["prices:KX-YES", "prices:0xabc"], max_msgs=6, duration_s=10))
    assert {m["channel"] for m in messages} == {"prices:KX-YES", "prices:0xabc"}
    assert all(set(m["data"]) == {"symbol", "bid", "ask", "mid", "ts"} for m in messages)
    first = [m for m in messages if m["channel"] == "prices:KX-YES"]
    assert [m["data"]["bid"] for m in first] == [0.40, 0.41, 0.42]


def test_seed_style_consumer_loop(base_url: str) -> None:
    # The seed's loop body, unchanged, over the SDK's stream().
    logged = []
    with Sequence(API_KEY, base_url) as seq:
        for msg in seq.stream(["prices:A", "prices:B"], duration_s=12.0, max_msgs=6):
            ch, data = msg.get("channel") or "", msg.get("data") or {}
            if ch and data:
                logged.append((ch[:60], data.get("bid"), data.get("ask"), data.get("mid")))
    assert len(logged) == 6  # 3 per channel, acks filtered out


def test_server_pings_are_answered_while_idle(base_url: str) -> None:
    # uvicorn pings every PING_INTERVAL and drops a client that does not pong;
    # reconnect=False makes such a drop fail this test.
    with Sequence(API_KEY, base_url) as seq:
        messages = list(seq.stream(["slow:X"], max_msgs=1, reconnect=False, duration_s=10))
    assert messages[0]["channel"] == "slow:X"


def test_large_message_from_a_real_server(base_url: str) -> None:
    with Sequence(API_KEY, base_url) as seq:
        (message,) = list(seq.stream(["big:X"], max_msgs=1, duration_s=10))
    assert len(message["data"]["blob"]) == 100_000


def test_unknown_channel_raises_stream_error(base_url: str) -> None:
    with Sequence(API_KEY, base_url) as seq, pytest.raises(StreamError) as info:
        list(seq.stream(["nope:X"], duration_s=10))
    assert info.value.code == "unknown_channel"


def test_bad_key_is_refused_at_the_upgrade(base_url: str) -> None:
    with Sequence("seq_test_wrong", base_url) as seq, pytest.raises(AuthenticationError) as info:
        list(seq.stream(["prices:X"], duration_s=10))
    assert info.value.status == 403


def test_subscribe_more_channels_on_an_open_stream(base_url: str) -> None:
    with Sequence(API_KEY, base_url) as seq, seq.open_stream(["prices:A"]) as stream:
        assert isinstance(stream, Stream)
        seen = [stream.recv(10) for _ in range(3)]
        stream.subscribe(["prices:B"])
        seen += [stream.recv(10) for _ in range(3)]
    assert [m["channel"] for m in seen if m] == ["prices:A"] * 3 + ["prices:B"] * 3
