"""The ``logs:<strategy_id>`` channel of ``/v1/stream``: a strategy's log lines, live.

Private to the strategy's client; queued (not conflated) so a reader sees every
line unless it falls more than ``LOGS_QUEUE`` lines behind (then the hub counts
the drop; :mod:`sequence.stream.channels`). Lines are published only while
someone is subscribed, so log capture pays nothing for the feature otherwise.

:func:`register` also installs the hub's guard for run-scoped keys: market
data, its own strategy's logs, and its own strategy's fills and graphs.
"""

from __future__ import annotations

from typing import Any

from sequence.api.state import Core
from sequence.store.store import LogColumns
from sequence.stream import ChannelError, Hub, channels

# What a run-scoped key may subscribe to: market data, and its own strategy's logs.
RUN_KEY_CHANNELS = frozenset({channels.PRICES, channels.BOOK})


def register(core: Core, hub: Hub) -> None:
    store = core.store

    def validate(arg: str | None, client_id: str | None) -> None:
        if not arg or client_id is None or store.get_strategy(client_id, arg) is None:
            # 404-like: never confirm another client's strategy exists.
            raise ChannelError(f"logs:{arg}", f"no strategy {arg}", code="not_found")

    hub.register(channels.logs(validate), replace=True)

    def guard(kind: str, arg: str | None, principal: Any) -> None:
        sid = getattr(principal, "strategy_id", None)
        if getattr(principal, "run_id", None) is None or kind in RUN_KEY_CHANNELS:
            return
        if kind == channels.LOGS:
            if arg != sid:
                raise ChannelError(f"logs:{arg}", f"no strategy {arg}", code="not_found")
            return
        if kind in (channels.FILLS, channels.GRAPHS):
            return  # delivered scoped to the run key's strategy (Hub.publish scope)
        raise ChannelError(kind if arg is None else f"{kind}:{arg}",
                           f"run-scoped keys cannot subscribe to {kind!r}", code="forbidden")

    hub.guard = guard


def publish(core: Core, run: dict[str, Any], cols: LogColumns, start: int = 0) -> None:
    """Call on the event loop after a batch was stored; ``start`` skips lines already published."""
    if core.market is None:
        return
    channel = f"{channels.LOGS}:{run['strategy_id']}"
    hub = core.market.hub
    if not hub.has_subscribers(channel, run["client_id"]):
        return
    for i in range(start, len(cols.lines)):
        hub.publish(channel, {"strategy_id": run["strategy_id"], "run_id": run["run_id"], "seq": cols.first_seq + i,
                              "ts": cols.ts[i], "stream": cols.streams[i], "line": cols.lines[i]},
                    client_id=run["client_id"])
