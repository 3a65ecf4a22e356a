"""No API response, log line or stored column ever holds a secret value."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sequence.secrets import Keyring, Sealed, UnsealError
from tests.helpers import LiveServer, create_body

SECRET = "xoxb-SECRET-VALUE-0123456789"


def test_secret_values_never_leave_through_any_strategy_route(any_server: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    with any_server.client() as c:
        r = c.post("/v1/strategies", json=create_body(name="s", secrets={"SLACK": SECRET},
                                                      sequence_api_key=any_server.test_key, start=True))
        seen.append(r.text)
        sid = r.json()["strategy_id"]
        # A redeploy, a bad redeploy that names the secret, and every read/lifecycle route.
        seen.append(c.post("/v1/strategies", json=create_body(name="s", secrets={"SLACK": SECRET})).text)
        seen.append(c.post("/v1/strategies", json=create_body(name="s", secrets={"SLACK": 12345})).text)
        seen.append(c.post("/v1/strategies", json=create_body(name="s", secrets={"SEQUENCE_X": SECRET})).text)
        seen.append(c.post("/v1/strategies", json={**create_body(name="s", secrets={"SLACK": SECRET}), "bogus": 1}).text)
        for method, path in [("GET", ""), ("GET", "/logs"), ("GET", "/runs"), ("POST", "/stop"), ("POST", "/start"),
                             ("GET", "")]:
            seen.append(c.request(method, f"/v1/strategies/{sid}{path}").text)
        seen.append(c.get("/v1/strategies").text)
        seen.append(c.get("/v1/keys").text)
        seen.append(c.delete(f"/v1/strategies/{sid}").text)
    body = "\n".join(seen) + "\n".join(r.getMessage() for r in caplog.records)
    assert SECRET not in body
    assert any_server.test_key not in body
    for forbidden in ("secrets_ciphertext", "secrets_nonce", "sequence_api_key_ciphertext"):
        assert forbidden not in body


def test_secrets_are_sealed_at_rest(server: LiveServer) -> None:
    with server.client() as c:
        c.post("/v1/strategies", json=create_body(name="s", secrets={"SLACK": SECRET}))
    db_file = Path(server.settings.effective_database_url.split("///", 1)[1])
    raw = b"".join(p.read_bytes() for p in db_file.parent.glob("sequence.db*"))
    assert SECRET.encode() not in raw
    assert server.live_key.encode() not in raw  # the strategy's key is sealed too; api_keys holds hashes


def test_ciphertext_is_bound_to_its_row() -> None:
    ring = Keyring(b"k" * 32)
    sealed = ring.seal(b"v", "strategy:a:secrets")
    assert ring.unseal(sealed, "strategy:a:secrets") == b"v"
    with pytest.raises(UnsealError):
        ring.unseal(sealed, "strategy:b:secrets")
    with pytest.raises(UnsealError):
        ring.unseal(Sealed(sealed.ciphertext[:-1] + bytes([sealed.ciphertext[-1] ^ 1]), sealed.nonce, sealed.key_id),
                    "strategy:a:secrets")


def test_generated_key_file_is_private(server: LiveServer) -> None:
    key_file = server.settings.data_dir / "credential.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
