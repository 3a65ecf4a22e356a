"""The ``/v1/stream`` client protocol: one text frame in, the control replies out.

The client sends ``{"op": "subscribe", "channels": [...]}`` or
``unsubscribe`` (and ``{"op": "ping"}``, answered ``{"type": "pong"}``); the
server answers ``{"type": "subscribed", "channels": [...]}``, then per channel
the current snapshot and every change as ``{"channel", "data"}``. Anything
wrong — malformed JSON, binary frames, unknown ops, channels or symbols, more
than :data:`MAX_SUBSCRIPTIONS` channels — is answered with ``{"type": "error",
"code", "message", ...}`` and the connection stays open.

No I/O here: the WebSocket endpoint (:mod:`sequence.api.routes.stream`) reads
frames, calls :func:`handle_client_message` and sends what the subscription
drains.
"""

from __future__ import annotations

import json
from typing import Any

from .hub import Hub, Subscription

#: Channels one connection may hold at once.
MAX_SUBSCRIPTIONS = 200
#: How many offending channel names an error message lists.
MAX_LISTED = 50


def error(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """A ``{"type": "error"}`` control message."""
    return {"type": "error", "code": code, "message": message, **extra}


def handle_client_message(hub: Hub, sub: Subscription, text: str) -> list[dict[str, Any]]:
    """Act on one client text frame; returns the control replies (never raises)."""
    try:
        msg = json.loads(text)
    except ValueError as exc:
        return [error("bad_json", f"malformed JSON: {exc}")]
    except RecursionError:  # "[" * 200,000 fits in a frame: it escaped as a traceback, the socket dropped
        return [error("bad_json", "malformed JSON: nested too deeply")]
    if not isinstance(msg, dict):
        return [
            error("bad_message", 'expected a JSON object like {"op": "subscribe", "channels": [...]}')
        ]
    op = msg.get("op")
    if op == "ping":
        return [{"type": "pong"}]
    if op not in ("subscribe", "unsubscribe"):
        return [error("unknown_op", f"unknown op {op!r}; expected subscribe, unsubscribe or ping")]
    channels = msg.get("channels")
    if isinstance(channels, str):
        channels = [channels]
    if not isinstance(channels, list) or not channels:
        return [error("bad_message", '"channels" must be a non-empty list of channel names')]
    # The same name twice is one channel (each was accepted again, with a snapshot: a frame of
    # 900,000 copies held the event loop for seconds and came back as a 15 MB ack).
    seen: set[str] = set()
    unique = []
    for c in channels:
        if isinstance(c, str):
            if c in seen:
                continue
            seen.add(c)
        unique.append(c)
    channels = unique
    if op == "unsubscribe":
        return [{"type": "unsubscribed", "channels": hub.unsubscribe(sub, channels)}]
    # Past what a connection may hold, names are not even looked at: over the limit.
    beyond = [c if isinstance(c, str) else repr(c) for c in channels[MAX_SUBSCRIPTIONS:]]
    res = hub.subscribe(sub, channels[:MAX_SUBSCRIPTIONS])
    res.over_limit.extend(beyond)
    out: list[dict[str, Any]] = []
    if res.accepted:
        out.append({"type": "subscribed", "channels": res.accepted})
    by_code: dict[str, list[tuple[str, str]]] = {}
    for channel, code, message in res.rejected:
        by_code.setdefault(code, []).append((channel, message))
    for code, items in by_code.items():
        message = items[0][1]
        if len(items) > 1:
            message += f" (and {len(items) - 1} more)"
        out.append(error(code, message, channels=[c for c, _ in items[:MAX_LISTED]]))
    if res.over_limit:
        out.append(
            error(
                "subscription_limit",
                f"subscription limit of {sub.max_channels} channels per connection reached; "
                f"{len(res.over_limit)} channel(s) not subscribed",
                channels=res.over_limit[:MAX_LISTED],
                limit=sub.max_channels,
            )
        )
    return out
