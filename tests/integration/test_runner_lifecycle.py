"""Coordinator + real runner daemons + real sandboxed strategies."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from typing import Any

import httpx

from tests.integration.conftest import all_lines, deploy, strategy, wait_for

DONE = ("stopped", "failed")


def _ended(c: httpx.Client, sid: str, status: str = "stopped") -> dict[str, Any]:
    return wait_for(lambda: (s := strategy(c, sid))["status"] == status and s, what=f"status {status}")


def test_exit_zero_stops_with_logs_in_order_and_injected_env(platform: Any) -> None:
    srv = platform()
    platform.runner(srv, env={"RUNNER_CANARY": "must-not-leak"})
    main = (
        "import hashlib, os, sys, json\n"
        "print(json.dumps({k: v for k, v in os.environ.items() if k != 'SEQUENCE_API_KEY'}), flush=True)\n"
        "print('shadow', hashlib.sha256(os.environ['SHADOW'].encode()).hexdigest(), flush=True)\n"
        "print('key', os.environ['SEQUENCE_API_KEY'][:9], flush=True)\n"
        "for i in range(50):\n    print('line', i)\n"
        "print('err', file=sys.stderr)\n"
        "print(json.load(open(os.environ['SEQUENCE_STRATEGY_MANIFEST'])), flush=True)\n"
    )
    with srv.client() as c:
        s = deploy(c, "ok", main, env={"LOG_LEVEL": "debug", "SHADOW": "env"}, secrets={"SHADOW": "secret"},
                   manifest={"pairs": [["A", "B"]]})
        st = _ended(c, s["strategy_id"])
        assert st["restart_count"] == 0 and st["last_exit"]["code"] == 0
        lines = all_lines(c, s["strategy_id"])
    assert [x["seq"] for x in lines] == list(range(1, len(lines) + 1))
    env = json.loads(lines[0]["line"])
    assert env["SEQUENCE_STRATEGY_ID"] == s["strategy_id"] and env["SEQUENCE_IS_SANDBOX"] == "false"
    assert env["SEQUENCE_CLIENT_ID"] == srv.client_id and env["SEQUENCE_API_URL"] == srv.url
    # the secret shadows the env entry; its value is masked in the logs
    assert env["LOG_LEVEL"] == "debug" and env["SHADOW"] == "***" and env["PYTHONUNBUFFERED"] == "1"
    assert lines[1]["line"] == "shadow " + hashlib.sha256(b"secret").hexdigest()
    assert "RUNNER_CANARY" not in env
    assert lines[2]["line"] == "key seq_live_"
    assert [x["line"] for x in lines[3:53]] == [f"line {i}" for i in range(50)]
    assert {"stream": "stderr", "line": "err"}.items() <= next(x for x in lines if x["stream"] == "stderr").items()
    stdout = [x["line"] for x in lines if x["stream"] == "stdout"]
    assert stdout[-1] == "{'pairs': [['A', 'B']]}"  # order across the two streams is arrival order


def test_crash_is_restarted_with_backoff_and_a_new_run(platform: Any) -> None:
    srv = platform()
    platform.runner(srv)
    with srv.client() as c:
        s = deploy(c, "crash", "import sys\nprint('boom', flush=True)\nsys.exit(3)\n")
        sid = s["strategy_id"]
        wait_for(lambda: strategy(c, sid)["restart_count"] >= 2, what="two restarts")
        runs = c.get(f"/v1/strategies/{sid}/runs").json()["runs"]
        assert len({r["run_id"] for r in runs}) >= 2
        assert all(r["exit"]["code"] == 3 for r in runs if r["exit"])
        ends = sorted((r for r in runs if r["ended_at"]), key=lambda r: r["epoch"])
        assert ends[1]["claimed_at"] > ends[0]["ended_at"]  # never overlapping
        st = strategy(c, sid)
        assert st["last_exit"]["reason"] == "exited with code 3"
        c.post(f"/v1/strategies/{sid}/stop")
        _ended(c, sid)


def test_stop_delivers_sigterm_and_the_handler_runs(platform: Any) -> None:
    srv = platform()
    platform.runner(srv)
    main = (
        "import signal, sys, time\n"
        "def bye(*_):\n    print('got SIGTERM, cleaning up', flush=True)\n    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\nprint('ready', flush=True)\n"
        "while True:\n    time.sleep(0.05)\n"
    )
    with srv.client() as c:
        sid = deploy(c, "daemon", main)["strategy_id"]
        wait_for(lambda: any(x["line"] == "ready" for x in all_lines(c, sid)), what="ready")
        assert strategy(c, sid)["status"] == "running"
        assert c.post(f"/v1/strategies/{sid}/stop").json()["status"] == "stopping"
        st = _ended(c, sid)
        assert st["restart_count"] == 0
        assert any(x["line"] == "got SIGTERM, cleaning up" for x in all_lines(c, sid))


def test_ignored_sigterm_is_killed_after_the_grace_and_ends_stopped(platform: Any) -> None:
    srv = platform()
    platform.runner(srv)
    main = ("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\n"
            "while True:\n    time.sleep(0.05)\n")
    with srv.client() as c:
        sid = deploy(c, "stubborn", main, stop_timeout_s=1.0)["strategy_id"]
        wait_for(lambda: any(x["line"] == "ready" for x in all_lines(c, sid)), what="ready")
        t0 = time.monotonic()
        c.post(f"/v1/strategies/{sid}/stop")
        st = _ended(c, sid)
        assert time.monotonic() - t0 >= 1.0  # the grace was honoured before SIGKILL
        assert st["last_exit"]["signal"] == signal.SIGKILL and st["restart_count"] == 0
        # start re-queues it
        assert c.post(f"/v1/strategies/{sid}/start").json()["status"] in ("queued", "running")
        wait_for(lambda: strategy(c, sid)["status"] == "running", what="running again")
        c.post(f"/v1/strategies/{sid}/stop")
        _ended(c, sid)


def test_oom_is_reported_as_oom_and_restarted(platform: Any) -> None:
    srv = platform()
    platform.runner(srv)
    main = "x = []\nwhile True:\n    x.append(bytearray(8 << 20))\n"
    with srv.client() as c:
        sid = deploy(c, "hog", main, memory_mb=96)["strategy_id"]
        st = wait_for(lambda: (s := strategy(c, sid))["last_exit"] and s, what="an exit")
        assert st["last_exit"]["oom"] is True and "out of memory" in st["last_exit"]["reason"]
        assert st["status"] in ("failed", "running", "queued")
        c.post(f"/v1/strategies/{sid}/stop")
        _ended(c, sid)
        runs = c.get(f"/v1/strategies/{sid}/runs").json()["runs"]
        assert any(r["exit"] and r["exit"]["oom"] for r in runs)
        assert all(r["peak_rss_bytes"] for r in runs if r["exit"] and r["exit"]["oom"])


def test_run_key_stops_working_when_the_run_ends(platform: Any) -> None:
    srv = platform()
    platform.runner(srv)
    # printed reversed: the key itself is masked in the logs (an encoded form is not)
    main = ("import os, time\nprint(os.environ['SEQUENCE_API_KEY'][::-1], flush=True)\n"
            "time.sleep(60)\n")
    with srv.client() as c:
        sid = deploy(c, "keyed", main)["strategy_id"]
        key = wait_for(lambda: next((x["line"] for x in all_lines(c, sid)), None), what="the key")[::-1]
        assert httpx.get(srv.url + "/v1/me", headers={"Authorization": f"Bearer {key}"}).json()["run_id"]
        c.post(f"/v1/strategies/{sid}/stop")
        _ended(c, sid)
    r = httpx.get(srv.url + "/v1/strategies", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 401


def test_runner_sigkill_moves_the_run_to_the_other_runner_without_overlap(platform: Any) -> None:
    srv = platform(lease_seconds=3.0, heartbeat_seconds=0.5)
    r1 = platform.runner(srv, "r1")
    main = ("import os, time\nrid = os.environ['SEQUENCE_RUN_ID']\n"
            "while True:\n    print(rid, time.time(), flush=True)\n    time.sleep(0.05)\n")
    with srv.client() as c:
        sid = deploy(c, "ha", main)["strategy_id"]
        wait_for(lambda: strategy(c, sid)["status"] == "running" and len(all_lines(c, sid)) > 3, what="running")
        first = strategy(c, sid)["current_run"]
        r2 = platform.runner(srv, "r2")
        wait_for(lambda: len(srv.core.store.list_runners()) == 2, what="second runner")
        t_kill = time.time()
        r1.kill(signal.SIGKILL)
        st = wait_for(lambda: (s := strategy(c, sid))["current_run"]
                      and s["current_run"]["run_id"] != first["run_id"] and s["status"] == "running" and s,
                      timeout=30, what="run moved")
        assert st["current_run"]["runner_id"] != first["runner_id"]
        moved_after = time.time() - t_kill
        old = all_lines(c, sid, first["run_id"])
        new = wait_for(lambda: all_lines(c, sid, st["current_run"]["run_id"]), what="new run's lines")
        last_old = max(float(x["line"].split()[1]) for x in old)
        first_new = min(float(x["line"].split()[1]) for x in new)
        assert last_old < first_new, "two copies overlapped"
        runs = {r["run_id"]: r for r in c.get(f"/v1/strategies/{sid}/runs").json()["runs"]}
        assert runs[first["run_id"]]["status"] == "lost"
        assert moved_after < 30
        # The dead runner's late writes are rejected.
        old_epoch = runs[first["run_id"]]["epoch"]
        tok = srv.core.store.create_runner_token("late")[1]
        late = httpx.post(f"{srv.url}/v1/runners/{first['runner_id']}/runs/{first['run_id']}/logs",
                          headers={"Authorization": f"Bearer {tok}"},
                          json={"epoch": old_epoch, "first_seq": 10_000, "ts": [1.0], "streams": "o", "lines": ["zombie"]})
        assert late.status_code == 404  # another token may not write as this runner (token → runner check)
        c.post(f"/v1/strategies/{sid}/stop")
        _ended(c, sid)
    assert r2.stop() == 0


def test_a_runner_stopped_by_its_operator_hands_its_runs_to_another_at_once(platform: Any) -> None:
    """`SIGTERM` to a runner (an upgrade) ended its strategies with the crash backoff and a
    reason ("exited with code 0 after SIGTERM") that its own fields (code null, signal 15)
    contradicted. Not the strategy's fault: re-queued at once, no failure counted."""
    srv = platform()
    r1 = platform.runner(srv, "r1")
    main = "import time\nprint('up', flush=True)\nwhile True:\n    time.sleep(0.1)\n"
    with srv.client() as c:
        sid = deploy(c, "kept", main)["strategy_id"]
        wait_for(lambda: strategy(c, sid)["status"] == "running" and all_lines(c, sid), what="running")
        first = strategy(c, sid)["current_run"]
        assert r1.stop() == 0
        st = wait_for(lambda: (s := strategy(c, sid))["status"] != "running" and s, what="run ended")
        row = srv.core.store.get_strategy(None, sid)
        assert row["next_restart_at"] <= row["updated_at"] + 0.001, st  # due at once: no backoff
        assert row["consecutive_failures"] == 0, st  # and no failure counted
        assert st["last_exit"]["reason"] == "runner shut down: the run was stopped, and restarts on another runner", r1.log()
        assert st["last_exit"]["code"] is None and st["last_exit"]["signal"] == signal.SIGTERM
        r2 = platform.runner(srv, "r2")
        st = wait_for(lambda: (s := strategy(c, sid))["status"] == "running" and s["current_run"]["run_id"] != first[
            "run_id"] and s, what="running on the second runner")
        assert st["restart_count"] <= 1
        # Stopped once it printed: a SIGTERM that lands while the supervisor still unpacks
        # reaches no strategy, and the stop waits out its 10 s timeout.
        wait_for(lambda: all_lines(c, sid, st["current_run"]["run_id"]), what="the new run's first line")
        c.post(f"/v1/strategies/{sid}/stop")
        _ended(c, sid)
    assert r2.stop() == 0


