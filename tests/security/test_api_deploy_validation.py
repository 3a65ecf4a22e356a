"""Values that cannot run are refused at deploy, not in a restart loop.

Before: an env value with a NUL byte, or of 200 KiB, was accepted (201) and
failed only at run time, over and over. Now such values are a 400 at deploy
naming the variable; the workspace quota and egress policy are validated,
stored and handed to the runner.
"""

from __future__ import annotations

import base64
import io
import tarfile
from pathlib import Path

import httpx
import pytest

from sequence.bundle import sha256_hex
from tests.algos.test_deployments_api import body as algo_body
from tests.api.fake_runner import FakeRunner
from tests.helpers import LiveServer, create_body, start_server

KIB = 1024


@pytest.mark.parametrize(("slots", "field"), [
    ({"env": {"GOOD": "x", "BAD": "a\x00b"}}, "env.BAD"),
    ({"secrets": {"TOKEN": "\x00"}}, "secrets.TOKEN"),
    ({"env": {"HUGE": "x" * (200 * KIB)}}, "env.HUGE"),
    ({"secrets": {"BIG": "y" * (33 * KIB)}}, "secrets.BIG"),
    ({"env": {f"V{i}": "z" * (30 * KIB) for i in range(4)}, "secrets": {"S": "z" * (30 * KIB)}}, "env"),
])
def test_values_that_cannot_be_execd_are_refused_at_deploy(any_server: LiveServer, slots: dict, field: str) -> None:
    with any_server.client() as c:
        r = c.post("/v1/strategies", json=create_body(name="s", start=True, **slots))
        assert r.status_code == 400, r.text[:300]
        err = r.json()["error"]
        assert err["code"] == "bad_request" and err["details"]["field"] == field
        name = field.partition(".")[2]
        if name:
            assert name in err["message"] and err["details"]["name"] == name
        assert "\x00" not in r.text and "zzzz" not in r.text  # values are never echoed
        assert c.get("/v1/strategies").json()["strategies"] == []


def test_values_just_under_the_limits_are_accepted(server: LiveServer) -> None:
    env = {"A": "x" * (32 * KIB), "B": "y" * (32 * KIB), "C": "z" * (32 * KIB)}
    with server.client() as c:
        assert c.post("/v1/strategies", json=create_body(name="s", env=env)).status_code == 201


@pytest.mark.parametrize("extra", [{"disk_mb": 8}, {"disk_mb": 70000}, {"disk_mb": "1024"}, {"egress": "open"},
                                   {"egress": None}])
def test_quota_and_egress_are_validated(server: LiveServer, extra: dict) -> None:
    with server.client() as c:
        r = c.post("/v1/strategies", json=create_body(name="s", **extra))
        assert r.status_code == 422, r.text[:300]
        assert r.json()["error"]["details"]["errors"][0]["field"] == next(iter(extra))


def test_quota_and_egress_are_stored_returned_and_handed_to_the_runner(any_server: LiveServer) -> None:
    with any_server.client() as c:
        s = c.post("/v1/strategies", json=create_body(name="d", start=True)).json()
        assert (s["disk_mb"], s["egress"]) == (1024, "public")  # the defaults
        s = c.post("/v1/strategies", json=create_body(name="s", disk_mb=64, egress="none", start=True)).json()
        assert (s["disk_mb"], s["egress"]) == (64, "none")
        assert c.get("/v1/strategies/s").json()["egress"] == "none"
    runner = FakeRunner(any_server)
    try:
        specs = {x["name"]: x for x in runner.claim(2)}
        if len(specs) < 2:
            specs.update({x["name"]: x for x in runner.claim(2)})
        assert (specs["s"]["disk_mb"], specs["s"]["egress"]) == (64, "none")
        assert (specs["d"]["disk_mb"], specs["d"]["egress"]) == (1024, "public")
        settings = any_server.settings
        for spec in specs.values():
            assert spec["log_rate_lines"] == settings.log_rate_lines == 10_000
            assert spec["log_burst_lines"] == settings.log_burst_lines == 100_000
    finally:
        runner.close()


@pytest.mark.parametrize(("extra", "field"), [({"name": "nl\n"}, "name"), ({"env": {"FOO\n": "x"}}, "env"),
                                              # an id as a name: reached the other strategy
                                              ({"name": "3f1c6a2e-0000-4000-8000-000000000001"}, "name"),
                                              ({"name": "dep_nojt71knitrm2z4npn9k"}, "name")])
def test_a_trailing_newline_is_not_a_valid_name(server: LiveServer, extra: dict, field: str) -> None:
    """``^…$`` also matched before a final newline: a strategy named "nl\\n" was created and
    could then not be reached by its name."""
    body = create_body(**{"name": "s", **extra})
    with server.client() as c:
        r = c.post("/v1/strategies", json=body)
        assert r.status_code in (400, 422), r.text[:300]
        assert field in r.text
        assert c.get("/v1/strategies").json()["strategies"] == []


