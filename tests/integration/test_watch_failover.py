"""Fast failover through the runner's watch connection, with fencing intact.

Real coordinator, real `sequence runner` daemons, real sandboxed strategies. The
lease is 30 s in both tests: a strategy that moves to the other runner before
that can only have moved because the coordinator saw the watch close. That it
never ran twice is shown by the strategy's own clock: each line carries
``time.time()`` from inside the sandbox, and every line of the old run is
older than every line of the new one (the old run's lines reach the store
even when they arrive late: logs are history).
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from typing import Any

from tests.integration.conftest import Runner, all_lines, deploy, strategy, wait_for

LEASE = 30.0
MAIN = ("import os, time\nrid = os.environ['SEQUENCE_RUN_ID']\n"
        "while True:\n    print(rid, time.time(), flush=True)\n    time.sleep(0.05)\n")


class Partition:
    """A TCP relay between a runner and the coordinator that can be cut: every relayed
    connection is reset (both sides see it at once, as when a path fails), and from then
    on new connections are accepted and never answered — packets dropped, nothing
    refused (a refusal would tell the runner the coordinator is down). ``heal()``
    relays again."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit("//", 1)[1].split(":")
        self.target = (host, int(port))
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.cut_at: float | None = None
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self._socks.append(down)
                if self.cut_at is not None:
                    continue  # held open, never answered
                up = socket.create_connection(self.target)
                self._socks.append(up)
            for a, b in ((down, up), (up, down)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def cut(self) -> None:
        with self._lock:
            self.cut_at = time.time()
            socks, self._socks = self._socks, []
        for s in socks:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def heal(self) -> None:
        with self._lock:
            self.cut_at = None
            socks, self._socks = self._socks, []
        for s in socks:  # the blackholed ones: closed, the runner retries through the relay
            s.close()

    def close(self) -> None:
        self.sock.close()
        self.cut()


def _running_with_a_spare_runner(platform: Any, srv: Any, c: Any, name: str) -> tuple[str, dict[str, Any]]:
    """Deploy MAIN, wait until it prints, then start a second runner: (strategy id, its run)."""
    sid = deploy(c, name, MAIN)["strategy_id"]
    wait_for(lambda: strategy(c, sid)["status"] == "running" and len(all_lines(c, sid)) > 3, what="running")
    first = strategy(c, sid)["current_run"]
    platform.runner(srv, "r2")
    wait_for(lambda: len(srv.core.store.list_runners()) == 2, what="the second runner")
    return sid, first


def _moved(c: Any, sid: str, first: dict[str, Any]) -> dict[str, Any]:
    return wait_for(lambda: (s := strategy(c, sid))["current_run"] and s["status"] == "running"
                    and s["current_run"]["run_id"] != first["run_id"] and s,
                    timeout=LEASE * 0.8, what="the strategy running on the other runner (before its lease ended)")


def _no_overlap(c: Any, sid: str, old_run: str, new_run: str) -> tuple[float, float]:
    old = all_lines(c, sid, old_run)
    new = wait_for(lambda: all_lines(c, sid, new_run), what="the new run's lines")
    last_old = max(float(x["line"].split()[1]) for x in old if x["stream"] == "stdout")
    first_new = min(float(x["line"].split()[1]) for x in new if x["stream"] == "stdout")
    assert last_old < first_new, f"two copies overlapped by {last_old - first_new:.3f} s"
    return last_old, first_new


def test_a_sigkilled_runner_is_replaced_when_its_watch_closes_not_when_its_lease_ends(platform: Any) -> None:
    srv = platform(lease_seconds=LEASE, heartbeat_seconds=1.0)
    r1 = platform.runner(srv, "r1")
    with srv.client() as c:
        sid, first = _running_with_a_spare_runner(platform, srv, c, "watched")
        t_kill = time.time()
        r1.kill(signal.SIGKILL)
        st = _moved(c, sid, first)
        assert st["current_run"]["runner_id"] != first["runner_id"]
        lost = srv.core.store.get_run(first["run_id"])
        assert lost is not None and lost["status"] == "lost"
        assert lost["ended_at"] - t_kill < LEASE / 2  # the watch, not the lease
        _no_overlap(c, sid, first["run_id"], st["current_run"]["run_id"])
        c.post(f"/v1/strategies/{sid}/stop")


def test_a_runner_cut_off_kills_its_runs_before_the_coordinator_moves_them(platform: Any, tmp_path: Any) -> None:
    srv = platform(lease_seconds=LEASE, heartbeat_seconds=1.0)
    relay = Partition(srv.url)

    class Via:  # the runner reaches the coordinator through the relay
        url = relay.url
        core = srv.core

    r1 = Runner(Via(), tmp_path / "r1")  # type: ignore[arg-type]
    try:
        with srv.client() as c:
            sid, first = _running_with_a_spare_runner(platform, srv, c, "partitioned")
            relay.cut()  # r1 lives on, but can no longer reach the coordinator
            st = _moved(c, sid, first)
            assert st["current_run"]["runner_id"] != first["runner_id"]
            assert r1.proc.poll() is None  # the runner is alive: it only lost its way to the coordinator
            # The new copy is printing; had the cut-off runner not killed its own, both would be now.
            wait_for(lambda: len(all_lines(c, sid, st["current_run"]["run_id"])) > 10, what="the new run's lines")
            relay.heal()  # its spooled lines of the old run now arrive: they prove the order
            # The old run's last line (the runner adds it once the run is dead): all its lines are in.
            wait_for(lambda: any(x["stream"] == "system" and x["line"].startswith("run ended")
                                 for x in all_lines(c, sid, first["run_id"])), what="the old run's last line")
            _no_overlap(c, sid, first["run_id"], st["current_run"]["run_id"])
            assert "watch connection is down" in r1.log()  # it was the watch that fenced it, not the lease
            c.post(f"/v1/strategies/{sid}/stop")
    finally:
        r1.stop()
        relay.close()
