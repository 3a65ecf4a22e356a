"""The web dashboard's sessions, and the ``strategies`` channel of ``/v1/stream``.

* **Sessions** (:class:`Sessions`): signing in with an API key opens a
  server-side session. The browser gets a random token in an ``HttpOnly``,
  ``SameSite=Strict`` cookie; the key stays in this process's memory (as the
  verified-key cache already holds it) and is never sent back to the browser.
  Each session has its own CSRF token, required (compared in constant time) by
  every state-changing request. A session is exactly as valid as its key: every
  request re-resolves the key through the :class:`~sequence.api.auth.Authenticator`,
  so a revoked key ends its sessions at once. Sessions live in memory: a
  coordinator restart signs everyone out.
* **WebSocket authentication** (:func:`ws_principal`): ``/v1/stream`` takes a
  bearer key as before, or the session cookie — then only when the upgrade's
  ``Origin`` is this coordinator's own (cross-site WebSocket hijacking: a page
  elsewhere cannot ride the cookie).
* **The ``strategies`` channel** (:func:`register`): per client; on subscribe
  the client's strategies, then each change of a strategy's status or run as
  it happens. Changes are noticed through the notifier's ``strategy:<id>``
  topics (deploys, starts, stops, claims, starts and exits of runs, lost
  leases), coalesced for 50 ms, read once and published only when someone of
  that client is subscribed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import anyio
from fastapi import WebSocket

from sequence.api import auth, present
from sequence.api.notify import USAGE
from sequence.api.state import Core
from sequence.store.store import Principal
from sequence.stream import Hub, channels

SESSION_COOKIE = "seq_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
#: A session unused this long is forgotten.
IDLE_SECONDS = 12 * 3600.0
#: And a session this old is forgotten however much it is used: a stolen cookie in a page
#: left open (its stream keeps it busy) is not good for ever.
MAX_AGE_SECONDS = 7 * 24 * 3600.0
#: At most this many sessions are kept (the least recently used go first).
MAX_SESSIONS = 10_000
#: At most this many per client: signing in again and again (10,000 sign-ins took 7 s) pushes
#: out that client's own oldest sessions, never another client's.
MAX_SESSIONS_PER_CLIENT = 100
#: The ``strategies`` snapshot lists at most this many (oldest first).
SNAPSHOT_LIMIT = 2000
#: Changes to one client's strategies are gathered this long before one message goes out.
COALESCE_SECONDS = 0.05


@dataclass(slots=True)
class Session:
    key: str  # the API key: in this process's memory only, never in a page or a cookie
    csrf: str
    created: float
    seen: float
    client_id: str = ""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Sessions:
    """Server-side dashboard sessions, keyed by the SHA-256 of their cookie token."""

    def __init__(self, authenticator: auth.Authenticator, clock: Callable[[], float] = time.monotonic) -> None:
        self._auth = authenticator
        self._clock = clock
        self._by_digest: dict[str, Session] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._by_digest)

    def open(self, key: str, client_id: str = "") -> tuple[str, Session]:
        """A new session for a key already checked (of *client_id*); ``(cookie token, session)``."""
        token = secrets.token_urlsafe(32)
        now = self._clock()
        session = Session(key=key, csrf=secrets.token_urlsafe(32), created=now, seen=now, client_id=client_id)
        with self._lock:
            mine = [d for d, s in self._by_digest.items() if s.client_id == client_id]
            if len(mine) >= MAX_SESSIONS_PER_CLIENT:
                self._by_digest.pop(min(mine, key=lambda d: self._by_digest[d].seen), None)
            elif len(self._by_digest) >= MAX_SESSIONS:
                oldest = min(self._by_digest, key=lambda d: self._by_digest[d].seen)
                self._by_digest.pop(oldest, None)
            self._by_digest[_digest(token)] = session
        return token, session

    def get(self, token: str | None) -> Session | None:
        if not token or len(token) > 200:
            return None
        d = _digest(token)
        now = self._clock()
        with self._lock:
            session = self._by_digest.get(d)
            if session is None:
                return None
            if now - session.seen > IDLE_SECONDS or now - session.created > MAX_AGE_SECONDS:
                self._by_digest.pop(d, None)
                return None
            session.seen = now
        return session

    def close(self, token: str | None) -> None:
        if token:
            with self._lock:
                self._by_digest.pop(_digest(token), None)

    def principal(self, token: str | None) -> tuple[Session, Principal] | None:
        """The session and its key's principal; None (and the session forgotten) when the
        session is unknown or expired, or its key no longer works."""
        session = self.get(token)
        if session is None:
            return None
        p = self._auth.cached(session.key) or self._auth.resolve(session.key)
        if p is None or p.run_id is not None:
            self.close(token)
            return None
        return session, p


def sessions_of(app: Any) -> Sessions:
    """The app's sessions (made on first use)."""
    found: Sessions | None = getattr(app.state, "dashboard_sessions", None)
    if found is None:
        found = app.state.dashboard_sessions = Sessions(auth.authenticator(app))
    return found


