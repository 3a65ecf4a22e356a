"""Venue credentials: one set of field names for the API, the CLI and the docs."""

from __future__ import annotations

import pytest

from sequence.venues import CREDENTIAL_FIELDS
from tests.helpers import LiveServer

GOOD = {
    "kalshi": {"api_key_id": "k", "private_key_pem": "pem"},
    "polymarket": {"private_key": "0xabc"},
    "coinbase": {"api_key_name": "organizations/o/apiKeys/k", "private_key_pem": "pem"},
}


@pytest.mark.parametrize("venue", sorted(GOOD))
def test_the_documented_fields_are_accepted(server: LiveServer, venue: str) -> None:
    with server.client() as c:
        r = c.put(f"/v1/venues/{venue}/credentials", json=GOOD[venue])
        assert r.status_code == 200, r.text
        assert r.json()["credential_fields"] == sorted(GOOD[venue])


def test_unknown_fields_are_refused_with_the_allowed_list(server: LiveServer) -> None:
    with server.client() as c:
        r = c.put("/v1/venues/kalshi/credentials", json={"key_id": "k", "private_key": "pem"})
        assert r.status_code == 400
        err = r.json()["error"]
        assert "unknown kalshi credential field(s): key_id, private_key" in err["message"]
        assert err["details"]["allowed"] == ["api_key_id", "private_key_pem"]
        r = c.put("/v1/venues/coinbase/credentials", json={"api_key_name": "n"})
        assert r.status_code == 400 and "missing coinbase credential field(s): private_key_pem" in r.text


def test_the_docs_name_every_field() -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    for fields in CREDENTIAL_FIELDS.values():
        for f in fields:
            assert f"`{f.name}`" in text, f.name
