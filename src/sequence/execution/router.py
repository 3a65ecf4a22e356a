"""Real orders: from the graph engine to the venues and back.

The engine decides *what* to send (a node became active, a graph was
cancelled, the kill switch); the :class:`OrderRouter` does the I/O with the
venue order adapters (:mod:`.venues`) and reports back with
:class:`LiveEvent` s, which the engine applies in its own steps. The engine
writes a node's ``client_order_id`` *before* the router sends it, so after a
crash the order can always be looked up.

Exactly once (see :mod:`.venues.base`): an order whose outcome is unknown
(timeout, dropped connection, 5xx) is looked up by its client order id until
the venue answers; only an order the venue says it never took is sent again,
with the same id. Fills arrive from the venue's user channel and, as a
backstop for anything a reconnect lost, from a REST backfill every
:attr:`OrderRouter.backfill_s` while orders work; the engine deduplicates on
the venue's fill id.

One adapter per (client, venue), made from the client's sealed venue
credentials on first use (``credentials(client_id, venue)``, unsealed in a
thread) and kept while the process lives; each has one listener task on the
venue's user channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

import anyio

from .venues import (
    AuthFailed,
    OrderConfig,
    OrderRejected,
    OrderRequest,
    OrderVenue,
    OutcomeUnknown,
    VenueFill,
    VenueOrder,
    order_venue,
)

log = logging.getLogger("sequence.execution.router")

__all__ = ["Acked", "Ended", "Filled", "LiveEvent", "LiveOrder", "OrderRouter", "Refused"]


@dataclass(frozen=True)
class LiveOrder:
    """What the engine asks the router to send for one node attempt."""

    node_order_id: str
    client_order_id: str
    client_id: str
    venue: str
    symbol: str  # ours (the node's)
    request: OrderRequest


@dataclass(frozen=True)
class Acked:
    """The venue has the order (``status`` open, or filled already)."""

    node_order_id: str
    venue_order_id: str
    status: str


@dataclass(frozen=True)
class Refused:
    """The order does not exist at the venue: rejected (the venue's reason), or never sent
    (no credentials, unreachable)."""

    node_order_id: str
    code: str
    reason: str


@dataclass(frozen=True)
class Ended:
    """The venue ended the order without filling the rest (cancelled, expired, rejected later)."""

    node_order_id: str
    status: Literal["cancelled", "rejected"]
    reason: str


@dataclass(frozen=True)
class Filled:
    node_order_id: str
    fill: VenueFill


LiveEvent = Acked | Refused | Ended | Filled
Sink = Callable[[list[LiveEvent]], None]
Credentials = Callable[[str, str], Mapping[str, str] | None]
Factory = Callable[[Mapping[str, str], OrderConfig], OrderVenue]


@dataclass
class _Session:
    adapter: OrderVenue
    listener: asyncio.Task[None] | None = None
    backfill: asyncio.Task[None] | None = None
    since_ms: int = field(default_factory=lambda: int(time.time() * 1000) - 60_000)


class OrderRouter:
    #: While orders work, fills are also read over REST this often (a backstop for the socket).
    backfill_s: float = 5.0
    #: How long an order whose outcome is unknown is looked up before it is given up as unsent.
    lookup_for_s: float = 30.0
    #: Attempts to send one order (each after the venue said it never took the previous).
    send_attempts: int = 3

    def __init__(self, configs: Mapping[str, OrderConfig], credentials: Credentials, *,
                 factory: Factory | None = None) -> None:
        self.configs = dict(configs)  # venue -> its order endpoints, for the venues traded for real
        self._credentials = credentials
        self._sink: Sink = lambda events: None
        self._factory: Factory = factory or (lambda creds, cfg: order_venue(creds, cfg))
        self._sessions: dict[tuple[str, str], _Session] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._by_coid: dict[str, str] = {}  # client order id -> node order id
        self._by_void: dict[str, str] = {}  # venue order id -> node order id (fills may name only it)
        self._working: dict[tuple[str, str], set[str]] = {}  # (client, venue) -> client order ids working
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Called with (client, venue) when a venue's user channel fails (the adapter gave up on
        #: it): the engine cancels the runs' real orders there over REST (cancel on loss).
        self.on_session_lost: Callable[[str, str], None] | None = None
        self.stats = {"sent": 0, "acked": 0, "refused": 0, "unknown": 0, "fills": 0, "cancels": 0}

    def bind(self, sink: Sink) -> None:
        """Where the router reports (the engine), called on the event loop."""
        self._sink = sink

    def routes(self, venue: str) -> bool:
        """Real orders on *venue* go to the venue (it is live), not to a simulator."""
        return venue in self.configs

    # -- sessions --------------------------------------------------------------------------
    async def session(self, client_id: str, venue: str) -> _Session:
        """The client's adapter for *venue* (made on first use): raises :class:`AuthFailed`
        when the client has no credentials for it."""
        key = (client_id, venue)
        s = self._sessions.get(key)
        if s is not None:
            return s
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            s = self._sessions.get(key)
            if s is None:
                creds = await anyio.to_thread.run_sync(self._credentials, client_id, venue)
                if not creds:
                    raise AuthFailed(f"no {venue} credentials: connect them with `sequence connect {venue}`")
                s = _Session(self._factory(creds, self.configs[venue]))
                s.listener = asyncio.create_task(self._listen(key, s), name=f"orders-{venue}-{client_id}")
                self._sessions[key] = s
        return s

    def track(self, client_id: str, venue: str, client_order_id: str, node_order_id: str) -> None:
        """Route the venue's reports of this order to its node (also after a restart)."""
        self._by_coid[client_order_id] = node_order_id
        working = self._working.setdefault((client_id, venue), set())
        working.add(client_order_id)
        s = self._sessions.get((client_id, venue))
        if len(working) == 1 and s is not None:
            self._spawn(s.adapter.set_working(True))

    def untrack(self, client_id: str, venue: str, client_order_id: str) -> None:
        working = self._working.get((client_id, venue), set())
        if client_order_id in working:
            working.discard(client_order_id)
            s = self._sessions.get((client_id, venue))
            if not working and s is not None:
                self._spawn(s.adapter.set_working(False))

    def _emit(self, events: list[LiveEvent]) -> None:
        if events:
            self._sink(events)

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- orders ----------------------------------------------------------------------------
    def send(self, order: LiveOrder) -> asyncio.Task[Any]:
        """Send *order* in the background; its outcome comes back through the sink."""
        self.track(order.client_id, order.venue, order.client_order_id, order.node_order_id)
        return self._spawn(self._send(order))

    async def _send(self, order: LiveOrder) -> None:
        nid = order.node_order_id
        try:
            s = await self.session(order.client_id, order.venue)
        except AuthFailed as exc:
            self._refuse(order, "no_venue_credentials", str(exc))
            return
        except Exception as exc:  # a broken credential blob, a bad key: the node says why
            self._refuse(order, "venue_credentials_unusable", f"{order.venue} credentials cannot be used: {exc}")
            return
        self._ensure_backfill(order.client_id, order.venue, s)
        await s.adapter.set_working(True)  # idempotent; Polymarket's dead-man switch beats from now
        for _attempt in range(self.send_attempts):
            self.stats["sent"] += 1
            try:
                ack = await s.adapter.place(order.request)
            except OrderRejected as exc:
                self._refuse(order, exc.code, exc.reason)
                return
            except AuthFailed as exc:
                self._refuse(order, "venue_auth_failed", str(exc))
                return
            except OutcomeUnknown as exc:
                self.stats["unknown"] += 1
                log.warning("order %s: outcome unknown (%s); looking it up", order.client_order_id, exc)
                try:
                    found = await self._look_up(s.adapter, order.client_order_id)
                except Exception:
                    # It may be working at the venue: the node stays working (never rejected
                    # while the order might exist); the backfill reports its fills, a cancel
                    # or the kill switch looks it up again.
                    log.error("order %s: the venue does not answer; left working, unconfirmed",
                              order.client_order_id)
                    return
                if found is None:
                    continue  # the venue never took it: the same id again is safe
                ack = found
            except Exception as exc:  # an adapter bug must not leave the node working forever
                log.exception("order %s: unexpected error", order.client_order_id)
                self._refuse(order, "venue_error", f"{order.venue}: {type(exc).__name__}: {exc}")
                return
            self.stats["acked"] += 1
            self._by_void[ack.venue_order_id] = nid
            self._emit([Acked(nid, ack.venue_order_id, ack.status)])
            if ack.status in ("cancelled", "rejected"):
                self._ended(order.client_id, order.venue, order.client_order_id, ack)
            return
        self._refuse(order, "venue_unreachable", f"{order.venue} did not take the order after "
                                                 f"{self.send_attempts} attempts")

    def _refuse(self, order: LiveOrder, code: str, reason: str) -> None:
        self.stats["refused"] += 1
        self.untrack(order.client_id, order.venue, order.client_order_id)
        self._emit([Refused(order.node_order_id, code, reason)])

    async def _look_up(self, adapter: OrderVenue, coid: str) -> VenueOrder | None:
        """Ask the venue about *coid* until it answers (found or not), for up to lookup_for_s."""
        deadline = time.monotonic() + self.lookup_for_s
        delay = 0.2
        while True:
            try:
                return await adapter.lookup(coid)
            except (AuthFailed, OrderRejected):
                raise
            except Exception as exc:  # a read that got no usable answer: ask again
                if time.monotonic() > deadline:
                    raise OutcomeUnknown(f"order {coid} still unknown after {self.lookup_for_s:g}s: {exc}") from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def cancel(self, client_id: str, venue: str, venue_order_id: str | None, client_order_id: str,
               node_order_id: str) -> asyncio.Task[Any]:
        """Cancel in the background; the node ends when the venue confirms (sink)."""
        return self._spawn(self._cancel(client_id, venue, venue_order_id, client_order_id, node_order_id))

    async def _cancel(self, client_id: str, venue: str, venue_order_id: str | None, coid: str,
                      nid: str) -> bool:
        """True when the venue confirmed the order is no longer working."""
        try:
            s = await self.session(client_id, venue)
            if venue_order_id is None:  # sent, not acknowledged yet: find it first
                found = await self._look_up(s.adapter, coid)
                if found is None:
                    self._emit([Ended(nid, "cancelled", "cancelled before the venue took it")])
                    self.untrack(client_id, venue, coid)
                    return True
                venue_order_id = found.venue_order_id
            self.stats["cancels"] += 1
            final = await s.adapter.cancel(venue_order_id)
        except Exception as exc:
            log.warning("cancel of %s at %s failed: %s", coid, venue, exc)
            return False
        if final.status in ("cancelled", "rejected", "filled"):
            self._ended(client_id, venue, coid, final)
            return True
        return False

    def _ended(self, client_id: str, venue: str, coid: str, order: VenueOrder,
               into: list[LiveEvent] | None = None) -> None:
        """The venue says the order is over; its Ended goes to the sink (or into *into*, for one
        batch)."""
        self.untrack(client_id, venue, coid)
        nid = self._by_coid.get(coid)
        if nid is not None and order.status in ("cancelled", "rejected"):
            ev = Ended(nid, order.status, order.reason or order.status)
            if into is None:
                self._emit([ev])
            else:
                into.append(ev)

    async def cancel_all(self, orders: Iterable[tuple[str, str, str | None, str, str]]) -> tuple[list[str], list[str]]:
        """Cancel these (client, venue, venue order id, client order id, node order id) at once —
        one batch per venue account where the venue has batch cancels (the kill switch); returns
        (node order ids confirmed no longer working, those the venue did not confirm)."""
        items = list(orders)
        groups: dict[tuple[str, str], list[tuple[str, str, str | None, str, str]]] = {}
        for o in items:
            groups.setdefault((o[0], o[1]), []).append(o)
        outcome = await asyncio.gather(*(self._cancel_group(key, group) for key, group in groups.items()))
        done = [nid for d, _ in outcome for nid in d]
        failed = [nid for _, f in outcome for nid in f]
        return done, failed

    async def _cancel_group(self, key: tuple[str, str], group: list[tuple[str, str, str | None, str, str]]
                            ) -> tuple[list[str], list[str]]:
        client_id, venue = key
        known = [o for o in group if o[2]]
        unsent = [o for o in group if not o[2]]  # not acknowledged yet: looked up one by one
        done: list[str] = []
        failed: list[str] = []
        if known:
            try:
                s = await self.session(client_id, venue)
                self.stats["cancels"] += len(known)
                answers = await s.adapter.cancel_many([str(o[2]) for o in known])
            except Exception as exc:
                log.warning("kill: batch cancel at %s failed: %s; cancelling one by one", venue, exc)
                unsent = group
            else:
                ended: list[LiveEvent] = []  # one engine step (one commit) for the whole batch
                for o, answer in zip(known, answers, strict=True):
                    if isinstance(answer, VenueOrder) and answer.status in ("cancelled", "filled", "rejected"):
                        final = answer if answer.status != "rejected" else VenueOrder(
                            o[3], answer.venue_order_id, "cancelled", reason=answer.reason)
                        self._ended(client_id, venue, o[3], final, ended)
                        done.append(o[4])
                    else:
                        unsent.append(o)  # unsure: ask again one by one
                self._emit(ended)
        results = await asyncio.gather(*(self._cancel(*o) for o in unsent))
        done += [o[4] for o, ok in zip(unsent, results, strict=True) if ok]
        failed += [o[4] for o, ok in zip(unsent, results, strict=True) if not ok]
        return done, failed

    # -- reports from the venue ----------------------------------------------------------------
    def _on_report(self, client_id: str, venue: str, ev: VenueOrder | VenueFill) -> None:
        coid = ev.client_order_id
        nid = self._by_coid.get(coid) if coid else None
        if nid is None:
            nid = self._by_void.get(ev.venue_order_id)  # a venue whose fills name only its own id
            coid = next((c for c, n in self._by_coid.items() if n == nid), None) if nid else None
        if nid is None:
            return  # not an order of ours (placed elsewhere on the account), or long finished
        if isinstance(ev, VenueFill):
            self.stats["fills"] += 1
            self._emit([Filled(nid, ev)])
        else:
            self._by_void.setdefault(ev.venue_order_id, nid)
            if ev.status in ("cancelled", "rejected"):
                self._ended(client_id, venue, coid or "", ev)

    async def _listen(self, key: tuple[str, str], s: _Session) -> None:
        client_id, venue = key
        delay = 0.5
        while True:
            try:
                async for ev in s.adapter.events():
                    delay = 0.5
                    self._on_report(client_id, venue, ev)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("%s user channel for %s: %s; reconnecting", venue, client_id, exc)
                if self.on_session_lost is not None and self._working.get(key):
                    self.on_session_lost(client_id, venue)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    def _ensure_backfill(self, client_id: str, venue: str, s: _Session) -> None:
        if s.backfill is None or s.backfill.done():
            s.backfill = asyncio.create_task(self._backfill_loop(client_id, venue, s))

    async def backfill(self, client_id: str, venue: str, since_ms: int | None = None) -> int:
        """Read the client's fills at *venue* since *since_ms* and report ours; returns how many."""
        s = await self.session(client_id, venue)
        since = s.since_ms if since_ms is None else since_ms
        fills = await s.adapter.fills(since)
        for f in fills:
            self._on_report(client_id, venue, f)
            s.since_ms = max(s.since_ms, f.ts_ms - 60_000)  # a minute of overlap: late fills
        return len(fills)

    async def _backfill_loop(self, client_id: str, venue: str, s: _Session) -> None:
        while self._working.get((client_id, venue)):
            await asyncio.sleep(self.backfill_s)
            try:
                await self.backfill(client_id, venue)
            except Exception as exc:
                log.warning("fill backfill at %s for %s failed: %s", venue, client_id, exc)

    # -- after a restart -------------------------------------------------------------------------
    async def reconcile(self, orders: Iterable[tuple[LiveOrder | None, str, str, str, str, int]]
                        ) -> list[LiveEvent]:
        """Working orders found in the store after a restart: (the order as sent — None if its
        market is gone —, client, venue, client order id, node order id, sent at ms). Each is
        looked up at its venue and the fills since it was sent are read; the events are
        returned (and not sent to the sink) so the engine applies them before it accepts new
        orders. An order whose venue cannot be reached stays working; the backfill reports its
        fills once the venue answers."""
        events: list[LiveEvent] = []
        by_session: dict[tuple[str, str], list[tuple[LiveOrder | None, str, str, int]]] = {}
        for order, client_id, venue, coid, nid, sent_ms in orders:
            self.track(client_id, venue, coid, nid)
            by_session.setdefault((client_id, venue), []).append((order, coid, nid, sent_ms))
        for (client_id, venue), items in by_session.items():
            try:
                s = await self.session(client_id, venue)
                for order, _coid, _nid, _ in items:
                    if order is not None:
                        await s.adapter.learn(order.request)
                await s.adapter.set_working(True)
                for _order, coid, nid, _ in items:
                    found = await s.adapter.lookup(coid)
                    if found is None:
                        events.append(Refused(nid, "venue_never_received", "the venue has no such order "
                                              "(it was not sent before the restart)"))
                        self.untrack(client_id, venue, coid)
                    else:
                        self._by_void[found.venue_order_id] = nid
                        events.append(Acked(nid, found.venue_order_id, found.status))
                        if found.status in ("cancelled", "rejected"):
                            events.append(Ended(nid, found.status, found.reason or found.status))
                            self.untrack(client_id, venue, coid)
                since = min(sent for _, _, _, sent in items) - 60_000
                s.since_ms = since
                for f in await s.adapter.fills(since):
                    nid2 = self._by_coid.get(f.client_order_id or "") or self._by_void.get(f.venue_order_id)
                    if nid2 is not None:
                        events.append(Filled(nid2, f))
                self._ensure_backfill(client_id, venue, s)
            except Exception as exc:
                log.warning("reconciling %d order(s) at %s for %s failed: %s; the backfill retries",
                            len(items), venue, client_id, exc)
        return events

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for s in self._sessions.values():
            for t in (s.listener, s.backfill):
                if t is not None:
                    t.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await t
            await s.adapter.close()
        self._sessions.clear()


def to_decimal(units: int, scale: int) -> Decimal:
    return Decimal(units) / Decimal(scale)
