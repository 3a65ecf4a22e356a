"""Runner tokens against each other's runs on the log route.

Before: ``POST /v1/runners/{runner_id}/runs/{run_id}/logs`` skipped the
token → runner check every other runner route makes, so runner B's token,
naming runner A in the path, wrote lines into A's run.
"""

from __future__ import annotations

from tests.api.fake_runner import FakeRunner
from tests.helpers import LiveServer, create_body


def test_a_runner_token_cannot_write_logs_as_another_runner(server: LiveServer) -> None:
    with server.client() as c:
        c.post("/v1/strategies", json=create_body(name="victim", start=True))
    a, b = FakeRunner(server, "a"), FakeRunner(server, "b")
    try:
        spec = a.claim_one()
        assert a.logs(spec, 1, ["real line"]).json() == {"next_seq": 2}
        # B's token, A's runner id in the path: refused as an unknown runner, nothing stored.
        r = b.logs(spec, 2, ["forged by b"], runner_id=a.runner_id)
        assert r.status_code == 404 and r.json()["error"] == {
            "code": "not_found", "message": "runner not found", "details": {}}
        # B's token as itself, for A's run: not B's run.
        r = b.logs(spec, 2, ["forged by b"])
        assert r.status_code == 409 and r.json()["error"]["code"] == "stale_run"
        # The same check on the other runner routes, with one lookup each.
        epoch = {"epoch": spec["epoch"]}
        for path, body in (("/heartbeat", {"runs": []}), (f"/runs/{spec['run_id']}/started", epoch),
                           (f"/runs/{spec['run_id']}/exit", epoch)):
            r = b.http.post(f"/v1/runners/{a.runner_id}{path}", json=body)
            assert r.status_code == 404, (path, r.text)
        rows = server.core.store.read_logs(spec["run_id"], 0, 100)
        assert [x["line"] for x in rows] == ["real line"]
        assert a.logs(spec, 2, ["a again"]).json() == {"next_seq": 3}
    finally:
        a.close()
        b.close()


def test_a_revoked_runner_token_writes_nothing(server: LiveServer) -> None:
    with server.client() as c:
        c.post("/v1/strategies", json=create_body(name="s", start=True))
    a = FakeRunner(server, "a")
    try:
        spec = a.claim_one()
        tid = server.core.store.get_runner(a.runner_id)["token_id"]  # type: ignore[index]
        server.core.store.revoke_runner_token(tid)
        r = a.logs(spec, 1, ["after revocation"])
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        assert server.core.store.read_logs(spec["run_id"], 0, 10) == []
    finally:
        a.close()


def test_a_runner_token_cannot_open_or_close_another_runners_watch(server: LiveServer) -> None:
    """The watch is the fast failover signal: a close ends the runner's leases 2 s later. Another
    runner's token (or a client key, or none) must not open one in its name — which would renew
    its leases and take its watch epoch, so its real watch's close would shorten nothing — nor
    close one."""
    with server.client() as c:
        c.post("/v1/strategies", json=create_body(name="victim", start=True))
    a, b = FakeRunner(server, "a"), FakeRunner(server, "b")
    try:
        spec = a.claim_one()
        before = server.core.store.get_runner(a.runner_id)["watch_epoch"]  # type: ignore[index]
        lease = server.core.store.get_run(spec["run_id"])["lease_expires_at"]  # type: ignore[index]
        path = f"/v1/runners/{a.runner_id}/watch"
        assert b.http.get(path).status_code == 404  # B's token, A's id
        with server.client() as client_key:
            assert client_key.get(path).status_code == 401  # a client key is no runner token
        with server.client("") as none:
            assert none.get(path).status_code == 401
        assert server.core.store.get_runner(a.runner_id)["watch_epoch"] == before  # type: ignore[index]
        assert server.core.store.get_run(spec["run_id"])["lease_expires_at"] == lease  # type: ignore[index]
        # A's own token opens it: the first line names the new epoch.
        with a.http.stream("GET", path) as r:
            assert r.status_code == 200
            assert next(r.iter_lines()) == f'{{"watch": {before + 1}}}'
    finally:
        a.close()
        b.close()


def test_a_batch_the_store_could_not_give_back_is_refused_at_the_edge(server: LiveServer) -> None:
    """A checked batch is stored as it came (store/logs.py), so the check is the only guard:
    times that are not finite numbers, lines that are not strings, are a 400 naming the
    field, nothing is stored, and the run's logs stay readable."""
    with server.client() as c:
        sid = c.post("/v1/strategies", json=create_body(name="s", start=True)).json()["strategy_id"]
    a = FakeRunner(server, "a")
    try:
        spec = a.claim_one()
        url = f"/v1/runners/{a.runner_id}/runs/{spec['run_id']}/logs"
        head = f'{{"epoch": {spec["epoch"]}, "first_seq": 1, "streams": "o", '
        for body, field in ((head + '"ts": [NaN], "lines": ["x"]}', "ts"),
                            (head + '"ts": [1e999], "lines": ["x"]}', "ts"),
                            (head + '"ts": [1], "lines": [7]}', "lines"),
                            (head + '"ts": [1], "lines": [null]}', "lines")):
            r = a.http.post(url, content=body, headers={"Content-Type": "application/json"})
            assert r.status_code in (400, 422), (body, r.text)
            assert field in r.text, (body, r.text)
        assert server.core.store.read_logs(spec["run_id"], 0, 10) == []
        assert a.logs(spec, 1, ["fine"]).json() == {"next_seq": 2}
        with server.client() as c:
            page = c.get(f"/v1/strategies/{sid}/logs")
        assert page.status_code == 200 and [x["line"] for x in page.json()["lines"]] == ["fine"]
    finally:
        a.close()