def _pids_of_run(run_id: str) -> list[int]:
    """Host pids of the processes whose environment names *run_id* (the strategy's)."""
    out = []
    needle = f"SEQUENCE_RUN_ID={run_id}".encode()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/environ", "rb") as f:
                    if needle in f.read().split(b"\0"):
                        out.append(int(d))
            except OSError:
                pass
    return out


def test_a_frozen_runners_strategies_die_before_their_lease_can_move(platform: Any) -> None:
    """SIGSTOP on a runner (a debugger, a freezer, a stalled machine) froze its fencing but
    not its strategies: they ran on beside the copies another runner started once their
    leases lapsed. Their supervisors now kill them at the fencing deadline on their own."""
    srv = platform(lease_seconds=3.0, heartbeat_seconds=0.5)
    r1 = platform.runner(srv, "r1")
    main = "import time\nprint('up', flush=True)\nwhile True:\n    time.sleep(0.05)\n"
    with srv.client() as c:
        sid = deploy(c, "frozen", main)["strategy_id"]
        wait_for(lambda: strategy(c, sid)["status"] == "running" and all_lines(c, sid), what="running")
        run_id = strategy(c, sid)["current_run"]["run_id"]
        assert _pids_of_run(run_id)
        r1.kill(signal.SIGSTOP)
        try:
            stopped = time.monotonic()
            wait_for(lambda: not _pids_of_run(run_id), timeout=10, interval=0.05, what="the strategy to die")
            assert time.monotonic() - stopped < 3.0  # within the lease: nobody could have started it yet
        finally:
            r1.kill(signal.SIGCONT)
        c.post(f"/v1/strategies/{sid}/stop")
    assert r1.stop() == 0


