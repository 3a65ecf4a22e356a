"""Publish/subscribe for the ``/v1/stream`` WebSocket.

Channels are strings ``kind`` or ``kind:arg`` (``prices:BTC-USD``, ``fills``,
``logs:<strategy_id>``). Each *kind* is registered once with a
:class:`ChannelKind` that says how to validate the argument, how to produce
the snapshot sent on subscribe, whether the channel is private to one client,
and how to buffer it for a slow reader:

* **conflating** kinds (``prices``, ``book``) keep only the latest message per
  channel for each subscriber — a reader that falls behind skips to the newest
  state, and its memory is bounded by the number of channels it holds;
* **queued** kinds (``fills``, ``logs``) keep up to ``queue_size`` messages
  per channel and count what they drop when that overflows.

A :class:`Subscription` is one consumer (one WebSocket). It holds at most
``max_channels`` channels, a bounded deque of control messages, and its
pending data; :meth:`Subscription.wait` / :meth:`Subscription.drain` hand
ready-to-send JSON text to the writer. Each published message is serialised
once, however many subscribers it reaches.

Private kinds (``per_client=True``) are keyed by ``(channel, client_id)``:
``publish("fills", data, client_id="c1")`` reaches only client ``c1``'s
subscriptions to ``fills``.

Everything here runs on the event loop thread; from another thread use
``loop.call_soon_threadsafe(hub.publish, ...)``.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import count
from typing import Any

from sequence.echo import shown

from .errors import ChannelError

#: ``validate(arg, client_id)`` raises :class:`ChannelError`; ``snapshot(arg, client_id)``
#: returns the data to send on subscribe, or ``None`` for nothing.
Validator = Callable[[str | None, str | None], None]
Snapshotter = Callable[[str | None, str | None], Any]

MAX_CHANNEL_LENGTH = 512


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


#: ``Hub.publish(scope=…)`` not given: the message is for every subscriber of the channel.
UNSCOPED: Any = object()


@dataclass(frozen=True, slots=True)
class ChannelKind:
    name: str
    #: ``True``: ``kind:arg`` required; ``False``: bare ``kind`` only; ``None``: either.
    needs_arg: bool | None = True
    validate: Validator | None = None
    snapshot: Snapshotter | None = None
    per_client: bool = False
    conflate: bool = True
    queue_size: int = 1000


@dataclass(slots=True)
class SubscribeResult:
    accepted: list[str] = field(default_factory=list)
    #: ``(channel, code, message)``
    rejected: list[tuple[str, str, str]] = field(default_factory=list)
    over_limit: list[str] = field(default_factory=list)


class Message:
    """One published update, serialised lazily and at most once."""

    __slots__ = ("_text", "channel", "data")

    def __init__(self, channel: str, data: Any) -> None:
        self.channel = channel
        self.data = data
        self._text: str | None = None

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = _dumps({"channel": self.channel, "data": self.data})
        return self._text


_Key = tuple[str, str | None]


class Subscription:
    """One consumer's channels and pending messages. Create with :meth:`Hub.open`."""

    __slots__ = (
        "_control",
        "_event",
        "_pending",
        "channels",
        "client_id",
        "closed",
        "conflated",
        "control_dropped",
        "delivered",
        "dropped",
        "id",
        "max_channels",
        "principal",
    )

    def __init__(self, sub_id: int, client_id: str | None, max_channels: int, control_limit: int,
                 principal: Any = None):
        self.id = sub_id
        self.client_id = client_id
        self.principal = principal  # opaque here: for Hub.guard
        self.max_channels = max_channels
        self.channels: dict[str, _Key] = {}
        self._pending: dict[str, Message | deque[Message]] = {}
        self._control: deque[str] = deque(maxlen=control_limit)
        self._event = asyncio.Event()
        self.closed = False
        self.conflated = 0  # messages replaced by a newer one before delivery
        self.dropped = 0  # messages lost to a full queue
        self.control_dropped = 0
        self.delivered = 0

    def __repr__(self) -> str:
        return f"Subscription(id={self.id}, client={self.client_id!r}, channels={len(self.channels)})"

    @property
    def pending_count(self) -> int:
        """Messages waiting to be drained (control + data)."""
        n = len(self._control)
        for v in self._pending.values():
            n += len(v) if isinstance(v, deque) else 1
        return n

    def notify(self, message: dict[str, Any]) -> None:
        """Queue a control message (``subscribed``, ``error``, ...); sent before pending data."""
        if len(self._control) == self._control.maxlen:
            self.control_dropped += 1
        # ASCII: a control message may echo what the client sent (a lone surrogate in a channel
        # name made the frame unencodable and killed the connection's writer).
        self._control.append(json.dumps(message, separators=(",", ":"), ensure_ascii=True, allow_nan=False))
        self._event.set()

    def offer(self, msg: Message, conflate: bool, queue_size: int) -> None:
        if self.closed:
            return
        pending = self._pending
        if conflate:
            if msg.channel in pending:
                self.conflated += 1
            pending[msg.channel] = msg
        else:
            q = pending.get(msg.channel)
            if not isinstance(q, deque):
                q = pending[msg.channel] = deque(maxlen=queue_size)
            if len(q) == q.maxlen:
                self.dropped += 1
            q.append(msg)
        self._event.set()

    def drain(self) -> list[str]:
        """Everything ready to send, as JSON text: control messages first, then data."""
        out = list(self._control)
        self._control.clear()
        for v in self._pending.values():
            if isinstance(v, deque):
                out.extend(m.text for m in v)
            else:
                out.append(v.text)
        self._pending.clear()
        self._event.clear()
        self.delivered += len(out)
        return out

    async def wait(self) -> None:
        """Return once :meth:`drain` has something (or the subscription is closed)."""
        await self._event.wait()

    def _forget(self, channel: str) -> None:
        self.channels.pop(channel, None)
        self._pending.pop(channel, None)


