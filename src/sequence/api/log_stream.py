"""The ``logs:<strategy_id>`` channel of ``/v1/stream``: a strategy's log lines, live.

Private to the strategy's client; queued (not conflated) so a reader sees every
line unless it falls more than ``QUEUE`` lines behind (then the hub counts the
drop). Lines are published only while someone is subscribed, so log capture
pays nothing for the feature otherwise.
"""

from __future__ import annotations

from typing import Any

from sequence.api.state import Core
from sequence.store.store import LogColumns

QUEUE = 5000

# What a run-scoped key may subscribe to: market data, and its own strategy's logs.
RUN_KEY_CHANNELS = frozenset({"prices", "book"})


def register(core: Core) -> None:
    market = core.market
    if market is None or not hasattr(market, "hub"):
        return
    from sequence.market.errors import ChannelError
    from sequence.market.hub import ChannelKind

    store = core.store

    def validate(arg: str | None, client_id: str | None) -> None:
        if not arg or client_id is None or store.get_strategy(client_id, arg) is None:
            # 404-like: never confirm another client's strategy exists.
            raise ChannelError(f"logs:{arg}", f"no strategy {arg}", code="not_found")

    market.hub.register(ChannelKind(name="logs", needs_arg=True, validate=validate, snapshot=None,
                                    per_client=True, conflate=False, queue_size=QUEUE), replace=True)

    def guard(kind: str, arg: str | None, principal: Any) -> None:
        sid = getattr(principal, "strategy_id", None)
        if getattr(principal, "run_id", None) is None or kind in RUN_KEY_CHANNELS:
            return
        if kind == "logs":
            if arg != sid:
                raise ChannelError(f"logs:{arg}", f"no strategy {arg}", code="not_found")
            return
        if kind in ("fills", "graphs"):
            return  # delivered scoped to the run key's strategy (Hub.publish scope)
        raise ChannelError(kind if arg is None else f"{kind}:{arg}",
                           f"run-scoped keys cannot subscribe to {kind!r}", code="forbidden")

    market.hub.guard = guard


def publish(core: Core, run: dict[str, Any], cols: LogColumns, start: int = 0) -> None:
    """Call on the event loop after a batch was stored; ``start`` skips lines already published."""
    market = core.market
    if market is None or not hasattr(market, "hub"):
        return
    channel = f"logs:{run['strategy_id']}"
    hub = market.hub
    if not hub.has_subscribers(channel, run["client_id"]):
        return
    for i in range(start, len(cols.lines)):
        hub.publish(channel, {"strategy_id": run["strategy_id"], "run_id": run["run_id"], "seq": cols.first_seq + i,
                              "ts": cols.ts[i], "stream": cols.streams[i], "line": cols.lines[i]},
                    client_id=run["client_id"])
