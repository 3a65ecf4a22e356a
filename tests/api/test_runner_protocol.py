"""The /v1/runners/* wire protocol, driven over HTTP as a runner would."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.helpers import LiveServer, create_body


@pytest.fixture
def claimed(server: LiveServer) -> Iterator[dict[str, Any]]:
    _tid, token = server.core.store.create_runner_token("t")
    h = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    reg = h.post("/v1/runners/register", json={"name": "t", "region": "us-east-1", "capacity": 2}).json()
    with server.client() as c:
        c.post("/v1/strategies", json=create_body(name="s", start=True, secrets={"TOKEN": "v"}))
    got = h.post(f"/v1/runners/{reg['runner_id']}/poll", json={"free_slots": 2, "wait_s": 5}).json()
    assert len(got["claims"]) == 1
    spec = got["claims"][0]
    assert spec["secrets"] == {"TOKEN": "v"} and spec["api_key"].startswith("seq_live_")
    yield {"h": h, "rid": reg["runner_id"], "spec": spec}
    h.close()


def _logs(cl: dict[str, Any], body: dict[str, Any]) -> httpx.Response:
    spec = cl["spec"]
    r: httpx.Response = cl["h"].post(f"/v1/runners/{cl['rid']}/runs/{spec['run_id']}/logs", json=body)
    return r


def test_columnar_batches_store_dedupe_and_refuse_gaps(server: LiveServer, claimed: dict[str, Any]) -> None:
    ep = claimed["spec"]["epoch"]
    ok = {"epoch": ep, "first_seq": 1, "ts": [1.0, 2.0, 3.0], "streams": "oeo", "lines": ["a", "b", "c"],
          "partial": [1]}
    assert _logs(claimed, ok).json() == {"next_seq": 4}
    assert _logs(claimed, ok).json() == {"next_seq": 4}  # a resent batch stores nothing twice
    overlap = {**ok, "first_seq": 3, "ts": [3.0, 4.0], "streams": "oo", "lines": ["c", "d"], "partial": []}
    assert _logs(claimed, overlap).json() == {"next_seq": 5}
    gap = {**ok, "first_seq": 9}
    r = _logs(claimed, gap)
    assert r.status_code == 409 and "expected seq 5" in r.json()["error"]["message"]
    rows = server.core.store.read_logs(claimed["spec"]["run_id"], 0, 100)
    assert [(x["seq"], x["stream"], x["line"], x["partial"]) for x in rows] == [
        (1, "stdout", "a", False), (2, "stderr", "b", True), (3, "stdout", "c", False), (4, "stdout", "d", False)]


@pytest.mark.parametrize(("change", "field"), [
    ({"ts": [1.0]}, "ts"),
    ({"streams": "ox!"}, "streams"),
    ({"lines": ["a", 2, "c"]}, "lines"),
    ({"partial": [7]}, "partial"),
    ({"first_seq": 0}, "first_seq"),
    ({"epoch": "1"}, "epoch"),
    ({"bogus": 1}, "body"),
])
def test_malformed_batches_are_422_naming_the_field(claimed: dict[str, Any], change: dict[str, Any], field: str) -> None:
    body = {"epoch": claimed["spec"]["epoch"], "first_seq": 1, "ts": [1.0, 2.0, 3.0], "streams": "ooo",
            "lines": ["a", "b", "c"], **change}
    r = _logs(claimed, body)
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == field


def test_stale_epoch_is_rejected_on_every_write(claimed: dict[str, Any]) -> None:
    spec, h, rid = claimed["spec"], claimed["h"], claimed["rid"]
    stale = spec["epoch"] + 100
    base = f"/v1/runners/{rid}/runs/{spec['run_id']}"
    assert h.post(base + "/started", json={"epoch": stale}).status_code == 409
    assert h.post(base + "/exit", json={"epoch": stale, "code": 0}).status_code == 409
    assert h.get(base + "/artifact", params={"epoch": stale}).status_code == 409
    assert _logs(claimed, {"epoch": stale, "first_seq": 1, "ts": [], "streams": "", "lines": []}).status_code == 409
    beat = h.post(f"/v1/runners/{rid}/heartbeat", json={"runs": [{"run_id": spec["run_id"], "epoch": stale}]}).json()
    assert beat["runs"] == {spec["run_id"]: "kill"}


def test_a_small_artifact_rides_in_the_claim_and_a_big_one_is_fetched(server: LiveServer) -> None:
    """The claim spec carries artifacts up to INLINE_ARTIFACT_MAX bytes (the runner starts them
    without a round trip); a bigger one is left out and fetched, byte for byte the same."""
    import base64
    import os

    from sequence.protocol import INLINE_ARTIFACT_MAX

    _tid, token = server.core.store.create_runner_token("t")
    h = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    rid = h.post("/v1/runners/register", json={"name": "t", "region": "us-east-1", "capacity": 4}).json()["runner_id"]
    big = os.urandom(INLINE_ARTIFACT_MAX + 4096)  # random bytes: the gzip stays bigger than the limit
    with server.client() as c:
        for name, files in (("small", {"main.py": "print('hi')\n"}), ("big", {"main.py": "pass\n", "blob": big})):
            assert c.post("/v1/strategies", json=create_body(name=name, files=files, start=True)).status_code == 201
    claims: dict[str, Any] = {}
    while len(claims) < 2:
        for spec in h.post(f"/v1/runners/{rid}/poll", json={"free_slots": 4, "wait_s": 5}).json()["claims"]:
            claims[spec["name"]] = spec
    for name, spec in claims.items():
        fetched = h.get(f"/v1/runners/{rid}/runs/{spec['run_id']}/artifact", params={"epoch": spec["epoch"]})
        assert fetched.status_code == 200 and len(fetched.content) == spec["artifact_size"]
        if name == "small":
            assert spec["artifact_size"] <= INLINE_ARTIFACT_MAX
            assert base64.b64decode(spec["artifact_base64"]) == fetched.content
        else:
            assert spec["artifact_size"] > INLINE_ARTIFACT_MAX and spec["artifact_base64"] is None
    h.close()