def csrf_ok(session: Session, sent: str | None) -> bool:
    """Whether *sent* is the session's CSRF token (constant time)."""
    return bool(sent) and hmac.compare_digest(session.csrf.encode(), str(sent).encode())


def same_origin(origin: str | None, host: str | None) -> bool:
    """Whether an ``Origin`` header names the ``Host`` the request was sent to."""
    if not origin or not host or origin == "null":
        return False
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https", "ws", "wss") and parts.netloc.lower() == host.lower()


def ws_principal(websocket: WebSocket) -> Principal | None:
    """``/v1/stream``'s authenticator: a bearer key (header or ``?token=``), else the
    dashboard's session cookie from a page of this same origin."""
    p = auth.authenticate_websocket(websocket)
    if p is not None:
        return p
    token = websocket.cookies.get(SESSION_COOKIE)
    if not token or not same_origin(websocket.headers.get("origin"), websocket.headers.get("host")):
        return None
    found = sessions_of(websocket.app).principal(token)
    return None if found is None else found[1]


# -- the strategies channel ------------------------------------------------------------------------

_SUMMARY_FIELDS = ("strategy_id", "name", "status", "desired_state", "is_sandbox", "region", "memory_mb",
                   "restart_count", "next_restart_at", "last_exit", "current_run", "created_at", "updated_at")


def summary(row: dict[str, Any], usage: dict[str, Any] | None = None) -> dict[str, Any]:
    """A strategy as the ``strategies`` channel (and the dashboard's table) shows it."""
    full = present.strategy(row)
    out = {k: full[k] for k in _SUMMARY_FIELDS}
    cur = row.get("current_run")
    u = usage.get(cur["run_id"]) if usage and cur else None
    out["usage"] = {k: u.get(k) for k in ("rss_bytes", "cpu_seconds", "cpu_percent")} if u else None
    return out


class StrategyFeed:
    """Turns ``strategy:<id>`` notifications into ``strategies`` channel messages."""

    def __init__(self, core: Core, hub: Hub) -> None:
        self.core = core
        self.hub = hub
        self._client_of: dict[str, str] = {}  # strategy id -> client id, as last read
        self._sid_of_run: dict[str, str] = {}  # current run id -> strategy id, as last read
        self._dirty: set[str] = set()
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    def learn(self, rows: list[dict[str, Any]]) -> None:
        if len(self._client_of) > 100_000:
            self._client_of.clear()
        if len(self._sid_of_run) > 100_000:
            self._sid_of_run.clear()
        for r in rows:
            self._client_of[r["strategy_id"]] = r["client_id"]
            if r.get("current_run_id"):
                self._sid_of_run[r["current_run_id"]] = r["strategy_id"]

    def on_topic(self, topic: str) -> None:
        """A notifier topic fired (on the event loop)."""
        if topic == USAGE:  # runners reported memory and CPU: the strategies of those runs changed
            for run_id in list(self.core.run_usage):
                sid = self._sid_of_run.get(run_id)
                if sid is not None:
                    self._mark(sid)
            return
        if topic.startswith("strategy:"):
            self._mark(topic[len("strategy:"):])

    def _mark(self, sid: str) -> None:
        cid = self._client_of.get(sid)
        if cid is not None and not self.hub.has_subscribers(channels.STRATEGIES, cid):
            return  # nobody of that client is watching: pay nothing
        self._dirty.add(sid)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_later(COALESCE_SECONDS, self._flush_soon)

    def _flush_soon(self) -> None:
        self._scheduled = False
        sids, self._dirty = self._dirty, set()
        task = asyncio.get_running_loop().create_task(self._flush(sids))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush(self, sids: set[str]) -> None:
        store = self.core.store
        rows = await anyio.to_thread.run_sync(lambda: {sid: store.get_strategy(None, sid) for sid in sids})
        by_client: dict[str, list[dict[str, Any]]] = {}
        for sid, row in rows.items():
            if row is None:  # deleted
                cid = self._client_of.pop(sid, None)
                if cid is not None:
                    by_client.setdefault(cid, []).append({"strategy_id": sid, "deleted": True})
                continue
            self.learn([row])
            by_client.setdefault(row["client_id"], []).append(summary(row, usage_of(self.core)))
        for cid, items in by_client.items():
            if self.hub.has_subscribers(channels.STRATEGIES, cid):
                self.hub.publish(channels.STRATEGIES, {"strategies": items}, client_id=cid)


def usage_of(core: Core) -> dict[str, Any]:
    """The latest memory and CPU each current run's runner reported (run id -> usage)."""
    return core.run_usage


def register(core: Core, hub: Hub) -> StrategyFeed:
    """Install the ``strategies`` channel on the hub and follow the strategies' changes."""
    feed = StrategyFeed(core, hub)

    def snapshot(_arg: str | None, client_id: str | None) -> dict[str, Any] | None:
        if client_id is None:
            return None
        rows = core.store.list_strategies(client_id, limit=SNAPSHOT_LIMIT)
        feed.learn(rows)
        usage = usage_of(core)
        return {"strategies": [summary(r, usage) for r in rows], "snapshot": True}

    hub.register(channels.strategies(snapshot), replace=True)
    core.notifier.observe(feed.on_topic)
    return feed
