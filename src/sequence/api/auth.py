"""Bearer-key authentication for clients and runners."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
from fastapi import Request, WebSocket

from sequence.api.errors import not_found, unauthorized
from sequence.store.store import Principal, Store

# Verified keys are cached so a request costs no database read. Every change of a key's
# validity made through this coordinator (revocation, a run's end, a strategy's deletion,
# a lapsed lease) clears the cache here at once (``invalidate``); on PostgreSQL it also
# NOTIFYs every other replica, whose listener clears theirs. A cached answer lives at most
# CACHE_SECONDS (a bound on changes made outside any coordinator), or FALLBACK_SECONDS
# while a PostgreSQL replica's listener is not connected.
CACHE_SECONDS = 60.0
FALLBACK_SECONDS = 1.0
CHANNEL = "sequence_auth"

log = logging.getLogger("sequence.auth")


class Authenticator:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._cache: dict[str, tuple[float, Principal]] = {}
        # Bumped by every invalidation: an answer read from the database before one
        # is not cached after it (the read may predate the revocation).
        self._generation = 0
        self._shared = not store.db.is_sqlite  # other replicas may share the database
        self._listening = False
        self._stop = threading.Event()
        self._listener: threading.Thread | None = None
        # Invalidations to tell the other replicas: one sender thread, coalescing bursts
        # (500 strategies stopping are a few NOTIFYs, not 500 threads).
        self._to_send = threading.Event()
        self._sender: threading.Thread | None = None
        self._sender_lock = threading.Lock()

    @property
    def ttl(self) -> float:
        return CACHE_SECONDS if (self._listening or not self._shared) else FALLBACK_SECONDS

    def cached(self, token: str) -> Principal | None:
        """The cached principal of *token*, or None (then :meth:`resolve` it)."""
        hit = self._cache.get(token)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        return None

    def resolve(self, token: str) -> Principal | None:
        hit = self.cached(token)
        if hit is not None:
            return hit
        gen = self._generation
        p = self.store.authenticate(token)
        if p is not None:
            if len(self._cache) > 10_000:
                self._cache.clear()
            if gen == self._generation:
                self._cache[token] = (time.monotonic() + self.ttl, p)
        else:
            self._cache.pop(token, None)
        return p

    def clear(self) -> None:
        """Forget every cached key (this replica only)."""
        self._generation += 1
        self._cache.clear()

    def invalidate(self) -> None:
        """A key's validity changed: forget every cached key here and on every replica."""
        self.clear()
        if self._shared:
            self._to_send.set()
            with self._sender_lock:
                if self._sender is None:
                    self._sender = threading.Thread(target=self._send_loop, name="auth-notify", daemon=True)
                    self._sender.start()

    def _send_loop(self) -> None:
        while True:
            if not self._to_send.wait(timeout=30.0) or self._stop.is_set():
                with self._sender_lock:  # idle or stopping: exit, unless an invalidation just came
                    if self._stop.is_set() or not self._to_send.is_set():
                        if self._sender is threading.current_thread():
                            self._sender = None
                        return
                continue
            self._to_send.clear()  # before sending: an invalidation during the send sends again
            try:
                self.store.notify(CHANNEL)
            except Exception as exc:  # the others fall back to their short TTL only if their listener is down
                log.warning("could not tell the other replicas to forget cached keys: %s", exc)

    # -- the PostgreSQL listener ------------------------------------------------------------
    def start(self) -> None:
        """On PostgreSQL: listen for other replicas' invalidations (a thread of its own)."""
        if self._shared and self._listener is None:
            self._stop.clear()
            self._listener = threading.Thread(target=self._listen, name="auth-listener", daemon=True)
            self._listener.start()

    def stop(self) -> None:
        """End the listener and the sender and wait for them (≤ about a second): their connections
        must be closed before the coordinator disposes of its engine, not garbage-collected later."""
        self._stop.set()
        self._listening = False
        self._to_send.set()  # wake the sender: it sees the stop and ends
        with self._sender_lock:
            sender = self._sender
        for th in (self._listener, sender):
            if th is not None and th is not threading.current_thread():
                th.join(timeout=5.0)
        self._listener = None
        self._to_send.clear()

    def _listen(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                for event in self.store.listen(CHANNEL, self._stop):
                    if event == "listening":  # (re)connected: what was missed meanwhile is forgotten too
                        self.clear()
                        self._listening = True
                        delay = 0.5
                    else:
                        self.clear()
            except Exception as exc:
                if not self._stop.is_set():
                    log.warning("auth listener lost its connection (%s); cached keys live %.0f s until it is back",
                                exc, FALLBACK_SECONDS)
            self._listening = False
            self.clear()
            self._stop.wait(delay)
            delay = min(delay * 2, 10.0)

    def runner_token(self, token: str) -> str | None:
        return self.store.authenticate_runner(token)

    def runner_token_as(self, token: str, runner_id: str) -> tuple[str, bool] | None:
        return self.store.authenticate_runner_as(token, runner_id)


def authenticator(app: Any) -> Authenticator:
    """The app's :class:`Authenticator` (``app.state.auth``, set by ``create_app``)."""
    auth: Authenticator = app.state.auth
    return auth


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def still_valid(request: Request | WebSocket) -> Callable[[], bool]:
    """For a long response (a log follow, a stream): whether the key that opened it still
    authenticates (revoked, or a run key whose run ended: no). Answered from the verified-key
    cache, which every revocation clears."""
    token = bearer(request.headers.get("authorization")) or request.query_params.get("token")
    auth = authenticator(request.app)

    def check() -> bool:
        return token is not None and (auth.cached(token) or auth.resolve(token)) is not None

    return check


async def require_principal(request: Request) -> Principal:
    # async: a cached key is answered on the event loop, with no hop to the thread pool
    # (that hop alone cost about a millisecond per request); only a miss reads the database.
    token = bearer(request.headers.get("authorization"))
    if token is None:
        raise unauthorized("missing API key: send 'Authorization: Bearer seq_live_…'")
    auth = authenticator(request.app)
    p = auth.cached(token)
    if p is None:
        p = await anyio.to_thread.run_sync(auth.resolve, token)
    if p is None:
        raise unauthorized("invalid or revoked API key")
    request.state.principal = p
    return p


def authenticate_websocket(websocket: WebSocket) -> Principal | None:
    token = bearer(websocket.headers.get("authorization")) or websocket.query_params.get("token")
    if not token:
        return None
    return authenticator(websocket.app).resolve(token)


def require_runner(request: Request) -> str:
    token = bearer(request.headers.get("authorization"))
    tid = authenticator(request.app).runner_token(token) if token else None
    if tid is None:
        raise unauthorized("missing or invalid runner token")
    return str(tid)


def require_runner_of(request: Request, runner_id: str) -> str:
    """A runner token that registered the path's ``runner_id``, in one indexed lookup.

    401 for a bad token; 404 for a runner registered with another token (a runner
    never acts, or writes logs, as another).
    """
    token = bearer(request.headers.get("authorization"))
    plausible = 0 < len(runner_id) <= 64 and runner_id.isprintable()
    got = authenticator(request.app).runner_token_as(token, runner_id if plausible else "") if token else None
    if got is None:
        raise unauthorized("missing or invalid runner token")
    tid, registered = got
    if not registered:
        raise not_found("runner")
    return str(tid)
