"""A run's log lines: ingest from its runner, pages and follow for clients, the live channel.

* **ingest** (:func:`ingest`): a runner's columnar batch
  (:func:`sequence.protocol.decode_logs`) is stored once — a resent batch
  stores nothing twice — and published to ``logs:<strategy_id>`` subscribers;
* **read** (:func:`page`, :func:`follow`): a page of a run's lines, or an
  NDJSON stream that follows the strategy's runs until it ends for good;
* **the stream channel** (:func:`register`, :func:`publish`): ``logs:<strategy_id>``
  of ``/v1/stream``, private to the strategy's client; queued (not conflated) so
  a reader sees every line unless it falls more than ``LOGS_QUEUE`` lines behind
  (then the hub counts the drop; :mod:`sequence.stream.channels`). Lines are
  published only while someone is subscribed, so log capture pays nothing for
  the feature otherwise. :func:`register` also installs the hub's guard for
  run-scoped keys: market data, its own strategy's logs, and its own
  strategy's fills and graphs.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio

from sequence import protocol
from sequence.api import present
from sequence.api.errors import invalid, invalid_json, not_found
from sequence.api.notify import logs_topic, strategy_topic
from sequence.api.services.deploy import plausible_id, strategy_or_404
from sequence.api.state import Core
from sequence.store.store import LogColumns, Principal
from sequence.stream import ChannelError, Hub, channels

# What a run-scoped key may subscribe to: market data, and its own strategy's logs.
RUN_KEY_CHANNELS = frozenset({channels.PRICES, channels.BOOK})

# -- ingest ------------------------------------------------------------------------------------


def parse(raw: bytes) -> tuple[int, LogColumns]:
    """A runner's batch as ``(epoch, columns)`` ready to store; 400/422 naming the field."""
    try:
        batch = protocol.decode_logs(raw)
    except protocol.BadBatch as exc:
        if exc.not_json:
            raise invalid_json(exc.message, exc.field) from None
        raise invalid(exc.field, exc.message) from None
    if _storable_batch(batch.lines):  # stored as it came: the checked JSON is the chunk's body
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        return batch.epoch, LogColumns(batch.first_seq, batch.ts, batch.streams, batch.lines, batch.partial, text)
    return batch.epoch, LogColumns(batch.first_seq, batch.ts, batch.streams, _storable(batch.lines), batch.partial)


def _storable_batch(lines: list[str]) -> bool:
    """Whether every line is text a database can hold, checked at C speed for the batch:
    no NUL (PostgreSQL text cannot hold it), no lone surrogate (not UTF-8).  For ASCII
    lines, the usual case, this is one join and one memchr."""
    joined = "".join(lines)
    if "\0" in joined:
        return False
    if joined.isascii():
        return True
    try:
        joined.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _storable(lines: list[str]) -> list[str]:
    """Lines a database can hold: NUL and lone surrogates become U+FFFD.  Only called
    for a batch that has one (see _storable_batch)."""
    out = []
    for x in lines:
        x = x.replace("\0", "\ufffd")
        if not x.isascii():
            x = x.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
        out.append(x)
    return out


async def ingest(core: Core, runner_id: str, run_id: str, raw: bytes) -> int:
    """Store a batch of a run's lines; the next ``seq`` the run expects.

    The run must be this runner's, at this epoch, but need not be current: lines
    of a run that ended or was re-queued are history, kept.
    """
    epoch, cols = parse(raw)

    def store() -> tuple[int, dict[str, Any] | None]:  # one thread hop: a run's first line is on the deploy path
        stored = core.store.append_log_columns(run_id, epoch, runner_id, cols)
        return stored, (_run_owner(core, run_id) if cols.lines else None)

    nxt, run = await anyio.to_thread.run_sync(store)
    core.notifier.notify(logs_topic(run_id))
    if run is not None:  # the batch had lines
        # A resent batch (lost response) is stored once; publish it once too.
        start = max(0, run["published"] + 1 - cols.first_seq)
        run["published"] = nxt - 1
        publish(core, run, cols, start)
    return nxt


_OWNERS: dict[str, dict[str, Any]] = {}


def _run_owner(core: Core, run_id: str) -> dict[str, Any] | None:
    hit = _OWNERS.get(run_id)
    if hit is None:
        run = core.store.get_run(run_id)
        if run is None:
            return None
        if len(_OWNERS) > 10_000:
            _OWNERS.clear()
        hit = _OWNERS[run_id] = {"run_id": run_id, "strategy_id": run["strategy_id"],
                                 "client_id": run["client_id"], "published": 0}
    return hit


# -- read ----------------------------------------------------------------------------------------