def _tar_with(extra: tarfile.TarInfo, first: tarfile.TarInfo | None = None) -> bytes:
    """A tar.gz holding main.py, then (optionally) *first* and the hostile member *extra*."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        src = b"print('hi')\n"
        info = tarfile.TarInfo("main.py")
        info.size = len(src)
        tar.addfile(info, io.BytesIO(src))
        for m in (first, extra):
            if m is not None:
                tar.addfile(m, io.BytesIO(b"x" * m.size) if m.isreg() else None)
    return buf.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", size: int = 0) -> tarfile.TarInfo:
    m = tarfile.TarInfo(name)
    m.type, m.linkname, m.size = kind, link, size
    return m


@pytest.mark.parametrize(("extra", "first", "words"), [
    (_member("/etc/cron.d/x", size=1), None, "absolute paths"),
    (_member("../../escape.py", size=1), None, "'..' components"),
    (_member("a/../../b", size=1), None, "'..' components"),
    (_member("out", tarfile.SYMTYPE, "/etc/shadow"), None, "symlink to absolute path"),
    (_member("sub/out", tarfile.SYMTYPE, "../../.."), None, "escapes the workspace"),
    (_member("h", tarfile.LNKTYPE, "main.py"), None, "hard links"),
    (_member("dev", tarfile.CHRTYPE), None, "device entries"),
    (_member("fifo", tarfile.FIFOTYPE), None, "FIFO entries"),
    (_member("lnk/x.py", size=1), _member("lnk", tarfile.SYMTYPE, "."), "writes through symlink"),
    (_member("main.py", tarfile.SYMTYPE, "x"), None, "symlink over an existing entry"),
])
def test_an_artifact_the_runner_would_refuse_is_refused_at_deploy(
        server: LiveServer, extra: tarfile.TarInfo, first: tarfile.TarInfo | None, words: str) -> None:
    """These were stored (201) and failed only when a runner unpacked them, at every start;
    now the coordinator applies the runner's member rules (sequence/archive.py) at deploy."""
    art = _tar_with(extra, first)
    body = create_body(name="s", start=True)
    body.update(artifact_base64=base64.b64encode(art).decode(), artifact_sha256=sha256_hex(art))
    with server.client() as c:
        r = c.post("/v1/strategies", json=body)
        assert r.status_code == 400, r.text[:300]
        err = r.json()["error"]
        assert err["details"]["field"] == "artifact" and words in err["message"], err
        assert repr(extra.name) in err["message"]  # the member is named
        assert c.get("/v1/strategies").json()["strategies"] == []


def test_links_that_stay_inside_and_dot_folders_are_accepted(server: LiveServer) -> None:
    art = _tar_with(_member("pkg/alias.py", tarfile.SYMTYPE, "../main.py"), _member("./pkg/", tarfile.DIRTYPE))
    body = create_body(name="s")
    body.update(artifact_base64=base64.b64encode(art).decode(), artifact_sha256=sha256_hex(art))
    with server.client() as c:
        assert c.post("/v1/strategies", json=body).status_code == 201


def test_a_client_has_at_most_its_quota_of_strategies_and_algos(db_url: str, tmp_path: Path) -> None:
    """Nothing bounded how many strategies (each with its artifact, up to 50 MiB) or algo
    deployments (each with a module, up to 4 MiB) one key could create: a loop filled the
    store's disk. Past SEQUENCE_MAX_STRATEGIES / SEQUENCE_MAX_ALGOS a new one is a 409; a
    redeploy by name, or a new one after a delete, still works."""
    srv = start_server(tmp_path / "data", database_url=db_url, environ={}, max_strategies=3, max_algos=2)
    try:
        with srv.client() as c:
            for i in range(3):
                assert c.post("/v1/strategies", json=create_body(name=f"s{i}")).status_code == 201
            r = c.post("/v1/strategies", json=create_body(name="one-more"))
            assert r.status_code == 409, r.text
            err = r.json()["error"]
            assert err["code"] == "quota_exceeded" and err["details"] == {"field": "name", "limit": 3}
            assert "SEQUENCE_MAX_STRATEGIES" in err["message"] and "sequence strategy delete" in err["message"]
            assert c.post("/v1/strategies", json=create_body(name="s1")).status_code == 200  # a redeploy
            assert c.delete("/v1/strategies/s0").status_code in (200, 202, 204)
            assert c.post("/v1/strategies", json=create_body(name="one-more")).status_code == 201
            assert len(c.get("/v1/strategies").json()["strategies"]) == 3

            for name in ("a0", "a1"):
                assert c.post("/v1/deployments", json=algo_body(name=name)).status_code == 201
            r = c.post("/v1/deployments", json=algo_body(name="a2"))
            assert r.status_code == 409 and r.json()["error"]["code"] == "quota_exceeded", r.text
            assert "SEQUENCE_MAX_ALGOS" in r.json()["error"]["message"]
            assert c.post("/v1/deployments", json=algo_body(name="a1")).status_code == 200
            assert len(c.get("/v1/deployments").json()["deployments"]) == 2
            # the other client's quota is its own
        other = srv.core.store.create_client("other")
        _row, key = srv.core.store.create_api_key(other, "live", "k")
        with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {key}"}) as c:
            assert c.post("/v1/strategies", json=create_body(name="s0")).status_code == 201
    finally:
        srv.stop()
