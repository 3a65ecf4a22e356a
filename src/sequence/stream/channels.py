"""The channels of ``/v1/stream``, declared once.

==============  ===========  ==========  =============================================
channel         argument     private     for a reader that falls behind
==============  ===========  ==========  =============================================
``prices``      symbol       no          conflated: only the newest top of book waits
``book``        symbol       no          conflated: only the newest ten levels wait
``fills``       none         per client  queued (1,000 a channel), overflow counted
``graphs``      none         per client  queued (1,000 a channel), overflow counted
``logs``        strategy id  per client  queued (5,000 a channel), overflow counted
``strategies``  none         per client  queued (1,000 a channel), overflow counted
==============  ===========  ==========  =============================================

Each owner registers its kinds on the hub with its own validator and
snapshot: the market service ``prices`` and ``book``
(:mod:`sequence.market.service`), the graph engine ``fills`` and ``graphs``
(:mod:`sequence.execution.engine`), the API ``logs``
(:mod:`sequence.api.services.logs`) and ``strategies``
(:mod:`sequence.api.services.dashboard`).
"""

from __future__ import annotations

from .hub import ChannelKind, Snapshotter, Validator

PRICES = "prices"
BOOK = "book"
FILLS = "fills"
GRAPHS = "graphs"
LOGS = "logs"
STRATEGIES = "strategies"
#: Lines a ``logs:`` subscriber may fall behind before the hub drops (and counts) them.
LOGS_QUEUE = 5000


def prices(validate: Validator, snapshot: Snapshotter) -> ChannelKind:
    return ChannelKind(PRICES, validate=validate, snapshot=snapshot)


def book(validate: Validator, snapshot: Snapshotter) -> ChannelKind:
    return ChannelKind(BOOK, validate=validate, snapshot=snapshot)


def fills() -> ChannelKind:
    return ChannelKind(FILLS, needs_arg=False, per_client=True, conflate=False)


def graphs() -> ChannelKind:
    return ChannelKind(GRAPHS, needs_arg=False, per_client=True, conflate=False)


def logs(validate: Validator) -> ChannelKind:
    return ChannelKind(LOGS, needs_arg=True, validate=validate, per_client=True, conflate=False,
                       queue_size=LOGS_QUEUE)


def strategies(snapshot: Snapshotter) -> ChannelKind:
    """A client's strategies: all of them on subscribe, then each change of status or run."""
    return ChannelKind(STRATEGIES, needs_arg=False, snapshot=snapshot, per_client=True, conflate=False)
