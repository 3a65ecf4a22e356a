"""The verified-key cache: no database read per request, and a revocation is seen at once —
in this coordinator, and on every other replica on the same PostgreSQL database.

The cache's lifetime is made huge here, so only the invalidation can explain a 401.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sequence.api import auth
from tests.helpers import LiveServer, start_server


@pytest.fixture
def long_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "CACHE_SECONDS", 3600.0)
    monkeypatch.setattr(auth, "FALLBACK_SECONDS", 3600.0)


def _key_id(srv: LiveServer, key: str) -> str:
    with srv.client(key) as c:
        me = c.get("/v1/me").json()
    return str(me["key_id"])


def test_a_cached_key_costs_no_database_read(tmp_path: Path, long_cache: None,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    srv = start_server(tmp_path / "data", environ={})
    try:
        calls: list[str] = []
        real = srv.core.store.authenticate
        monkeypatch.setattr(srv.core.store, "authenticate", lambda token: calls.append(token) or real(token))
        with srv.client() as c:
            for _ in range(20):
                assert c.get("/v1/strategies").status_code == 200
        assert len(calls) == 1, calls
    finally:
        srv.stop()


def test_a_revoked_key_is_refused_on_the_next_request(tmp_path: Path, long_cache: None) -> None:
    srv = start_server(tmp_path / "data", environ={})
    try:
        _cid, other = srv.new_client("acme")
        kid = _key_id(srv, other)
        with srv.client(other) as c:
            assert c.get("/v1/strategies").status_code == 200  # cached now
        with srv.client() as first_client, srv.client(other) as c:
            # A client revokes its own key (the key's own client is the one that may).
            assert c.delete(f"/v1/keys/{kid}").status_code == 200
            assert c.get("/v1/strategies").status_code == 401
            assert first_client.get("/v1/strategies").status_code == 200  # others unaffected
    finally:
        srv.stop()


@pytest.fixture
def replicas(tmp_path: Path, pg_url: str, long_cache: None) -> Iterator[tuple[LiveServer, LiveServer]]:
    a = start_server(tmp_path / "a", database_url=pg_url, environ={})
    b = start_server(tmp_path / "b", database_url=pg_url, environ={})
    try:
        yield a, b
    finally:
        b.stop()
        a.stop()


def _wait_listening(srv: LiveServer, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not srv.core.auth._listening:
        assert time.monotonic() < deadline, "the auth listener did not connect"
        time.sleep(0.02)


def test_a_revocation_on_one_replica_is_seen_at_once_on_another(replicas: tuple[LiveServer, LiveServer]) -> None:
    a, b = replicas
    _wait_listening(a)
    _wait_listening(b)
    _cid, key = a.new_client("replicated")
    kid = _key_id(a, key)
    with b.client(key) as on_b:
        assert on_b.get("/v1/strategies").status_code == 200  # B has it cached (for an hour)
    with a.client(key) as on_a:
        assert on_a.delete(f"/v1/keys/{kid}").status_code == 200
    deadline = time.monotonic() + 2.0
    with b.client(key) as on_b:
        while on_b.get("/v1/strategies").status_code != 401:
            assert time.monotonic() < deadline, "replica B still accepts a key revoked on A"
            time.sleep(0.01)


def test_a_replica_whose_listener_is_down_caches_only_briefly(replicas: tuple[LiveServer, LiveServer],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    _a, b = replicas
    _wait_listening(b)
    b.core.auth.stop()
    deadline = time.monotonic() + 5
    while b.core.auth._listening:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    monkeypatch.setattr(auth, "FALLBACK_SECONDS", 0.5)
    assert b.core.auth.ttl == 0.5
