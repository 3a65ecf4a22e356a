"""The ``/v1/stream`` hub: channels, subscriptions, fan-out to WebSocket clients.

Below the market and the trading model: the market service publishes
``prices``/``book`` on it, the graph engine ``fills``/``graphs``, the API
``logs``; it imports none of them. The channels are declared in
:mod:`sequence.stream.channels`, the client protocol in
:mod:`sequence.stream.protocol`; the WebSocket endpoint is
:mod:`sequence.api.routes.stream`.
"""

from .errors import ChannelError, StreamError
from .hub import ChannelKind, Hub, Message, SubscribeResult, Subscription

__all__ = [
    "ChannelError",
    "ChannelKind",
    "Hub",
    "Message",
    "StreamError",
    "SubscribeResult",
    "Subscription",
]