def test_deleting_a_running_strategy_stops_it_first(platform: Any) -> None:
    """DELETE removed a running strategy at once: its process got SIGKILL (no SIGTERM, no
    stop timeout) at the runner's next heartbeat, and a strategy deployed again under the
    same name ran beside it meanwhile. Now the answer comes once the run ended, stopped."""
    srv = platform()
    r1 = platform.runner(srv, "r1")
    main = ("import signal, sys, time\n"
            "def bye(*_):\n    print('got SIGTERM', flush=True)\n    sys.exit(0)\n"
            "signal.signal(signal.SIGTERM, bye)\nprint('ready', flush=True)\nwhile True:\n    time.sleep(0.05)\n")
    with srv.client() as c:
        sid = deploy(c, "doomed", main)["strategy_id"]
        wait_for(lambda: any(x["line"] == "ready" for x in all_lines(c, sid)), what="ready")
        run_id = strategy(c, sid)["current_run"]["run_id"]
        r = c.delete(f"/v1/strategies/{sid}")
        assert r.status_code == 200 and r.json() == {"strategy_id": sid, "deleted": True}, r.text
        assert not _pids_of_run(run_id)  # gone before the answer: a new "doomed" cannot overlap it
        assert c.get(f"/v1/strategies/{sid}").status_code == 404
    assert f"run {run_id} (doomed) ended: stopped: exited with code 0 after SIGTERM" in r1.log()
    assert r1.stop() == 0


