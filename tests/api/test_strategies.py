"""/v1/strategies against a real coordinator on loopback."""

from __future__ import annotations

import base64
import gc
import io
import json
import tarfile

import httpx
import pytest

from sequence.bundle import sha256_hex
from tests.helpers import LiveServer, create_body, make_tar

SECRET = "https://hooks.example/T000/B000/very-secret-token-42"


def _create(c: httpx.Client, **kw: object) -> httpx.Response:
    return c.post("/v1/strategies", json=create_body(**kw))  # type: ignore[arg-type]


def test_create_list_inspect_with_env_and_manifest_visible_and_secrets_absent(any_server: LiveServer) -> None:
    with any_server.client() as c:
        r = _create(c, name="e2e", env={"LOG_LEVEL": "info"}, secrets={"SLACK_WEBHOOK": SECRET},
                    manifest={"PAIRS": [["A", "B"]]}, placement={"latency_target": ["coinbase"]})
        assert r.status_code == 201, r.text
        s = r.json()
        assert s["status"] == "stopped" and s["desired_state"] == "stopped"
        assert s["env"] == {"LOG_LEVEL": "info"} and s["manifest"] == {"PAIRS": [["A", "B"]]}
        assert s["secret_names"] == ["SLACK_WEBHOOK"] and s["region"] == "us-east-1"
        assert s["client_id"] == any_server.client_id and s["is_sandbox"] is False
        got = c.get(f"/v1/strategies/{s['strategy_id']}").json()
        assert got["strategy_id"] == s["strategy_id"]
        assert [x["name"] for x in c.get("/v1/strategies").json()["strategies"]] == ["e2e"]
        assert c.get("/v1/strategies/e2e").json()["strategy_id"] == s["strategy_id"]  # names resolve too


def test_redeploy_keeps_id_and_changes_sha(server: LiveServer) -> None:
    with server.client() as c:
        a = _create(c, name="x").json()
        r = c.post("/v1/strategies", json=create_body(name="x", files={"main.py": "print(2)\n"}))
        assert r.status_code == 200
        b = r.json()
        assert b["strategy_id"] == a["strategy_id"] and b["artifact_sha256"] != a["artifact_sha256"]


def test_start_and_stop_follow_the_lifecycle(server: LiveServer) -> None:
    with server.client() as c:
        sid = _create(c, name="x").json()["strategy_id"]
        assert c.post(f"/v1/strategies/{sid}/start").json()["status"] == "queued"
        assert c.post(f"/v1/strategies/{sid}/start").json()["status"] == "queued"
        assert c.post(f"/v1/strategies/{sid}/stop").json()["status"] == "stopped"
        assert c.post(f"/v1/strategies/{sid}/stop").json()["status"] == "stopped"
        s = c.post(f"/v1/strategies/{sid}/start").json()
        assert s["status"] == "queued" and "waiting for a runner" in s["waiting_reason"]


def test_deploy_with_start_queues_it(server: LiveServer) -> None:
    with server.client() as c:
        s = _create(c, name="x", start=True).json()
        assert s["status"] == "queued" and s["desired_state"] == "running"


def test_test_key_makes_a_sandbox_strategy(server: LiveServer) -> None:
    with server.client(server.test_key) as c:
        assert _create(c, name="x").json()["is_sandbox"] is True
    with server.client() as c:
        s = _create(c, name="y", sequence_api_key=server.test_key).json()
        assert s["is_sandbox"] is True


def test_delete_purges_everything(server: LiveServer) -> None:
    with server.client() as c:
        sid = _create(c, name="x").json()["strategy_id"]
        assert c.delete(f"/v1/strategies/{sid}").json() == {"strategy_id": sid, "deleted": True}
        assert c.get(f"/v1/strategies/{sid}").status_code == 404
        assert c.get("/v1/strategies").json()["strategies"] == []
        assert c.delete(f"/v1/strategies/{sid}").status_code == 404


def test_multipart_upload_is_accepted(server: LiveServer) -> None:
    art = make_tar({"main.py": "print(1)\n"})
    spec = {"name": "mp", "artifact_sha256": sha256_hex(art), "env": {"A": "1"}}
    with server.client() as c:
        r = c.post("/v1/strategies", files={"artifact": ("a.tar.gz", art, "application/gzip")},
                   data={"spec": json.dumps(spec)})
        assert r.status_code == 201, r.text
        assert r.json()["env"] == {"A": "1"}


