"""Overload degrades, it does not collapse: a runner driven past its capacity, with a short
lease, keeps every lease it holds while it lives.

Before the heartbeat had its own thread and the runner claimed only what it could start,
120 strategies on a runner of capacity 100 with a 3 s lease lost every run in waves
("runner lost: expired 56 run(s)"), restarted them, and lost them again.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.integration.conftest import deploy, wait_for

pytestmark = pytest.mark.slow

IDLE = "import time\nprint('up', flush=True)\nwhile True:\n    time.sleep(1)\n"


def _statuses(c: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in c.get("/v1/strategies", params={"limit": 500}).json()["strategies"]:
        out[s["status"]] = out.get(s["status"], 0) + 1
    return out


def _expired(c: Any) -> float:
    for line in c.get("/metrics").text.splitlines():
        if line.startswith("sequence_leases_expired_total "):
            return float(line.split()[1])
    raise AssertionError("no sequence_leases_expired_total in /metrics")


def test_a_runner_past_its_capacity_loses_no_lease_while_it_lives(platform: Any) -> None:
    lease = 3.0
    srv = platform(lease_seconds=lease, heartbeat_seconds=1.0)
    capacity, n = 100, 120
    runner = platform.runner(srv, capacity=capacity)
    with srv.client() as c:
        for i in range(n):
            deploy(c, f"idle-{i}", IDLE, memory_mb=64)
        # Every slot fills; what does not fit waits on the coordinator, queued.
        wait_for(lambda: _statuses(c).get("running", 0) == capacity, timeout=180, interval=0.5,
                 what=f"{capacity} running")
        # Two more leases go by with the runner full: nothing is lost, nothing restarts.
        deadline = time.monotonic() + 2 * lease
        while time.monotonic() < deadline:
            st = _statuses(c)
            assert st.get("running", 0) == capacity and st.get("queued", 0) == n - capacity, st
            time.sleep(0.5)
        assert _expired(c) == 0, "a lease expired while its runner was alive"
        strategies = c.get("/v1/strategies", params={"limit": 500}).json()["strategies"]
        assert all(s["restart_count"] == 0 and s["last_exit"] is None for s in strategies), \
            [s["last_exit"] for s in strategies if s["last_exit"]][:3]
        queued = [s for s in strategies if s["status"] == "queued"]
        assert queued and all("capacity" in (s.get("waiting_reason") or "") for s in queued), queued[:2]
    assert "self-fencing" not in runner.log() and "no longer ours" not in runner.log()