def test_coordinator_restart_mid_run_loses_no_log_lines(platform: Any, tmp_path: Any) -> None:
    from tests.helpers import start_server

    srv = platform()
    port = int(srv.url.rsplit(":", 1)[1])
    runner = platform.runner(srv)
    main = "import time\nfor i in range(1, 301):\n    print('n', i, flush=True)\n    time.sleep(0.01)\n"
    with srv.client() as c:
        sid = deploy(c, "chatty", main)["strategy_id"]
        wait_for(lambda: len(all_lines(c, sid)) > 20, what="first lines")
    srv.stop()
    time.sleep(1.5)  # the strategy keeps printing; the runner spools
    srv2 = _restart(start_server, tmp_path, port, srv)
    try:
        with srv2.client(srv.live_key) as c:
            st = wait_for(lambda: (s := strategy(c, sid))["status"] == "stopped" and s, timeout=60, what="done")
            assert st["restart_count"] == 0
            lines = all_lines(c, sid)
        assert [x["line"] for x in lines if x["stream"] == "stdout"] == [f"n {i}" for i in range(1, 301)]
        assert [x["seq"] for x in lines] == list(range(1, len(lines) + 1))
        assert lines[-1]["stream"] == "system" and lines[-1]["line"].startswith("run ended: exited with code 0")
    finally:
        runner.stop()
        srv2.stop()


