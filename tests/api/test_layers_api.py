"""/v1/layers, deploys with a layer, the runner's wheel route and layer garbage collection, on both backends.

The clients here are hostile where it matters: knowing a layer's id and its wheels'
hashes must not let a client deploy (or read) wheels it never uploaded.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sequence import deps
from sequence.store.store import Store
from tests.helpers import LiveServer, create_body, start_server
from tests.store.helpers import Clock, deploy

TARGET = deps.target_for((3, 12, 0), "linux-x86_64", ("glibc", "2.36"))
MB = 1024 * 1024


def make_wheel(name: str, version: str = "1.0", body: str = "VALUE = 42\n") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(f"{name}/__init__.py", body)
        z.writestr(f"{name}-{version}.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{name}-{version}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return buf.getvalue()


def entry(filename: str, data: bytes) -> dict[str, Any]:
    return {"filename": filename, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


ALPHA = make_wheel("alpha_pkg")
BETA = make_wheel("beta_pkg", "2.5")
WHEELS = {"alpha_pkg-1.0-py3-none-any.whl": ALPHA, "beta_pkg-2.5-py3-none-any.whl": BETA}
LOCK = [entry(fn, data) for fn, data in WHEELS.items()]
SHA_ALPHA, SHA_BETA = LOCK[0]["sha256"], LOCK[1]["sha256"]


@pytest.fixture
def srv(db_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    """A coordinator on each backend with small caps: a wheel 1 MiB at most, a layer 2 MiB."""
    s = start_server(tmp_path / "data", database_url=db_url, environ={}, max_wheel_mb=1, max_layer_mb=2)
    yield s
    s.stop()


def register_runner(s: LiveServer, isolation: dict[str, Any] | None = None) -> tuple[httpx.Client, str]:
    _tid, token = s.core.store.create_runner_token("r")
    h = httpx.Client(base_url=s.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    iso = {"wheel_target": TARGET.to_dict()} if isolation is None else isolation
    r = h.post("/v1/runners/register", json={"name": "r", "region": "us-east-1", "capacity": 5, "isolation": iso})
    assert r.status_code == 200, r.text
    return h, r.json()["runner_id"]


@pytest.fixture
def runner(srv: LiveServer) -> Iterator[tuple[httpx.Client, str]]:
    h, rid = register_runner(srv)
    yield h, rid
    h.close()


def post_lock(c: httpx.Client, wheels: list[dict[str, Any]] | None = None,
              target: dict[str, Any] | None = None) -> httpx.Response:
    return c.post("/v1/layers", json={"target": target or TARGET.to_dict(), "wheels": LOCK if wheels is None else wheels})


def put(c: httpx.Client, lid: str, sha: str, data: bytes) -> httpx.Response:
    return c.put(f"/v1/layers/{lid}/wheels/{sha}", content=data, headers={"Content-Type": "application/octet-stream"})


def upload_all(c: httpx.Client) -> str:
    r = post_lock(c)
    assert r.status_code == 200, r.text
    lid = r.json()["layer_id"]
    for w in r.json()["missing"]:
        assert put(c, lid, w["sha256"], WHEELS[w["filename"]]).status_code in (200, 201)
    return str(lid)


def err(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    e: dict[str, Any] = r.json()["error"]
    assert set(e) == {"code", "message", "details"}
    return e


# -- the target ---------------------------------------------------------------------------------


def test_target_is_503_until_a_runner_with_a_wheel_target_registers(srv: LiveServer) -> None:
    with srv.client() as c:
        e = err(c.get("/v1/layers/target"), 503)
        assert e["code"] == "unavailable" and "runner" in e["message"]
        h, _rid = register_runner(srv, isolation={})  # an older runner: no wheel target
        h.close()
        assert c.get("/v1/layers/target").status_code == 503
        h, _rid = register_runner(srv, isolation={"wheel_target": {"python": "nonsense"}})
        h.close()
        assert c.get("/v1/layers/target").status_code == 503
        h, _rid = register_runner(srv)
        h.close()
        r = c.get("/v1/layers/target")
        assert r.status_code == 200, r.text
        assert r.json() == {"target": {**TARGET.to_dict(), "runners": 1}, "others": []}
    with srv.client("") as anon:
        assert anon.get("/v1/layers/target").status_code == 401


def test_target_ranks_the_most_common_runner_interpreter_first(srv: LiveServer) -> None:
    t313 = deps.target_for((3, 13, 0), "linux-x86_64", ("glibc", "2.36"))
    hs = [register_runner(srv, {"wheel_target": t.to_dict()})[0] for t in (t313, TARGET, TARGET)]
    for h in hs:
        h.close()
    with srv.client() as c:
        got = c.get("/v1/layers/target").json()
    assert got["target"]["abi"] == "cp312" and got["target"]["runners"] == 2
    assert [o["abi"] for o in got["others"]] == ["cp313"]


# -- locks and uploads ----------------------------------------------------------------------------


def test_post_lock_answers_the_layer_id_and_what_is_missing(srv: LiveServer, runner: Any) -> None:
    with srv.client() as c:
        r = post_lock(c, list(reversed(LOCK)))
        assert r.status_code == 200, r.text
        got = r.json()
        locked = deps.parse_lock(LOCK, TARGET, max_wheel_bytes=MB, max_layer_bytes=2 * MB)
        assert got["layer_id"] == deps.layer_id(locked, TARGET)
        assert got["size_bytes"] == len(ALPHA) + len(BETA)
        assert [w["sha256"] for w in got["missing"]] == [SHA_ALPHA, SHA_BETA]
        assert [(w["name"], w["version"]) for w in got["wheels"]] == [("alpha-pkg", "1.0"), ("beta-pkg", "2.5")]
        assert put(c, got["layer_id"], SHA_ALPHA, ALPHA).status_code == 201
        again = post_lock(c).json()
        assert again["layer_id"] == got["layer_id"]
        assert [w["sha256"] for w in again["missing"]] == [SHA_BETA]


def test_put_stores_once_then_answers_200(srv: LiveServer, runner: Any) -> None:
    with srv.client() as c:
        lid = post_lock(c).json()["layer_id"]
        r = put(c, lid, SHA_ALPHA, ALPHA)
        assert r.status_code == 201, r.text
        assert r.json() == {"sha256": SHA_ALPHA, "size": len(ALPHA), "stored": True}
        r = put(c, lid, SHA_ALPHA, ALPHA)
        assert r.status_code == 200 and r.json()["stored"] is False
    assert srv.core.store.wheel_data(SHA_ALPHA) == ALPHA


def test_put_checks_the_bytes_against_the_lock(srv: LiveServer, runner: Any) -> None:
    not_zip = b"not a zip"
    zip_without_wheel = io.BytesIO()
    with zipfile.ZipFile(zip_without_wheel, "w") as z:
        z.writestr("alpha/__init__.py", "")
    nz = zip_without_wheel.getvalue()
    wheels = [*LOCK, entry("gamma-1.0-py3-none-any.whl", not_zip), entry("delta-1.0-py3-none-any.whl", nz)]
    with srv.client() as c:
        lid = post_lock(c, wheels).json()["layer_id"]
        # the same size, other bytes: the hash is not the lock's
        forged = bytearray(ALPHA)
        forged[-1] ^= 1
        e = err(put(c, lid, SHA_ALPHA, bytes(forged)), 400)
        assert e["details"]["field"] == "body" and "SHA-256" in e["message"]
        e = err(put(c, lid, SHA_ALPHA, ALPHA[:-1]), 400)  # shorter
        assert e["details"]["field"] == "body"
        e = err(put(c, lid, wheels[2]["sha256"], not_zip), 400)  # hash right, not a zip
        assert e["details"]["field"] == "body" and "not a wheel" in e["message"]
        e = err(put(c, lid, wheels[3]["sha256"], nz), 400)  # a zip, but no .dist-info/WHEEL
        assert e["details"]["field"] == "body" and "not a wheel" in e["message"]
        # a wheel this layer does not list, and a layer that does not exist
        assert err(put(c, lid, "e" * 64, ALPHA), 404)["code"] == "not_found"
        assert put(c, "f" * 64, SHA_ALPHA, ALPHA).status_code == 404
        assert put(c, "not-a-layer", SHA_ALPHA, ALPHA).status_code == 404
        # more bytes than the lock says: 413, with a Content-Length and streamed without one
        e = err(put(c, lid, SHA_ALPHA, ALPHA + b"\0" * 10), 413)
        assert e["code"] == "payload_too_large"

        def chunks() -> Iterator[bytes]:
            yield ALPHA
            yield b"\0" * 10

        r = c.put(f"/v1/layers/{lid}/wheels/{SHA_ALPHA}", content=chunks())
        assert r.status_code == 413, r.text
    # nothing was stored by any of these
    for sha in (SHA_ALPHA, wheels[2]["sha256"], wheels[3]["sha256"]):
        assert srv.core.store.wheel_data(sha) is None


@pytest.mark.parametrize(("wheels", "status", "field"), [
    ([entry("big-1.0-py3-none-any.whl", b"x") | {"size": MB + 1}], 413, "wheels[0].size"),
    ([entry("a-1.0-py3-none-any.whl", b"a") | {"size": MB}, entry("b-1.0-py3-none-any.whl", b"b") | {"size": MB},
      entry("c-1.0-py3-none-any.whl", b"c")], 413, "wheels"),
    ([entry("numpy-2.0-cp311-cp311-manylinux_2_17_x86_64.whl", b"x")], 400, "wheels[0].filename"),
    ([entry("numpy-2.0-cp312-cp312-win_amd64.whl", b"x")], 400, "wheels[0].filename"),
    ([entry("x.tar.gz", b"x")], 400, "wheels[0].filename"),
    ([entry("a-1.0-py3-none-any.whl", b"x") | {"sha256": "Z" * 64}], 400, "wheels[0].sha256"),
    ([entry("a-1.0-py3-none-any.whl", b"x"), entry("a-2.0-py3-none-any.whl", b"y")], 400, "wheels[1].filename"),
    # a size that is not a size is bad input, not a body too large
    ([entry("a-1.0-py3-none-any.whl", b"x") | {"size": 0}], 400, "wheels[0].size"),
    ([entry("a-1.0-py3-none-any.whl", b"x") | {"size": "1"}], 400, "wheels[0].size"),
])
def test_post_lock_refuses_bad_locks_naming_the_field(srv: LiveServer, runner: Any, wheels: list[dict[str, Any]],
                                                      status: int, field: str) -> None:
    with srv.client() as c:
        e = err(post_lock(c, wheels), status)
        assert e["details"]["field"] == field, e
        if status == 413:
            assert "SEQUENCE_MAX_WHEEL_MB=1" in e["message"]


def test_post_lock_refuses_bad_bodies(srv: LiveServer, runner: Any) -> None:
    with srv.client() as c:
        assert err(c.post("/v1/layers", json={"target": TARGET.to_dict(), "wheels": LOCK, "x": 1}), 400)[
            "details"]["field"] == "x"
        assert err(c.post("/v1/layers", json=[1]), 400)["code"] == "bad_request"
        assert err(post_lock(c, target={**TARGET.to_dict(), "abi": "evil"}), 400)["details"]["field"] == "target.abi"
        assert c.post("/v1/layers", content=b"{", headers={"Content-Type": "application/json"}).status_code == 400


# -- deploying a layer ----------------------------------------------------------------------------


def test_deploy_needs_every_wheel_uploaded_then_shows_the_dependencies(srv: LiveServer, runner: Any) -> None:
    with srv.client() as c:
        lid = post_lock(c).json()["layer_id"]
        e = err(c.post("/v1/strategies", json=create_body(name="s", layer_id=lid)), 400)
        assert e["details"]["field"] == "layer_id" and sorted(e["details"]["missing"]) == sorted([SHA_ALPHA, SHA_BETA])
        assert put(c, lid, SHA_ALPHA, ALPHA).status_code == 201
        e = err(c.post("/v1/strategies", json=create_body(name="s", layer_id=lid)), 400)
        assert e["details"]["missing"] == [SHA_BETA] and "beta_pkg-2.5-py3-none-any.whl" in e["message"]
        assert put(c, lid, SHA_BETA, BETA).status_code == 201
        r = c.post("/v1/strategies", json=create_body(name="s", layer_id=lid))
        assert r.status_code == 201, r.text
        sid = r.json()["strategy_id"]
        dep = c.get(f"/v1/strategies/{sid}").json()["dependencies"]
        assert dep == {"layer_id": lid, "size_bytes": len(ALPHA) + len(BETA), "python": "3.12",
                       "packages": [{"name": "alpha-pkg", "version": "1.0"}, {"name": "beta-pkg", "version": "2.5"}]}
        # a redeploy without a layer runs with the standard library only
        r = c.post("/v1/strategies", json=create_body(name="s"))
        assert r.status_code == 200, r.text
        assert r.json()["dependencies"] is None
        assert c.get(f"/v1/strategies/{sid}").json()["dependencies"] is None


def test_a_list_reads_each_layer_once(srv: LiveServer, runner: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    with srv.client() as c:
        lid = upload_all(c)
        for i in range(4):
            assert c.post("/v1/strategies", json=create_body(name=f"s{i}", layer_id=lid)).status_code == 201
        assert c.post("/v1/strategies", json=create_body(name="plain")).status_code == 201
        reads: list[str] = []
        real = srv.core.store.get_layer
        monkeypatch.setattr(srv.core.store, "get_layer", lambda layer_id: reads.append(layer_id) or real(layer_id))
        rows = c.get("/v1/strategies").json()["strategies"]
    assert [r["dependencies"]["layer_id"] if r["dependencies"] else None for r in rows] == [lid] * 4 + [None]
    assert reads == [lid]


@pytest.mark.parametrize("lid", ["f" * 64, "F" * 64, "x", "../" * 10])
def test_deploy_with_an_unknown_layer_is_400(srv: LiveServer, lid: str) -> None:
    with srv.client() as c:
        e = err(c.post("/v1/strategies", json=create_body(name="s", layer_id=lid)), 400)
        assert e["details"]["field"] == "layer_id"
        assert c.get("/v1/strategies").json()["strategies"] == []


# -- hostile clients ------------------------------------------------------------------------------


def test_knowing_a_layers_id_and_hashes_is_not_having_its_wheels(srv: LiveServer, runner: Any) -> None:
    _cid_b, key_b = srv.new_client("mallory")
    with srv.client() as a, srv.client(key_b) as b:
        lid = upload_all(a)
        assert a.post("/v1/strategies", json=create_body(name="victim", layer_id=lid)).status_code == 201
        # B saw the lock (it is not secret: the hashes are public PyPI hashes) and tries to ride on A's upload.
        e = err(b.post("/v1/strategies", json=create_body(name="thief", layer_id=lid)), 400)
        assert e["details"]["field"] == "layer_id"
        got = post_lock(b).json()
        assert got["layer_id"] == lid
        assert sorted(w["sha256"] for w in got["missing"]) == sorted([SHA_ALPHA, SHA_BETA])
        # and cannot claim a wheel by sending other bytes under its hash
        assert put(b, lid, SHA_ALPHA, b"\0" * len(ALPHA)).status_code == 400
        assert err(b.post("/v1/strategies", json=create_body(name="thief", layer_id=lid)), 400)[
            "details"]["field"] == "layer_id"
        assert b.get("/v1/strategies").json()["strategies"] == []
        # Having the bytes is what counts: uploading them (already stored: 200) makes the layer B's to use.
        for fn, data in WHEELS.items():
            assert put(b, lid, hashlib.sha256(data).hexdigest(), data).status_code == 200, fn
        assert b.post("/v1/strategies", json=create_body(name="thief", layer_id=lid)).status_code == 201


def test_another_client_cannot_change_what_a_layer_says_it_was_locked_for(srv: LiveServer, runner: Any) -> None:
    """B posts A's lock first, claiming another interpreter: A's strategy still shows A's target."""
    _cid_b, key_b = srv.new_client("mallory")
    t313 = deps.target_for((3, 13, 0), "linux-x86_64", ("glibc", "2.36"))
    with srv.client() as a, srv.client(key_b) as b:
        forged = post_lock(b, target=t313.to_dict())
        assert forged.status_code == 200
        lid = upload_all(a)
        assert forged.json()["layer_id"] != lid  # another target is another layer
        sid = a.post("/v1/strategies", json=create_body(name="victim", layer_id=lid)).json()["strategy_id"]
        assert a.get(f"/v1/strategies/{sid}").json()["dependencies"]["python"] == "3.12"


