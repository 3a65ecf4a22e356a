"""The pub/sub hub: conflation, queues, private channels, caps."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from sequence.stream import ChannelError, ChannelKind, Hub


def make_hub() -> Hub:
    hub = Hub(control_limit=8)

    def validate(arg: str | None, client: str | None) -> None:
        if arg and arg.startswith("bad"):
            raise ChannelError(arg, f"unknown symbol {arg!r}", code="unknown_symbol")

    hub.register(
        ChannelKind("prices", validate=validate, snapshot=lambda arg, client: {"symbol": arg, "v": 0})
    )
    hub.register(ChannelKind("fills", needs_arg=False, per_client=True, conflate=False, queue_size=5))
    hub.register(ChannelKind("logs", per_client=True, conflate=False, queue_size=3))
    return hub


def texts(sub: Any) -> list[dict[str, Any]]:
    return [json.loads(t) for t in sub.drain()]


def test_subscribe_sends_snapshot_then_updates() -> None:
    hub = make_hub()
    sub = hub.open()
    res = hub.subscribe(sub, ["prices:A"])
    assert res.accepted == ["prices:A"] and not res.rejected
    assert texts(sub) == [{"channel": "prices:A", "data": {"symbol": "A", "v": 0}}]
    assert hub.publish("prices:A", {"v": 1}) == 1
    assert hub.publish("prices:B", {"v": 1}) == 0
    assert texts(sub) == [{"channel": "prices:A", "data": {"v": 1}}]


def test_a_subscriber_that_never_reads_keeps_bounded_memory() -> None:
    hub = make_hub()
    slow = hub.open()
    fast = hub.open()
    channels = [f"prices:S{i}" for i in range(50)]
    hub.subscribe(slow, channels)
    hub.subscribe(fast, channels[:1])
    fast.drain()
    for n in range(100_000):
        hub.publish(channels[n % 50], {"n": n})
        if n % 1000 == 0:
            fast.drain()
    assert slow.pending_count <= 50  # one pending message per channel, whatever the backlog
    assert slow.conflated >= 100_000 - 50
    latest = {m["channel"]: m["data"]["n"] for m in texts(slow)}
    assert latest["prices:S0"] == 99_950 and latest["prices:S49"] == 99_999


def test_queued_kinds_drop_oldest_and_count() -> None:
    hub = make_hub()
    sub = hub.open("c1")
    hub.subscribe(sub, ["fills"])
    for n in range(8):
        hub.publish("fills", {"n": n}, client_id="c1")
    assert sub.pending_count == 5 and sub.dropped == 3
    assert [m["data"]["n"] for m in texts(sub)] == [3, 4, 5, 6, 7]


def test_private_channels_reach_only_their_client() -> None:
    hub = make_hub()
    a, b = hub.open("a"), hub.open("b")
    hub.subscribe(a, ["fills", "logs:s1"])
    hub.subscribe(b, ["fills", "logs:s1"])
    assert hub.publish("fills", {"x": 1}, client_id="a") == 1
    assert hub.publish("logs:s1", {"line": "hi"}, client_id="b") == 1
    assert texts(a) == [{"channel": "fills", "data": {"x": 1}}]
    assert texts(b) == [{"channel": "logs:s1", "data": {"line": "hi"}}]
    with pytest.raises(ValueError, match="per-client"):
        hub.publish("fills", {"x": 1})
    with pytest.raises(ValueError, match="unknown channel kind"):
        hub.publish("nope", {})


def test_bad_channels_are_rejected_with_reasons() -> None:
    hub = make_hub()
    sub = hub.open()
    res = hub.subscribe(sub, ["weather:x", "prices:bad1", "prices", "fills:x", 42, "", "prices:ok"])
    codes = {ch: code for ch, code, _ in res.rejected}
    assert codes == {
        "weather:x": "unknown_channel",
        "prices:bad1": "unknown_symbol",
        "prices": "bad_channel",
        "fills:x": "bad_channel",
        "42": "bad_channel",
        "": "bad_channel",
    }
    assert res.accepted == ["prices:ok"]
    assert "prices:<arg>" in next(m for ch, _, m in res.rejected if ch == "weather:x")


def test_subscription_cap() -> None:
    hub = make_hub()
    sub = hub.open(max_channels=10)
    res = hub.subscribe(sub, [f"prices:S{i}" for i in range(10_000)])
    assert len(res.accepted) == 10 and len(res.over_limit) == 9_990
    assert len(sub.channels) == 10 and sub.pending_count == 10
    again = hub.subscribe(sub, ["prices:S3"])  # re-subscribing a held channel is fine
    assert again.accepted == ["prices:S3"] and not again.over_limit
    assert hub.unsubscribe(sub, ["prices:S3", "prices:never"]) == ["prices:S3"]
    assert hub.subscribe(sub, ["prices:new"]).accepted == ["prices:new"]


def test_control_messages_are_bounded_and_come_first() -> None:
    hub = make_hub()
    sub = hub.open()
    hub.subscribe(sub, ["prices:A"])
    for i in range(20):
        sub.notify({"type": "error", "i": i})
    out = texts(sub)
    assert [m.get("i") for m in out[:8]] == list(range(12, 20))
    assert out[-1]["channel"] == "prices:A" and sub.control_dropped == 12


def test_close_detaches_everything() -> None:
    hub = make_hub()
    sub = hub.open("c")
    hub.subscribe(sub, ["prices:A", "fills"])
    assert hub.has_subscribers("prices:A") and hub.has_subscribers("fills", "c")
    hub.close(sub)
    assert not hub.has_subscribers("prices:A") and not hub.has_subscribers("fills", "c")
    assert hub.publish("prices:A", {}) == 0 and hub.stats()["subscriptions"] == 0


def test_registration_rules() -> None:
    hub = make_hub()
    with pytest.raises(ValueError):
        hub.register(ChannelKind("prices"))
    hub.register(ChannelKind("prices"), replace=True)
    with pytest.raises(ValueError):
        hub.register(ChannelKind("a:b"))
    assert hub.kinds == ("fills", "logs", "prices")


def test_one_serialisation_per_publish() -> None:
    hub = make_hub()
    subs = [hub.open() for _ in range(3)]
    for s in subs:
        hub.subscribe(s, ["prices:A"])
        s.drain()
    hub.publish("prices:A", {"v": 1})
    first = subs[0].drain()[0]
    assert all(s.drain()[0] is first for s in subs[1:])


def test_wait_wakes_on_publish() -> None:
    async def main() -> list[str]:
        hub = make_hub()
        sub = hub.open()
        hub.subscribe(sub, ["prices:A"])
        sub.drain()
        waiter = asyncio.ensure_future(sub.wait())
        await asyncio.sleep(0)
        assert not waiter.done()
        hub.publish("prices:A", {"v": 2})
        await asyncio.wait_for(waiter, 1)
        return sub.drain()

    assert json.loads(asyncio.run(main())[0])["data"] == {"v": 2}