def _restart(start_server: Any, tmp_path: Any, port: int, old: Any) -> Any:
    import socket

    from tests import helpers

    real = helpers.free_socket

    def same_port() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen(128)
        return s

    helpers.free_socket = same_port
    try:
        srv = start_server(old.settings.data_dir, environ={})
    finally:
        helpers.free_socket = real
    return srv


def test_runner_check_exit_codes(tmp_path: Any) -> None:
    import subprocess

    from tests.integration.conftest import SEQ

    ok = subprocess.run([SEQ, "runner", "--check", "--json", "--data-dir", str(tmp_path)], capture_output=True,
                        text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["can_run"] is True
    bad = subprocess.run([SEQ, "runner", "--check", "--runtime", "/nonexistent/python", "--data-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=60, env={**os.environ})
    assert bad.returncode != 0


def test_logs_channel_streams_a_strategys_lines_to_its_client_only(platform: Any) -> None:
    from sequence_markets import Sequence, SequenceError

    srv = platform()
    platform.runner(srv)
    main = "import time\ntime.sleep(1.5)\nfor i in range(5):\n    print('tick', i, flush=True)\n"
    with srv.client() as c:
        sid = deploy(c, "ticker", main)["strategy_id"]
    seq = Sequence(srv.live_key, srv.url)
    got = [m["data"]["line"] for m in seq.stream([f"logs:{sid}"], duration_s=20, max_msgs=5)]
    assert got == [f"tick {i}" for i in range(5)]
    _cid, other = srv.new_client()
    try:
        list(Sequence(other, srv.url).stream([f"logs:{sid}"], duration_s=2, max_msgs=1))
        raise AssertionError("another client subscribed to someone else's logs")
    except SequenceError as exc:
        assert sid in str(exc) or "not_found" in str(exc) or "no strategy" in str(exc)


def test_a_big_artifact_is_fetched_and_a_small_one_starts_from_the_claim(platform: Any) -> None:
    """Both ways a runner gets the bundle end in the same files: a small one rides in the claim
    (INLINE_ARTIFACT_MAX), a bigger one is fetched from .../artifact; each run reads its own blob."""
    from sequence.protocol import INLINE_ARTIFACT_MAX
    from tests.helpers import create_body

    srv = platform()
    platform.runner(srv)
    main = ("import hashlib\n"
            "print('blob', hashlib.sha256(open('blob', 'rb').read()).hexdigest(), flush=True)\n")
    blobs = {"small": b"x" * 1000, "big": os.urandom(INLINE_ARTIFACT_MAX + 4096)}
    with srv.client() as c:
        ids = {}
        for name, blob in blobs.items():
            r = c.post("/v1/strategies", json=create_body(name=name, files={"main.py": main, "blob": blob}, start=True))
            assert r.status_code == 201, r.text
            ids[name] = r.json()["strategy_id"]
        for name, sid in ids.items():
            _ended(c, sid)
            lines = [x["line"] for x in all_lines(c, sid)]
            assert f"blob {hashlib.sha256(blobs[name]).hexdigest()}" in lines, (name, lines)