def test_logs_and_runs_of_a_never_run_strategy_are_empty(server: LiveServer) -> None:
    with server.client() as c:
        sid = _create(c, name="x").json()["strategy_id"]
        assert c.get(f"/v1/strategies/{sid}/logs").json() == {"strategy_id": sid, "run_id": None, "lines": [],
                                                               "next_seq": 0, "dropped_lines": 0}
        assert c.get(f"/v1/strategies/{sid}/runs").json() == {"strategy_id": sid, "runs": [], "next_cursor": None}


def test_another_clients_strategy_answers_404_on_every_route(server: LiveServer) -> None:
    with server.client() as c:
        sid = _create(c, name="mine").json()["strategy_id"]
    _cid, other = server.new_client()
    with server.client(other) as o:
        for method, path in [("GET", ""), ("POST", "/start"), ("POST", "/stop"), ("DELETE", ""), ("GET", "/logs"),
                             ("GET", "/runs")]:
            for ident in (sid, "mine"):
                r = o.request(method, f"/v1/strategies/{ident}{path}")
                assert r.status_code == 404, (method, path, r.text)
                assert r.json()["error"]["code"] == "not_found"
                assert sid not in r.text
        assert o.get("/v1/strategies").json()["strategies"] == []
        # And the same name is free for them.
        assert _create(o, name="mine").status_code == 201


# ---------------------------------------------------------------------- bad input

def _tar_with_link() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("other.py")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    return buf.getvalue()


BAD = [
    ("malformed_json", lambda: b"{nope", 400, "invalid_json", None),
    ("not_an_object", lambda: b"[1,2]", 400, "bad_request", None),
    ("wrong_type_memory", lambda: {**create_body(), "memory_mb": "512"}, 422, "validation_error", "memory_mb"),
    ("wrong_type_env", lambda: {**create_body(), "env": {"A": 1}}, 422, "validation_error", "env.A"),
    ("unknown_field", lambda: {**create_body(), "colour": "red"}, 422, "validation_error", "colour"),
    ("missing_sha", lambda: {k: v for k, v in create_body().items() if k != "artifact_sha256"}, 422,
     "validation_error", "artifact_sha256"),
    ("invalid_base64", lambda: {**create_body(), "artifact_base64": "!!!not base64!!!"}, 400, "bad_request",
     "artifact_base64"),
    ("sha_mismatch", lambda: {**create_body(), "artifact_sha256": "0" * 64}, 400, "bad_request", "artifact_sha256"),
    ("not_a_tarball", lambda: {**create_body(), "artifact_base64": base64.b64encode(b"hello").decode(),
                               "artifact_sha256": sha256_hex(b"hello")}, 400, "bad_request", "artifact"),
    ("gzip_but_not_tar", lambda: (lambda g: {**create_body(), "artifact_base64": base64.b64encode(g).decode(),
                                             "artifact_sha256": sha256_hex(g)})(__import__("gzip").compress(b"x" * 600)),
     400, "bad_request", "artifact"),
    ("missing_entrypoint", lambda: (lambda a: {**create_body(), "artifact_base64": base64.b64encode(a).decode(),
                                               "artifact_sha256": sha256_hex(a)})(_tar_with_link()),
     400, "bad_request", "artifact"),
    ("runtime_rust", lambda: {**create_body(), "runtime": "rust"}, 400, "bad_request", "runtime"),
    ("reserved_env", lambda: {**create_body(), "env": {"SEQUENCE_API_KEY": "x", "SEQUENCE_RUN_ID": "y", "OK": "z"}},
     400, "bad_request", "env"),
    ("reserved_secret", lambda: {**create_body(), "secrets": {"SEQUENCE_CLIENT_ID": SECRET}}, 400, "bad_request",
     "secrets"),
    ("invalid_env_name", lambda: {**create_body(), "env": {"1BAD": "x"}}, 400, "bad_request", "env"),
    ("empty_name", lambda: create_body(name=""), 400, "bad_request", "name"),
    ("long_name", lambda: create_body(name="a" * 200), 400, "bad_request", "name"),
    ("traversal_name", lambda: create_body(name="../x"), 400, "bad_request", "name"),
    ("entrypoint_escape", lambda: {**create_body(), "entrypoint": "../main.py"}, 400, "bad_request", "entrypoint"),
    ("unknown_latency_target", lambda: {**create_body(), "placement": {"latency_target": ["mars"]}}, 400,
     "bad_request", "placement.latency_target"),
    ("memory_too_small", lambda: {**create_body(), "memory_mb": 1}, 422, "validation_error", "memory_mb"),
    ("foreign_api_key", lambda: {**create_body(), "sequence_api_key": "seq_live_notarealkey"}, 400, "bad_request",
     "sequence_api_key"),
]


