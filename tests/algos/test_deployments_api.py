"""/v1/deployments (WASM algos) against a real coordinator on loopback, on SQLite and PostgreSQL.

The coordinator is the default one (the simulated market, the graph engine and the algo
manager, all started by the app's lifespan), so a started deployment really runs: its
``system`` log lines and live figures come from the manager, and the tests poll for them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import pytest
import wasmtime

from sequence.algos import abi
from sequence.api.services.algos import MAX_BODY, MAX_PARAMS
from tests.api.fake_runner import FakeRunner
from tests.helpers import LiveServer, create_body

T = TypeVar("T")
Q = "(param i32 i64 i64 i64 i64)"

GOOD_WAT = f"""(module
  (import "seq" "log" (func $log (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "hello from init")
  (func (export "init") (call $log (i32.const 0) (i32.const 15)))
  (func (export "on_quote") {Q}))"""
OTHER_WAT = f"""(module
  (import "seq" "log" (func $log (param i32 i32)))
  (memory (export "memory") 2)
  (data (i32.const 0) "second module")
  (func (export "init") (call $log (i32.const 0) (i32.const 13)))
  (func (export "on_quote") {Q}))"""
TRAP_WAT = f'(module (memory (export "memory") 1) (func (export "on_quote") {Q} unreachable))'

GOOD = bytes(wasmtime.wat2wasm(GOOD_WAT))
OTHER = bytes(wasmtime.wat2wasm(OTHER_WAT))
TRAP = bytes(wasmtime.wat2wasm(TRAP_WAT))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def body(name: str = "algo", wasm: bytes = GOOD, **kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "wasm_base64": b64(wasm), "symbols": ["BTC-USD"]}
    out.update(kw)
    return out


def deploy(c: httpx.Client, name: str = "algo", wasm: bytes = GOOD, **kw: Any) -> httpx.Response:
    return c.post("/v1/deployments", json=body(name, wasm, **kw))


def wait_for(fn: Callable[[], T | None], what: str, timeout: float = 30.0) -> T:
    """Poll *fn* until it answers something truthy (a deadline, never a duration assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def lines(c: httpx.Client, ref: str, **params: Any) -> list[dict[str, Any]]:
    r = c.get(f"/v1/deployments/{ref}/logs", params={"limit": 10000, **params})
    assert r.status_code == 200, r.text
    out: list[dict[str, Any]] = r.json()["lines"]
    return out


def texts(c: httpx.Client, ref: str, stream: str | None = None) -> list[str]:
    return [x["line"] for x in lines(c, ref) if stream is None or x["stream"] == stream]


def no_module_bytes(r: httpx.Response, *modules: bytes) -> None:
    assert "wasm_base64" not in r.text
    for m in modules:
        assert b64(m) not in r.text
        assert b64(m)[8:40] not in r.text  # not even a piece of it

    def walk(v: Any) -> None:
        if isinstance(v, dict):
            assert "wasm" not in v and "wasm_base64" not in v, v.keys()
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    walk(r.json())


def err_fields(r: httpx.Response) -> set[str]:
    err = r.json()["error"]
    d = err["details"]
    out = {d["field"]} if "field" in d else set()
    out.update(e["field"] for e in d.get("errors", []))
    return out


# -- deploy, redeploy, list, inspect ------------------------------------------------------------------


def test_deploy_redeploy_list_and_inspect(any_server: LiveServer) -> None:
    with any_server.client() as c:
        r = deploy(c, "taker", params={"buy_below": 0.6, "qty": 2, "live": True, "tag": "x"})
        assert r.status_code == 201, r.text
        d = r.json()
        dep = d["deployment_id"]
        assert dep.startswith("dep_")
        assert d["name"] == "taker" and d["status"] == "stopped" and d["desired_state"] == "stopped"
        assert d["symbols"] == ["BTC-USD"] and d["sandbox"] is False
        assert d["params"] == {"buy_below": "0.6", "qty": "2", "live": "true", "tag": "x"}
        assert d["wasm_sha256"] == hashlib.sha256(GOOD).hexdigest() and d["wasm_size"] == len(GOOD)
        assert d["module"] == {"imports": ["seq.log"], "exports": ["memory", "init", "on_quote"],
                               "memory_pages": 1}
        assert d["restarts"] == 0 and d["last_reason"] is None and d["live"] is None
        no_module_bytes(r, GOOD)

        r2 = c.post("/v1/deployments", json=body("taker", OTHER, symbols=["ETH-USD", "BTC-USD"]))
        assert r2.status_code == 200, r2.text
        d2 = r2.json()
        assert d2["deployment_id"] == dep
        assert d2["wasm_sha256"] == hashlib.sha256(OTHER).hexdigest() != d["wasm_sha256"]
        assert d2["symbols"] == ["ETH-USD", "BTC-USD"] and d2["params"] == {}
        assert d2["module"]["memory_pages"] == 2
        no_module_bytes(r2, GOOD, OTHER)

        second = deploy(c, "second")
        assert second.status_code == 201 and second.json()["deployment_id"] != dep

        listed = c.get("/v1/deployments")
        assert listed.status_code == 200
        assert [x["name"] for x in listed.json()["deployments"]] == ["taker", "second"]
        no_module_bytes(listed, GOOD, OTHER)

        for ref in (dep, "taker"):
            got = c.get(f"/v1/deployments/{ref}")
            assert got.status_code == 200, got.text
            g = got.json()
            assert g["deployment_id"] == dep and g["name"] == "taker"
            assert g["wasm_sha256"] == d2["wasm_sha256"] and g["recent_graphs"] == []
            no_module_bytes(got, GOOD, OTHER)
        for ref in ("nope", "dep_aaaaaaaaaaaaaaaaaaaa", "x" * 300, "..", "%00"):
            assert c.get(f"/v1/deployments/{ref}").status_code == 404, ref


def test_start_logs_redeploy_and_stop_follow_the_manager(any_server: LiveServer) -> None:
    with any_server.client() as c:
        dep = deploy(c, "runner").json()["deployment_id"]
        assert lines(c, dep) == []
        r = c.post(f"/v1/deployments/{dep}/start")
        assert r.status_code == 200, r.text
        assert r.json()["desired_state"] == "running" and r.json()["status"] in ("queued", "running")
        no_module_bytes(r, GOOD)

        def running() -> dict[str, Any] | None:
            g = c.get(f"/v1/deployments/{dep}").json()
            return g if g["status"] == "running" and g["live"] and g["live"]["quotes"] > 0 else None

        g = wait_for(running, "the deployment to run and see quotes")
        assert g["epoch"] == 1 and g["live"]["epoch"] == 1 and g["started_at"]
        assert g["live"]["memory_bytes"] == 65536 and g["live"]["calls"] >= g["live"]["quotes"]
        wait_for(lambda: "hello from init" in texts(c, dep, "algo"), "the module's init line")
        first = lines(c, dep)
        assert first[0]["stream"] == "system" and first[0]["line"].startswith("started (epoch 1)")
        assert "BTC-USD" in first[0]["line"] and first[0]["epoch"] == 1
        assert [x["seq"] for x in first] == sorted(x["seq"] for x in first)
        # after_seq and tail page through the same lines
        assert lines(c, dep, after_seq=first[0]["seq"])[0]["seq"] > first[0]["seq"]
        assert lines(c, dep, tail=1) == [lines(c, dep)[-1]]
        last = lines(c, dep)[-1]["seq"]
        assert lines(c, dep, tail=1, after_seq=last) == lines(c, dep, tail=1)  # tail ignores after_seq

        # A redeploy of a running deployment restarts it with the new module.
        assert deploy(c, "runner", OTHER).status_code == 200
        wait_for(lambda: "second module" in texts(c, dep, "algo"), "the new module's init line")
        sys_lines = texts(c, dep, "system")
        assert any(x.startswith("stopped: redeployed") for x in sys_lines), sys_lines
        assert any(x.startswith("started (epoch 2)") for x in sys_lines), sys_lines

        r = c.post(f"/v1/deployments/{dep}/stop")
        assert r.status_code == 200 and r.json()["desired_state"] == "stopped"
        wait_for(lambda: c.get(f"/v1/deployments/{dep}").json()["status"] == "stopped", "the stop")
        wait_for(lambda: "stopped: stopped by request" in texts(c, dep, "system"), "the stop line")
        g = c.get(f"/v1/deployments/{dep}").json()
        assert g["live"] is None and g["last_reason"] == "stopped by request"
        assert dep not in any_server.core.algos.algos  # type: ignore[union-attr]


def test_deploy_with_start_runs_and_a_trap_fails_it_with_the_reason(any_server: LiveServer) -> None:
    with any_server.client() as c:
        r = deploy(c, "trapper", TRAP, start=True)
        assert r.status_code == 201 and r.json()["desired_state"] == "running"
        dep = r.json()["deployment_id"]

        def failed() -> dict[str, Any] | None:
            g = c.get(f"/v1/deployments/{dep}").json()
            return g if g["last_reason"] else None

        g = wait_for(failed, "the trap")
        assert "unreachable" in g["last_reason"]
        assert g["consecutive_failures"] >= 1 and g["last_exit_at"]
        assert g["desired_state"] == "running"  # it restarts with the backoff, like a failed run
        wait_for(lambda: any(x.startswith("failed: trap:") for x in texts(c, dep, "system")), "the failed line")
        # Stopping it ends the failure series.
        assert c.post(f"/v1/deployments/{dep}/stop").status_code == 200
        wait_for(lambda: c.get(f"/v1/deployments/{dep}").json()["status"] in ("stopped", "failed")
                 and c.get(f"/v1/deployments/{dep}").json()["desired_state"] == "stopped", "the stop")


def test_delete_purges_the_deployment_and_stops_it(any_server: LiveServer) -> None:
    with any_server.client() as c:
        dep = deploy(c, "gone", start=True).json()["deployment_id"]
        wait_for(lambda: dep in any_server.core.algos.algos, "the manager to run it")  # type: ignore[union-attr]
        r = c.delete(f"/v1/deployments/{dep}")
        assert r.status_code == 200 and r.json() == {"deployment_id": dep, "deleted": True}
        for path in ("", "/logs"):
            assert c.get(f"/v1/deployments/{dep}{path}").status_code == 404
        assert c.get("/v1/deployments/gone").status_code == 404
        for verb in ("start", "stop"):
            assert c.post(f"/v1/deployments/{dep}/{verb}").status_code == 404
        assert c.delete(f"/v1/deployments/{dep}").status_code == 404
        assert c.get("/v1/deployments").json() == {"deployments": []}
        wait_for(lambda: dep not in any_server.core.algos.algos, "the manager to drop it")  # type: ignore[union-attr]
        # The name is free again: a new deployment, a new id.
        again = deploy(c, "gone")
        assert again.status_code == 201 and again.json()["deployment_id"] != dep


# -- bad input ----------------------------------------------------------------------------------------------

WASI = bytes(wasmtime.wat2wasm(f"""(module
  (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1) (func (export "on_quote") {Q}))"""))
NO_HANDLER = bytes(wasmtime.wat2wasm('(module (memory (export "memory") 1) (func (export "init")))'))
BAD_SUBMIT = bytes(wasmtime.wat2wasm(f"""(module
  (import "seq" "submit" (func (param i32 i32 i64 i64) (result i64)))
  (memory (export "memory") 1) (func (export "on_quote") {Q}))"""))

# Compiled before and stored, then failed at every start: refused at deploy now.
BIG_MEMORY = bytes(wasmtime.wat2wasm(f'(module (memory (export "memory") 257) (func (export "on_quote") {Q}))'))
SHARED_MEMORY = bytes(wasmtime.wat2wasm(f'(module (memory (export "memory") 1 1 shared) (func (export "on_quote") {Q}))'))
MANY_FUNCTIONS = bytes(wasmtime.wat2wasm(f'(module (memory (export "memory") 1) {"(func)" * 20_001} '
                                         f'(func (export "on_quote") {Q}))'))
BIG_FUNCTION = bytes(wasmtime.wat2wasm(f'(module (memory (export "memory") 1) (func (export "on_quote") {Q} '
                                       f'(local i32) {"(local.set 5 (i32.const 1))" * 17_000}))'))

# (what, the body (or raw bytes), status, the field named, details.item)
BAD: list[tuple[str, Any, int, str | None, str | None]] = [
    ("bad base64", body(wasm_base64="!!! not base64 !!!"), 400, "wasm_base64", None),
    ("base64 with junk after", body(wasm_base64=b64(GOOD) + "*"), 400, "wasm_base64", None),
    ("text, not a binary", body(wasm=b"(module)"), 400, "wasm_base64", "wasm"),
    ("garbage", body(wasm=b"\0asm\x01\0\0\0" + b"\xff" * 64), 400, "wasm_base64", "wasm"),
    ("a WASI import", body(wasm=WASI), 400, "wasm_base64", "import wasi_snapshot_preview1.fd_write"),
    ("a wrong submit", body(wasm=BAD_SUBMIT), 400, "wasm_base64", "import seq.submit"),
    ("no handler", body(wasm=NO_HANDLER), 400, "wasm_base64", "exports"),
    ("an unknown symbol", body(symbols=["BTC-USD", "NOPE-NOT-A-SYMBOL"]), 400, "symbols[1]", None),
    ("an empty symbol", body(symbols=[""]), 400, "symbols[0]", None),
    ("a duplicate symbol", body(symbols=["BTC-USD", "ETH-USD", "BTC-USD"]), 400, "symbols", None),
    ("no symbols", body(symbols=[]), 422, "symbols", None),
    ("17 symbols", body(symbols=[f"S{i}" for i in range(17)]), 422, "symbols", None),
    ("a symbol that is a number", body(symbols=[5]), 422, "symbols.0", None),
    ("a bad name", body(name="bad name!"), 400, "name", None),
    ("a name with a slash", body(name="a/b"), 400, "name", None),
    ("a name starting with a dash", body(name="-x"), 400, "name", None),
    ("an empty name", body(name=""), 422, "name", None),
    ("a 65-character name", body(name="a" * 65), 422, "name", None),
    ("a name ending in a newline", body(name="nl\n"), 400, "name", None),  # "$" matched before it
    # named as another's id, it was unreachable by name, and deleting "it" deleted the other
    ("a name shaped like a deployment id", body(name="dep_nojt71knitrm2z4npn9k"), 400, "name", None),
    ("a name shaped like a strategy id", body(name="3f1c6a2e-0000-4000-8000-000000000001"), 400, "name", None),
    ("a param key ending in a newline", body(params={"qty\n": 1}), 400, "params.qty\n", None),
    ("a memory over the cap", body(wasm=BIG_MEMORY), 400, "wasm_base64", "memory"),
    ("a shared memory", body(wasm=SHARED_MEMORY), 400, "wasm_base64", "memory"),
    ("too many functions", body(wasm=MANY_FUNCTIONS), 400, "wasm_base64", "functions"),
    ("one function too big to compile cheaply", body(wasm=BIG_FUNCTION), 400, "wasm_base64", "functions"),
    ("a bad param key", body(params={"bad key": 1}), 400, "params.bad key", None),
    ("a param key starting with a digit", body(params={"1x": 1}), 400, "params.1x", None),
    ("too many params", body(params={f"k{i}": i for i in range(MAX_PARAMS + 1)}), 400, "params", None),
    ("a long param value", body(params={"k": "v" * 1025}), 400, "params.k", None),
    ("a param that is a list", body(params={"k": [1]}), 422, "params.k", None),
    ("params that are a list", body(params=[1, 2]), 422, "params", None),
    ("wasm_base64 a number", body(wasm_base64=123), 422, "wasm_base64", None),
    ("sandbox a list", body(sandbox=[1]), 422, "sandbox", None),
    ("start an object", body(start={}), 422, "start", None),
    # pydantic's lax mode took "no", "off", 0 and "f" for false: one typo from trading live
    ("sandbox the string 'no'", body(sandbox="no"), 422, "sandbox", None),
    ("sandbox the number 1", body(sandbox=1), 422, "sandbox", None),
    ("start the string 'true'", body(start="true"), 422, "start", None),
    ("an unknown field", body(wasm_source="x"), 422, "wasm_source", None),
    ("no name", {k: v for k, v in body().items() if k != "name"}, 422, "name", None),
    ("no module", {k: v for k, v in body().items() if k != "wasm_base64"}, 422, "wasm_base64", None),
    ("a non-object body", [body()], 400, None, None),
    ("a string body", "taker", 400, None, None),
    ("not JSON", b"{not json", 400, "body", None),
]


def test_bad_input_is_refused_with_the_field_and_nothing_is_stored(any_server: LiveServer) -> None:
    problems = []
    with any_server.client() as c:
        for what, payload, status, field, item in BAD:
            if isinstance(payload, bytes):
                r = c.post("/v1/deployments", content=payload, headers={"Content-Type": "application/json"})
            else:
                r = c.post("/v1/deployments", json=payload)
            got = (r.status_code, err_fields(r) if r.status_code >= 400 else set(),
                   r.json().get("error", {}).get("details", {}).get("item"))
            named = field is None or any(f == field or f.startswith(field + ".") for f in got[1])
            if r.status_code != status or not named or got[2] != item:
                problems.append((what, (status, field, item), got, r.text[:300]))
            elif r.status_code >= 400:
                message = r.json()["error"]["message"]
                if not message or (item is not None and item not in message and "module" not in message):
                    problems.append((what, "unclear message", message))
        assert problems == []
        assert c.get("/v1/deployments").json() == {"deployments": []}


def test_an_oversize_module_is_413(any_server: LiveServer) -> None:
    big = b"\0asm\x01\0\0\0" + b"\0" * (abi.MAX_MODULE_BYTES - 7)
    with any_server.client() as c:
        r = c.post("/v1/deployments", json=body("big", big))
        assert r.status_code == 413, r.text[:300]
        assert r.json()["error"]["details"].get("field") == "wasm_base64"
        assert str(abi.MAX_MODULE_BYTES) in r.json()["error"]["message"]
        # A body over the limit is refused before it is read.
        r = c.post("/v1/deployments", content=b"{" + b" " * (MAX_BODY + 10) + b"}",
                   headers={"Content-Type": "application/json"})
        assert r.status_code == 413, r.text[:300]
        assert c.get("/v1/deployments").json() == {"deployments": []}


def test_logs_query_parameters_are_checked(any_server: LiveServer) -> None:
    with any_server.client() as c:
        dep = deploy(c).json()["deployment_id"]
        for q in ("after_seq=-1", "tail=0", "tail=10001", "limit=0", "after_seq=x"):
            r = c.get(f"/v1/deployments/{dep}/logs?{q}")
            assert r.status_code in (400, 422), (q, r.text)
            assert r.json()["error"]["message"]


# -- who may see and change what ---------------------------------------------------------------------------


def test_another_client_cannot_see_or_touch_a_deployment(any_server: LiveServer) -> None:
    _cid, other_key = any_server.new_client("mallory")
    with any_server.client() as c:
        dep = deploy(c, "mine", start=True).json()["deployment_id"]
    with any_server.client(other_key) as m:
        assert m.get("/v1/deployments").json() == {"deployments": []}
        for ref in (dep, "mine"):
            assert m.get(f"/v1/deployments/{ref}").status_code == 404
            assert m.get(f"/v1/deployments/{ref}/logs").status_code == 404
            assert m.post(f"/v1/deployments/{ref}/stop").status_code == 404
            assert m.post(f"/v1/deployments/{ref}/start").status_code == 404
            assert m.delete(f"/v1/deployments/{ref}").status_code == 404
        # The same name is another deployment of the other client's.
        r = deploy(m, "mine", OTHER)
        assert r.status_code == 201 and r.json()["deployment_id"] != dep
        assert [x["deployment_id"] for x in m.get("/v1/deployments").json()["deployments"]] == [r.json()["deployment_id"]]
    with any_server.client() as c:
        g = c.get(f"/v1/deployments/{dep}").json()
        assert g["desired_state"] == "running" and g["wasm_sha256"] == hashlib.sha256(GOOD).hexdigest()
        assert [x["deployment_id"] for x in c.get("/v1/deployments").json()["deployments"]] == [dep]
        c.post(f"/v1/deployments/{dep}/stop")


def test_without_a_key_every_route_is_401(any_server: LiveServer) -> None:
    with any_server.client("") as anon:
        assert anon.get("/v1/deployments").status_code == 401
        assert anon.post("/v1/deployments", json=body()).status_code == 401
        assert anon.get("/v1/deployments/x").status_code == 401
        assert anon.post("/v1/deployments/x/start").status_code == 401
        assert anon.delete("/v1/deployments/x").status_code == 401
        assert anon.get("/v1/deployments/x/logs").status_code == 401


def test_a_run_scoped_key_cannot_manage_algos(any_server: LiveServer) -> None:
    with any_server.client() as c:
        dep = deploy(c, "owned").json()["deployment_id"]
        assert c.post("/v1/strategies", json=create_body(name="strat", start=True)).status_code == 201
    runner = FakeRunner(any_server)
    try:
        run_key = runner.claim_one()["api_key"]
        with any_server.client(run_key) as rk:
            for r in (rk.post("/v1/deployments", json=body("sneaky")),
                      rk.post("/v1/deployments", json=body("owned", OTHER, start=True)),
                      rk.post(f"/v1/deployments/{dep}/start"), rk.post(f"/v1/deployments/{dep}/stop"),
                      rk.delete(f"/v1/deployments/{dep}"), rk.post("/v1/deployments/owned/start")):
                assert r.status_code == 403, r.text
                assert r.json()["error"]["code"] == "forbidden"
            assert rk.get("/v1/deployments").json() == {"deployments": []}
            assert rk.get(f"/v1/deployments/{dep}").status_code == 404
            assert rk.get(f"/v1/deployments/{dep}/logs").status_code == 404
    finally:
        runner.close()
    with any_server.client() as c:
        listed = c.get("/v1/deployments").json()["deployments"]
        assert [(x["name"], x["desired_state"], x["wasm_sha256"]) for x in listed] == [
            ("owned", "stopped", hashlib.sha256(GOOD).hexdigest())]


def test_a_test_key_always_deploys_paper(any_server: LiveServer) -> None:
    assert any_server.test_key.startswith("seq_test_")
    with any_server.client(any_server.test_key) as t:
        r = deploy(t, "paper", sandbox=False, start=True)
        assert r.status_code == 201 and r.json()["sandbox"] is True
        dep = r.json()["deployment_id"]
        assert t.get(f"/v1/deployments/{dep}").json()["sandbox"] is True
        r2 = deploy(t, "paper", OTHER, sandbox=False)  # a redeploy cannot turn paper off
        assert r2.status_code == 200 and r2.json()["sandbox"] is True
        started = wait_for(lambda: [x for x in texts(t, dep, "system") if x.startswith("started")], "the start")
        assert "paper" in started[0] and "live where" not in started[0]
        t.post(f"/v1/deployments/{dep}/stop")
    with any_server.client() as c:  # a live key may ask for paper, and gets what it asks
        assert deploy(c, "asked", sandbox=True).json()["sandbox"] is True
        assert deploy(c, "live").json()["sandbox"] is False


def test_a_test_key_cannot_start_a_live_algo(any_server: LiveServer) -> None:
    """A test key deployed paper only, but could start (so run live) a live key's algo."""
    with any_server.client() as c:
        dep = deploy(c, "live-one").json()["deployment_id"]
    with any_server.client(any_server.test_key) as t:
        r = t.post(f"/v1/deployments/{dep}/start")
        assert r.status_code == 403 and "paper only" in r.json()["error"]["message"], r.text
        assert t.get(f"/v1/deployments/{dep}").json()["desired_state"] == "stopped"
        assert t.post(f"/v1/deployments/{dep}/stop").status_code == 200  # stopping is harmless
    with any_server.client() as c:
        assert c.post(f"/v1/deployments/{dep}/start").json()["desired_state"] == "running"
        c.post(f"/v1/deployments/{dep}/stop")


def test_revoking_a_key_stops_the_algos_it_runs_as_and_a_start_takes_the_starters_key(
    any_server: LiveServer,
) -> None:
    """A revoked key 'stops working at once': its algos placed orders on regardless."""
    with any_server.client() as c:
        k = c.post("/v1/keys", json={"mode": "live", "name": "short-lived"}).json()
        with any_server.client(k["key"]) as kc:
            dep = deploy(kc, "keyed", start=True, sandbox=True).json()["deployment_id"]
            wait_for(lambda: [x for x in texts(c, dep, "system") if x.startswith("started")], "the start")
        assert c.delete(f"/v1/keys/{k['key_id']}").status_code == 200
        d = wait_for(lambda: (lambda d: d if d["status"] == "stopped" else None)(
            c.get(f"/v1/deployments/{dep}").json()), "the algo to stop")
        assert d["desired_state"] == "stopped" and "key it runs as was revoked" in d["last_reason"], d
        wait_for(lambda: [x for x in texts(c, dep, "system") if "key it runs as was revoked" in x], "the reason")
        # Started again with the client's key, it runs as that key.
        me = c.get("/v1/me").json()
        assert c.post(f"/v1/deployments/{dep}/start").json()["desired_state"] == "running"
        wait_for(lambda: c.get(f"/v1/deployments/{dep}").json()["status"] == "running", "running again")
        assert any_server.core.store.get_deployment(me["client_id"], dep)["key_id"] == me["key_id"]
        c.post(f"/v1/deployments/{dep}/stop")


def test_a_deployment_reads_its_params_as_strings(any_server: LiveServer) -> None:
    """The params reach the module (seq.param) as the API shows them."""
    wat = f"""(module
      (import "seq" "param" (func $param (param i32 i32 i32 i32) (result i32)))
      (import "seq" "log" (func $log (param i32 i32)))
      (memory (export "memory") 1)
      (data (i32.const 0) "greeting")
      (func (export "init") (call $log (i32.const 100) (call $param (i32.const 0) (i32.const 8)
                                                                  (i32.const 100) (i32.const 64))))
      (func (export "on_quote") {Q}))"""
    with any_server.client() as c:
        r = deploy(c, "params", bytes(wasmtime.wat2wasm(wat)), params={"greeting": "héllo wörld"}, start=True)
        dep = r.json()["deployment_id"]
        wait_for(lambda: "héllo wörld" in texts(c, dep, "algo"), "the param in the log")
        started = next(x for x in texts(c, dep, "system") if x.startswith("started"))
        assert json.dumps({"greeting": "héllo wörld"}, sort_keys=True) in started
        c.post(f"/v1/deployments/{dep}/stop")


@pytest.mark.parametrize("verb", ["start", "stop"])
def test_start_and_stop_are_idempotent(server: LiveServer, verb: str) -> None:
    with server.client() as c:
        dep = deploy(c, "idem").json()["deployment_id"]
        a = c.post(f"/v1/deployments/{dep}/{verb}")
        b = c.post(f"/v1/deployments/idem/{verb}")
        assert a.status_code == b.status_code == 200
        assert a.json()["desired_state"] == b.json()["desired_state"] == ("running" if verb == "start" else "stopped")
        c.post(f"/v1/deployments/{dep}/stop")
