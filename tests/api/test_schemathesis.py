"""Schemathesis against the real coordinator's /openapi.json: no 5xx, and the
answers conform to the published schema (documented status codes and content
types, ``Allow`` on 405, schema-valid requests not rejected).

Bounded and deterministic: a fixed seed, derandomized generation and a small
example budget per operation, so it runs in well under a minute and does not flake.
"""

from __future__ import annotations

import base64
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis.checks import positive_data_acceptance
from schemathesis.config import SchemathesisConfig

from sequence.api.app import build_core, create_app
from sequence.deps import target_for
from sequence.settings import Settings
from tests.helpers import LiveServer, create_body, start_server

CONFIG = """
seed = 20261202
suppress-health-check = ["too_slow", "filter_too_much", "data_too_large"]

[generation]
max-examples = 12
deterministic = true
no-shrink = true

[phases.stateful]
enabled = false

# Replaced by the variant below that knows cursors are opaque.
[checks.positive_data_acceptance]
enabled = false

"""
# Bodies whose validity no JSON schema can state, so schema-valid random ones are
# (rightly) 400s: a strategy's artifact must match the SHA-256 beside it and hold the
# entrypoint; a graph's symbols must exist and its prices sit on the venue's tick.
# Every other check still runs on them.
# A lock's wheels must be ones its target can import (cross-field: a cp312 wheel for a 3.12 target).
# A WASM module (its bytes must compile and meet the ABI) is no more schema-expressible than an artifact.
NOT_SCHEMA_EXPRESSIBLE = {("POST", "/v1/strategies"), ("POST", "/v1/graphs"), ("POST", "/v1/layers"),
                          ("POST", "/v1/deployments")}


@schemathesis.check
def positive_data_accepted_but_cursors_are_opaque(ctx: Any, response: Any, case: Any) -> bool | None:
    """Schema-valid requests are accepted — except that a cursor is a token the server
    minted (`next_cursor`): a made-up one is a documented 400 ``bad_cursor``."""
    if (case.method.upper(), case.path) in NOT_SCHEMA_EXPRESSIBLE:
        return None
    if (response.status_code == 400 and (case.query or {}).get("cursor") not in (None, "")
            and json.loads(response.content)["error"]["code"] == "bad_cursor"):
        return None
    return positive_data_acceptance(ctx, response, case)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = start_server(Path(tmp_path_factory.mktemp("schemathesis")) / "data", environ={})
    with srv.client() as c:
        assert c.post("/v1/strategies", json=create_body(name="fuzz-target")).status_code == 201
    tid, runner_token = srv.core.store.create_runner_token("fuzz")
    srv.extra["runner_token"] = runner_token
    # A registered runner with an interpreter: GET /v1/layers/target answers (not 503).
    srv.core.store.register_runner(tid, "fuzz", "us-east-1", 1, {"wheel_target": target_for(
        (3, 12, 0), "linux-x86_64", ("glibc", "2.36")).to_dict()})
    yield srv
    srv.stop()


def _openapi() -> dict[str, Any]:
    """The coordinator's OpenAPI document, built at collection (parametrize needs it then;
    schemathesis' lazy loader does not work on pytest 9). The test below checks that the
    live server publishes exactly this document."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.from_env({}, data_dir=Path(tmp))
        core = build_core(settings, {"CREDENTIAL_ENCRYPTION_KEY": base64.b64encode(bytes(32)).decode()})
        try:
            doc: dict[str, Any] = create_app(settings, core=core).openapi()
        finally:
            core.store.db.dispose()
    return doc


OPENAPI = _openapi()
schema = schemathesis.openapi.from_dict(OPENAPI, config=SchemathesisConfig.from_str(CONFIG))


def test_the_live_server_publishes_the_schema_under_test(live: LiveServer) -> None:
    with live.client() as c:
        assert c.get("/openapi.json").json() == OPENAPI


@schema.parametrize()
def test_the_api_conforms_to_its_schema(case: Any, live: LiveServer) -> None:
    token = live.extra["runner_token"] if case.path.startswith("/v1/runners") else live.live_key
    case.call_and_validate(base_url=live.url, headers={"Authorization": f"Bearer {token}"}, timeout=30,
                           additional_checks=[positive_data_accepted_but_cursors_are_opaque])