def test_a_run_key_cannot_create_layers_or_upload_wheels(srv: LiveServer, runner: Any) -> None:
    h, rid = runner
    with srv.client() as c:
        lid = upload_all(c)
        c.post("/v1/strategies", json=create_body(name="s", layer_id=lid, start=True))
    claims = h.post(f"/v1/runners/{rid}/poll", json={"free_slots": 1, "wait_s": 5}).json()["claims"]
    assert len(claims) == 1
    run_key = claims[0]["api_key"]
    with srv.client(run_key) as rk:
        assert rk.get(f"/v1/strategies/{claims[0]['strategy_id']}").status_code == 200  # the key works
        assert err(post_lock(rk), 403)["code"] == "forbidden"
        assert err(put(rk, lid, SHA_ALPHA, ALPHA), 403)["code"] == "forbidden"


# -- the runner's side ----------------------------------------------------------------------------


def test_claim_names_the_layer_and_the_runner_fetches_only_its_wheels(srv: LiveServer, runner: Any) -> None:
    h, rid = runner
    other = make_wheel("other_pkg")
    with srv.client() as c:
        lid = upload_all(c)
        # a second layer, stored, that the run does not use
        olid = post_lock(c, [entry("other_pkg-1.0-py3-none-any.whl", other)]).json()["layer_id"]
        assert put(c, olid, hashlib.sha256(other).hexdigest(), other).status_code == 201
        c.post("/v1/strategies", json=create_body(name="s", layer_id=lid, start=True))
    claims = h.post(f"/v1/runners/{rid}/poll", json={"free_slots": 1, "wait_s": 5}).json()["claims"]
    assert len(claims) == 1
    spec = claims[0]
    assert spec["layer"] == {"layer_id": lid, "target": TARGET.to_dict(), "size_bytes": len(ALPHA) + len(BETA),
                             "wheels": LOCK}
    base = f"/v1/runners/{rid}/runs/{spec['run_id']}/wheels"
    r = h.get(f"{base}/{SHA_BETA}", params={"epoch": spec["epoch"]})
    assert r.status_code == 200 and r.content == BETA
    # a stored wheel of another layer, and one nobody has
    assert err(h.get(f"{base}/{hashlib.sha256(other).hexdigest()}", params={"epoch": spec["epoch"]}), 404)
    assert h.get(f"{base}/{'e' * 64}", params={"epoch": spec["epoch"]}).status_code == 404
    # a stale epoch
    assert err(h.get(f"{base}/{SHA_BETA}", params={"epoch": spec["epoch"] + 1}), 409)["code"] == "stale_run"
    # another runner (its own token) cannot read this run's wheels
    h2, rid2 = register_runner(srv)
    try:
        r = h2.get(f"/v1/runners/{rid2}/runs/{spec['run_id']}/wheels/{SHA_BETA}", params={"epoch": spec["epoch"]})
        assert r.status_code in (404, 409) and r.content != BETA
        r = h2.get(f"{base}/{SHA_BETA}", params={"epoch": spec["epoch"]})  # someone else's runner id
        assert r.status_code in (401, 403, 404) and r.content != BETA
    finally:
        h2.close()
    # a client key is not a runner token
    with srv.client() as c:
        assert c.get(f"{base}/{SHA_BETA}", params={"epoch": spec["epoch"]}).status_code == 401