@pytest.mark.parametrize(("case", "make", "status", "code", "field"), BAD, ids=[b[0] for b in BAD])
def test_bad_create_input_is_a_clear_4xx_and_leaves_nothing(server: LiveServer, case, make, status, code, field) -> None:
    body = make()
    with server.client() as c:
        if isinstance(body, bytes):
            r = c.post("/v1/strategies", content=body, headers={"Content-Type": "application/json"})
        else:
            r = c.post("/v1/strategies", json=body)
        assert r.status_code == status, r.text
        err = r.json()["error"]
        assert err["code"] == code
        if field:
            named = err["details"].get("field") or " ".join(e["field"] for e in err["details"].get("errors", []))
            assert field in named or field in err["message"], err
        assert SECRET not in r.text
        assert c.get("/v1/strategies").json()["strategies"] == []
    if case == "reserved_env":
        assert err["details"]["names"] == ["SEQUENCE_API_KEY", "SEQUENCE_RUN_ID"]


def test_oversize_artifact_is_413_and_leaves_nothing(tmp_path) -> None:
    from tests.helpers import start_server

    srv = start_server(tmp_path / "d", environ={}, max_artifact_mb=1)
    try:
        big = make_tar({"main.py": "x", "blob.bin": __import__("os").urandom(1_300_000)})
        with srv.client() as c:
            r = c.post("/v1/strategies", json={**create_body(), "artifact_base64": base64.b64encode(big).decode(),
                                               "artifact_sha256": sha256_hex(big)})
            assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
            assert c.get("/v1/strategies").json()["strategies"] == []
    finally:
        srv.stop()


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer seq_live_wrong", "Basic abc", "Bearer garbage"])
def test_missing_or_invalid_keys_are_401(server: LiveServer, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    r = httpx.get(server.url + "/v1/strategies", headers=headers)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"


def test_revoked_key_stops_working_at_once(server: LiveServer) -> None:
    with server.client() as c:
        made = c.post("/v1/keys", json={"mode": "live", "name": "tmp"}).json()
        with server.client(made["key"]) as k:
            assert k.get("/v1/strategies").status_code == 200
            assert c.delete(f"/v1/keys/{made['key_id']}").status_code == 200
            assert k.get("/v1/strategies").status_code == 401


def test_metrics_count_strategies_by_status(server: LiveServer) -> None:
    with server.client() as c:
        _create(c, name="a")
        _create(c, name="b", start=True)
        gc.collect(1)  # process-wide: the coordinator (a thread here) hears of it too
        text = httpx.get(server.url + "/metrics").text
    assert 'sequence_gc_pause_seconds_count{generation="1"}' in text
    assert 'sequence_strategies{status="stopped"} 1.0' in text
    assert 'sequence_strategies{status="queued"} 1.0' in text
    assert "sequence_http_requests_total" in text


def test_list_pages_with_an_opaque_cursor(server: LiveServer) -> None:
    with server.client() as c:
        for i in range(5):
            _create(c, name=f"s{i}")
        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = c.get("/v1/strategies", params=params).json()
            seen += [s["name"] for s in page["strategies"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert seen == [f"s{i}" for i in range(5)]
        bad = c.get("/v1/strategies", params={"cursor": "!!garbage!!"})
        assert bad.status_code == 400 and bad.json()["error"]["details"]["field"] == "cursor"
        zero = c.get("/v1/strategies", params={"limit": 0})
        assert zero.status_code == 400 and zero.json()["error"]["details"]["field"] == "limit"


def test_unusual_methods_are_counted_as_other(server: LiveServer) -> None:
    """/metrics counted requests by method name. httptools only lets the ~30 methods it knows
    through, but uvicorn's other parser (h11, when httptools is missing) lets any token
    through: one series per made-up method, for ever. Only the usual seven keep their name."""
    unusual = ("PROPFIND", "MKCOL", "LOCK", "PURGE", "SEARCH", "REPORT")
    with httpx.Client(base_url=server.url) as c:
        for method in unusual:
            assert 400 <= c.request(method, "/v1/strategies").status_code < 500
        text = c.get("/metrics").text
    assert not [m for m in unusual if f'method="{m}"' in text]
    assert 'sequence_http_requests_total{method="other",route="/v1/strategies",status="405"} 6.0' in text
