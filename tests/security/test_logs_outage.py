"""Item 7: logs lost on a coordinator outage longer than a lease.

Before: the coordinator was killed for 13 s while a strategy printed 200,000
numbered lines; afterwards 165,000 were missing, the run was declared
"runner lost: lease expired" and the strategy started again from scratch.
Now the pump spools whenever delivery blocks, an outage is not charged to the
run's lease (runner: a refused heartbeat is not a missed renewal; coordinator:
one lease of grace after its own start), and spools left by a stopped runner
are delivered by the next one.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.integration.conftest import all_lines, deploy, strategy, wait_for
from tests.integration.test_runner_lifecycle import _restart

pytestmark = pytest.mark.slow

LEASE = 3.0
N = 200_000
# 200,000 numbered lines over ~20 s, so the outage falls in the middle of them.
PRINTER = f"""
import sys, time
for i in range(1, {N} + 1):
    sys.stdout.write(f"{{i}}\\n")
    if i % 2000 == 0:
        sys.stdout.flush()
        time.sleep(0.2)
"""


def _numbers(lines: list[dict[str, Any]]) -> list[int]:
    return [int(x["line"]) for x in lines if x["stream"] == "stdout"]


def test_an_outage_of_three_leases_loses_no_line_and_restarts_nothing(
    platform: Any, tmp_path: Any
) -> None:
    from tests.helpers import start_server

    srv = platform(lease_seconds=LEASE, heartbeat_seconds=1.0)
    port = int(srv.url.rsplit(":", 1)[1])
    runner = platform.runner(srv)
    with srv.client() as c:
        sid = deploy(c, "numbers", PRINTER)["strategy_id"]
        wait_for(lambda: len(all_lines(c, sid)) > 10_000, timeout=60, what="first lines")
        run_id = strategy(c, sid)["current_run"]["run_id"]
    srv.stop()
    time.sleep(3 * LEASE)  # the strategy keeps printing; the runner spools
    srv2 = _restart(start_server, tmp_path, port, srv)
    try:
        with srv2.client(srv.live_key) as c:
            st = wait_for(lambda: (s := strategy(c, sid))["status"] == "stopped" and s, timeout=120,
                          interval=0.5, what="the strategy to finish")
            assert st["restart_count"] == 0, (st, runner.log()[-4000:])
            assert st["current_run"] is None or st["current_run"]["run_id"] == run_id
            runs = c.get(f"/v1/strategies/{sid}/runs").json()["runs"]
            assert [r["run_id"] for r in runs] == [run_id], "one run, never restarted"
            nums = _numbers(all_lines(c, sid, run_id))
        assert len(nums) == N and nums == list(range(1, N + 1)), (len(nums), nums[:3], nums[-3:])
        assert "lease expired" not in runner.log() and "self-fencing" not in runner.log()
    finally:
        runner.stop()
        srv2.stop()


def test_a_runner_stopped_during_an_outage_delivers_its_spool_when_it_comes_back(
    platform: Any, tmp_path: Any
) -> None:
    from tests.helpers import start_server

    srv = platform(lease_seconds=LEASE, heartbeat_seconds=1.0)
    port = int(srv.url.rsplit(":", 1)[1])
    runner = platform.runner(srv, name="r1")
    main = "import time\nfor i in range(1, 100001):\n    print(i, flush=i % 1000 == 0)\n    if i % 1000 == 0: time.sleep(0.05)\ntime.sleep(600)\n"
    with srv.client() as c:
        sid = deploy(c, "spooler", main)["strategy_id"]
        wait_for(lambda: len(all_lines(c, sid)) > 1000, timeout=60, what="first lines")
        run_id = strategy(c, sid)["current_run"]["run_id"]
    srv.stop()
    time.sleep(8)  # all 100,000 lines printed; most of them only in the runner's spool
    assert runner.stop() == 0
    srv2 = _restart(start_server, tmp_path, port, srv)
    # The same runner restarted: same token, same data dir (the spool is there).
    runner2 = platform.runner(srv2, name="r1", token=runner.token)
    try:
        with srv2.client(srv.live_key) as c:
            wait_for(lambda: len(_numbers(all_lines(c, sid, run_id))) >= 100_000, timeout=60,
                     interval=0.5, what="the spooled lines")
            nums = _numbers(all_lines(c, sid, run_id))
        assert nums == list(range(1, 100_001))
        assert "delivered" in runner2.log() and "spooled log lines" in runner2.log()
    finally:
        runner2.stop()
        srv2.stop()
