"""Bearer-key authentication for clients and runners."""

from __future__ import annotations

import time
from typing import Any

from fastapi import Request, WebSocket

from sequence.api.errors import not_found, unauthorized
from sequence.store.store import Principal, Store

# A small positive cache keeps auth off the database on hot paths (quotes).
# Revocation and run ends clear it in this process; other replicas see the
# change within CACHE_SECONDS.
CACHE_SECONDS = 1.0


class Authenticator:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._cache: dict[str, tuple[float, Principal]] = {}

    def resolve(self, token: str) -> Principal | None:
        hit = self._cache.get(token)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        p = self.store.authenticate(token)
        if p is not None:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[token] = (now + CACHE_SECONDS, p)
        else:
            self._cache.pop(token, None)
        return p

    def invalidate(self) -> None:
        self._cache.clear()

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


def require_principal(request: Request) -> Principal:
    token = bearer(request.headers.get("authorization"))
    if token is None:
        raise unauthorized("missing API key: send 'Authorization: Bearer seq_live_…'")
    p = authenticator(request.app).resolve(token)
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