def test_a_run_without_a_layer_serves_no_wheels(srv: LiveServer, runner: Any) -> None:
    h, rid = runner
    with srv.client() as c:
        upload_all(c)
        c.post("/v1/strategies", json=create_body(name="plain", start=True))
    spec = h.post(f"/v1/runners/{rid}/poll", json={"free_slots": 1, "wait_s": 5}).json()["claims"][0]
    assert spec["layer"] is None
    r = h.get(f"/v1/runners/{rid}/runs/{spec['run_id']}/wheels/{SHA_ALPHA}", params={"epoch": spec["epoch"]})
    assert err(r, 404)["code"] == "not_found"


# -- garbage collection (store) -------------------------------------------------------------------


def _layer(store: Store, cid: str, files: dict[str, bytes]) -> str:
    lock = deps.parse_lock([entry(fn, d) for fn, d in files.items()], TARGET, max_wheel_bytes=MB,
                           max_layer_bytes=MB)
    lid = deps.layer_id(lock, TARGET)
    store.register_layer(lid, TARGET.to_dict(), [w.to_dict() for w in lock], sum(w.size for w in lock))
    for w in lock:
        store.put_wheel(cid, w.sha256, files[w.filename])
    return lid


def test_collect_layers_deletes_unused_layers_and_their_wheels_only(store: Store) -> None:
    store.clock = clock = Clock()
    cid = store.create_client("acme")
    shared = make_wheel("shared_pkg")
    only_unused = make_wheel("gone_pkg")
    used = _layer(store, cid, {"shared_pkg-1.0-py3-none-any.whl": shared, "alpha_pkg-1.0-py3-none-any.whl": ALPHA})
    unused = _layer(store, cid, {"shared_pkg-1.0-py3-none-any.whl": shared,
                                 "gone_pkg-1.0-py3-none-any.whl": only_unused})
    deploy(store, cid, layer_id=used, start=False)
    # nothing is old enough yet: a zero retention keeps what was used at this very instant
    assert store.collect_layers(0) == (0, 0, 0)
    clock.now += 10
    assert store.collect_layers(3600) == (0, 0, 0)
    gone_sha = hashlib.sha256(only_unused).hexdigest()
    assert store.collect_layers(5) == (1, 1, len(only_unused))
    assert store.get_layer(unused) is None and store.get_layer(used) is not None
    assert store.wheel_data(gone_sha) is None
    assert store.wheel_data(hashlib.sha256(shared).hexdigest()) == shared
    assert store.wheel_data(SHA_ALPHA) == ALPHA
    assert store.wheels_missing(cid, [gone_sha, SHA_ALPHA]) == [gone_sha]
    # a layer touched recently survives; the referenced one survives however old
    clock.now += 1000
    assert store.collect_layers(0) == (0, 0, 0)
    again = _layer(store, cid, {"gone_pkg-1.0-py3-none-any.whl": only_unused})
    clock.now += 100
    store.touch_layer(again)
    clock.now += 1
    assert store.collect_layers(50) == (0, 0, 0)
    # once no strategy uses it, the old layer goes too
    deploy(store, cid, layer_id=None, start=False)
    clock.now += 100
    assert store.collect_layers(50) == (2, 3, len(shared) + len(ALPHA) + len(only_unused))
    assert store.get_layer(used) is None and store.wheel_data(SHA_ALPHA) is None


def test_register_layer_is_idempotent(store: Store) -> None:
    store.clock = clock = Clock()
    cid = store.create_client("acme")
    lid = _layer(store, cid, {"alpha_pkg-1.0-py3-none-any.whl": ALPHA})
    assert store.wheel_data(SHA_ALPHA) == ALPHA and store.wheels_missing(cid, [SHA_ALPHA]) == []
    first = store.get_layer(lid)
    assert first is not None
    clock.now += 50
    store.register_layer(lid, TARGET.to_dict(), first["wheels"], first["size_bytes"])
    row = store.get_layer(lid)
    assert row is not None and row["created_at"] == first["created_at"]
    assert row["last_used_at"] == first["last_used_at"] + 50
    assert store.put_wheel(cid, SHA_ALPHA, ALPHA) is False  # stored once