async def strategy_and_run(core: Core, p: Principal, ident: str, run_id: str | None,
                           ) -> tuple[str, dict[str, Any] | None]:
    """The caller's strategy id and, if ``run_id`` is given, that run of it (404 otherwise)."""
    row = await anyio.to_thread.run_sync(strategy_or_404, core, p, ident)
    sid: str = row["strategy_id"]
    run = None
    if run_id is not None:
        run = await anyio.to_thread.run_sync(core.store.get_run, run_id) if plausible_id(run_id) else None
        if run is None or run["strategy_id"] != sid:
            raise not_found("run")
    return sid, run


async def page(core: Core, sid: str, run: dict[str, Any] | None, after_seq: int, limit: int) -> dict[str, Any]:
    """A page of a run's lines (the latest run's without one).  ``dropped_lines`` counts
    that run's oldest lines removed by log retention (SEQUENCE_LOG_RETENTION_MB)."""
    if run is None:
        rid = await anyio.to_thread.run_sync(core.store.latest_run_id, sid)
        run = await anyio.to_thread.run_sync(core.store.get_run, rid) if rid else None
    rid = run["run_id"] if run else None
    lines = await anyio.to_thread.run_sync(core.store.read_logs, rid, after_seq, limit) if rid else []
    return {"strategy_id": sid, "run_id": rid, "lines": [present.log_line(x) for x in lines],
            "next_seq": lines[-1]["seq"] if lines else after_seq,
            "dropped_lines": int(run["dropped_lines"]) if run else 0}


async def follow(core: Core, sid: str, pinned_run: str | None, after_seq: int,
                 start_run: str | None = None, *,
                 still_allowed: Callable[[], bool] | None = None) -> AsyncIterator[bytes]:
    """Stream a run's lines as NDJSON until it ends for good.

    Without a pinned run, follows the latest run (or *start_run*, from
    ``after_seq``) and moves on to the next one when the strategy restarts; it
    ends when the strategy is stopped, or has failed and will not be restarted.
    With *still_allowed*, it also ends (within a second) once that answers False:
    the caller's key was revoked or its session ended.
    """
    store = core.store
    run_id = pinned_run or start_run
    cursor = after_seq
    while True:
        if still_allowed is not None and not still_allowed():
            return
        topics = [strategy_topic(sid)] + ([logs_topic(run_id)] if run_id else [])
        events = [(tp, core.notifier.waiter(tp)) for tp in topics]
        try:
            if run_id is None:
                run_id = await anyio.to_thread.run_sync(store.latest_run_id, sid)
                if run_id is not None:
                    continue
            else:
                lines = await anyio.to_thread.run_sync(store.read_logs, run_id, cursor, 2000)
                if lines:
                    cursor = lines[-1]["seq"]
                    yield b"".join(json.dumps(present.log_line(x, run_id)).encode() + b"\n" for x in lines)
                    continue
                run = await anyio.to_thread.run_sync(store.get_run, run_id)
                if run is None:
                    return
                if run["ended_at"] is not None:
                    # Drain anything that raced the exit, then decide whether to go on.
                    if await anyio.to_thread.run_sync(store.read_logs, run_id, cursor, 1):
                        continue
                    if pinned_run is not None:
                        return
                    st = await anyio.to_thread.run_sync(store.get_strategy, None, sid)
                    if st is None:
                        return
                    latest = await anyio.to_thread.run_sync(store.latest_run_id, sid)
                    if latest and latest != run_id:
                        run_id, cursor = latest, 0
                        continue
                    if st["status"] == "stopped" or (st["status"] == "failed" and st["desired_state"] != "running"):
                        return
            with anyio.move_on_after(1.0):
                async with anyio.create_task_group() as tg:
                    async def _wait(ev: Any, scope: Any) -> None:
                        await ev.wait()
                        scope.cancel()

                    for _tp, ev in events:
                        tg.start_soon(_wait, ev, tg.cancel_scope)
        finally:
            for tp, ev in events:
                core.notifier.release(tp, ev)


# -- the stream channel ----------------------------------------------------------------------------


def register(core: Core, hub: Hub) -> None:
    """Install the ``logs:`` channel and the run-key guard on the market's hub."""
    store = core.store

    def validate(arg: str | None, client_id: str | None) -> None:
        if not arg or client_id is None or store.get_strategy(client_id, arg) is None:
            # 404-like: never confirm another client's strategy exists.
            raise ChannelError(f"logs:{arg}", f"no strategy {arg}", code="not_found")

    hub.register(channels.logs(validate), replace=True)

    def guard(kind: str, arg: str | None, principal: Any) -> None:
        if not isinstance(principal, Principal) or principal.run_id is None or kind in RUN_KEY_CHANNELS:
            return
        if kind == channels.LOGS:
            if arg != principal.strategy_id:
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