class Hub:
    """Channel registry and fan-out. See the module docstring."""

    def __init__(self, *, control_limit: int = 64) -> None:
        self._kinds: dict[str, ChannelKind] = {}
        self._subs: dict[_Key, dict[Subscription, None]] = {}
        self._ids = count(1)
        self._open: dict[int, Subscription] = {}
        self._control_limit = control_limit
        #: ``guard(kind_name, arg, principal)`` runs before a kind's validator and raises
        #: :class:`ChannelError` to refuse (the coordinator limits run-scoped keys with it).
        self.guard: Callable[[str, str | None, Any], None] | None = None

    # -- registry ---------------------------------------------------------------
    def register(self, kind: ChannelKind, *, replace: bool = False) -> None:
        if ":" in kind.name or not kind.name:
            raise ValueError(f"bad channel kind name {kind.name!r}")
        if kind.name in self._kinds and not replace:
            raise ValueError(f"channel kind {kind.name!r} is already registered")
        self._kinds[kind.name] = kind

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(sorted(self._kinds))

    def parse(self, channel: str) -> tuple[ChannelKind, str | None]:
        """Split and check a channel name; raises :class:`ChannelError`."""
        if not isinstance(channel, str) or not channel or len(channel) > MAX_CHANNEL_LENGTH:
            raise ChannelError(str(channel)[:80], "channel names are non-empty strings", code="bad_channel")
        name, sep, arg = channel.partition(":")
        kind = self._kinds.get(name)
        if kind is None:
            known = ", ".join(f"{k}:<arg>" if self._kinds[k].needs_arg else k for k in self.kinds)
            raise ChannelError(
                channel, f"unknown channel {shown(channel)}; known channels: {known}", code="unknown_channel"
            )
        if sep and kind.needs_arg is False:
            raise ChannelError(channel, f"channel {name!r} takes no argument", code="bad_channel")
        if not arg and kind.needs_arg:
            raise ChannelError(channel, f"channel {name!r} needs an argument: {name}:<arg>", code="bad_channel")
        return kind, (arg if sep else None)

    # -- subscriptions -------------------------------------------------------------
    def open(self, client_id: str | None = None, *, max_channels: int = 200, principal: Any = None) -> Subscription:
        sub = Subscription(next(self._ids), client_id, max_channels, self._control_limit, principal)
        self._open[sub.id] = sub
        return sub

    def open_count(self, client_id: str | None) -> int:
        """How many connections *client_id* has open."""
        return sum(1 for sub in self._open.values() if sub.client_id == client_id)

    def close(self, sub: Subscription) -> None:
        for channel, key in list(sub.channels.items()):
            self._detach(sub, key)
            sub._forget(channel)
        sub.closed = True
        sub._event.set()
        self._open.pop(sub.id, None)

    def subscribe(self, sub: Subscription, channels: Iterable[Any]) -> SubscribeResult:
        """Subscribe ``sub`` to ``channels``; snapshots are queued for the accepted ones.

        Already-held channels are accepted again (and get a fresh snapshot).
        Channels beyond ``sub.max_channels`` land in ``over_limit``.
        """
        res = SubscribeResult()
        for channel in channels:
            try:
                kind, arg = self.parse(channel)
                if self.guard is not None:
                    self.guard(kind.name, arg, sub.principal)
                if kind.validate is not None:
                    kind.validate(arg, sub.client_id)
            except ChannelError as exc:
                name = channel if isinstance(channel, str) else repr(channel)
                res.rejected.append((name[:MAX_CHANNEL_LENGTH], exc.code, exc.message))
                continue
            if channel not in sub.channels:
                if len(sub.channels) >= sub.max_channels:
                    res.over_limit.append(channel)
                    continue
                key: _Key = (channel, sub.client_id if kind.per_client else None)
                sub.channels[channel] = key
                self._subs.setdefault(key, {})[sub] = None
            res.accepted.append(channel)
            if kind.snapshot is not None:
                data = kind.snapshot(arg, sub.client_id)
                if data is not None:
                    sub.offer(Message(channel, data), kind.conflate, kind.queue_size)
        return res

    def unsubscribe(self, sub: Subscription, channels: Iterable[Any]) -> list[str]:
        removed = []
        for channel in channels:
            if not isinstance(channel, str):
                continue
            key = sub.channels.get(channel)
            if key is None:
                continue
            self._detach(sub, key)
            sub._forget(channel)
            removed.append(channel)
        return removed

    def _detach(self, sub: Subscription, key: _Key) -> None:
        subs = self._subs.get(key)
        if subs is not None:
            subs.pop(sub, None)
            if not subs:
                del self._subs[key]

    # -- publishing -----------------------------------------------------------------
    def has_subscribers(self, channel: str, client_id: str | None = None) -> bool:
        """Whether anyone holds ``channel`` (for private kinds pass the client)."""
        return (channel, client_id) in self._subs

    def publish(self, channel: str, data: Any, *, client_id: str | None = None,
                scope: str | object | None = UNSCOPED) -> int:
        """Send ``data`` on ``channel`` (to ``client_id``'s subscribers only, for private kinds).

        *scope*, when given, narrows the message to a strategy: a subscription
        whose principal is bound to a strategy (a run-scoped key:
        ``principal.strategy_id``) gets it only when *scope* is that strategy
        (``None``: the client's own activity, no strategy's); other
        subscriptions of the client get every message. Without *scope* (market
        data, a strategy's own log channel) every subscriber gets it. Returns
        the number of subscriptions reached. Cheap when nobody listens.
        """
        name = channel.partition(":")[0]
        kind = self._kinds.get(name)
        if kind is None:
            raise ValueError(f"unknown channel kind {name!r}")
        if kind.per_client and client_id is None:
            raise ValueError(f"channel kind {name!r} is per-client: pass client_id")
        subs = self._subs.get((channel, client_id if kind.per_client else None))
        if not subs:
            return 0
        msg = Message(channel, data)
        conflate, size = kind.conflate, kind.queue_size
        reached = 0
        for sub in subs:
            if scope is not UNSCOPED:
                bound = getattr(sub.principal, "strategy_id", None) if sub.principal is not None else None
                if bound is not None and bound != scope:
                    continue
            sub.offer(msg, conflate, size)
            reached += 1
        return reached

    # -- introspection -----------------------------------------------------------------
    @property
    def subscriptions(self) -> tuple[Subscription, ...]:
        return tuple(self._open.values())

    def stats(self) -> dict[str, int]:
        subs = self._open.values()
        return {
            "subscriptions": len(self._open),
            "channels": len(self._subs),
            "pending": sum(s.pending_count for s in subs),
            "conflated": sum(s.conflated for s in subs),
            "dropped": sum(s.dropped for s in subs),
        }
