"""Self-fencing does not wait for a heartbeat to fail.

The heartbeat thread allows a renewal up to a third of the lease to be answered; a
coordinator that hangs (a partition: packets dropped, nothing refused) must still see
the runner kill its runs before the lease can lapse there — measured from the last
renewal, which is when the coordinator's lease clock started. Logic under test: the
daemon's heartbeat thread with a client that hangs (a fake: no network is involved).
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from sequence.runner.client import CoordinatorDown, CoordinatorUnavailable
from sequence.runner.daemon import FENCE_FRACTION, ActiveRun, RunnerDaemon


class HangingClient:
    """Every heartbeat hangs until its timeout, then fails like an unanswered request."""

    runner_id = "runner_test"

    def __init__(self) -> None:
        self.calls = 0

    def clone(self) -> HangingClient:
        return self

    async def heartbeat(self, runs: Any, timeout: float = 5.0, usage: Any = None) -> dict[str, str]:
        self.calls += 1
        await asyncio.sleep(timeout)
        raise CoordinatorUnavailable("POST /heartbeat: timed out")

    async def watch(self, on_open: Any, on_down: Any) -> None:
        await asyncio.sleep(3600)  # a watch never answered: never open, so never "down" either

    async def aclose(self) -> None:
        pass


class Handle:
    def __init__(self) -> None:
        self.killed_at: float | None = None

    def kill(self) -> None:
        if self.killed_at is None:
            self.killed_at = time.monotonic()


def test_a_runner_whose_heartbeats_hang_kills_its_runs_before_the_lease_can_lapse() -> None:
    client = HangingClient()
    daemon = RunnerDaemon(client, sandbox=object(), name="t", region="r", capacity=1)  # type: ignore[arg-type]
    # A 9 s lease: renewals may hang 3 s each, so a fence checked only when one fails
    # would come at 7 s; the deadline is 5.4 s (FENCE_FRACTION of the lease).
    daemon.lease_s, daemon.heartbeat_s = 9.0, 1.0
    renewed = time.monotonic()  # the last renewal the coordinator saw
    handle = Handle()
    run = ActiveRun(run_id="run-1", epoch=1, strategy_id="s", name="s", stop_timeout_s=1.0, renewed_at=renewed,
                    handle=handle)  # type: ignore[arg-type]
    daemon.runs[run.run_id] = run
    beat = threading.Thread(target=daemon._heartbeat_thread, daemon=True)
    beat.start()
    try:
        deadline = renewed + daemon.lease_s * 2
        while handle.killed_at is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        daemon._beat_stop.set()
        beat.join(timeout=10)
    assert client.calls >= 1
    assert handle.killed_at is not None, "the run was never fenced"
    assert run.stale
    # Not before the fencing deadline, and on time for it (it is checked four times a second,
    # not when a hanging renewal gives up) — well before the coordinator may expire the lease.
    after = handle.killed_at - renewed
    assert after >= daemon.lease_s * FENCE_FRACTION
    assert after < daemon.lease_s * FENCE_FRACTION + 1.0, \
        f"fenced {after:.2f} s after the last renewal; the deadline was {daemon.lease_s * FENCE_FRACTION:.1f} s"


class FlakyClient(HangingClient):
    """Answers heartbeats at once, the first one with a bug (an exception no client raises)."""

    async def heartbeat(self, runs: Any, timeout: float = 5.0, usage: Any = None) -> dict[str, str]:
        self.calls += 1
        if self.calls == 1:
            raise ValueError("a bug in a beat")
        return {run_id: "continue" for run_id, _ in runs}


def test_lease_renewal_outlives_a_bug_in_a_beat_and_runs_changing_under_it() -> None:
    # Before: one exception ended the heartbeat thread for good (and, with 1,000 runs, the
    # main loop changing the runs dict while the fence check iterated it raised one): no
    # run was renewed again and every lease was lost.
    client = FlakyClient()
    daemon = RunnerDaemon(client, sandbox=object(), name="t", region="r", capacity=10_000)  # type: ignore[arg-type]
    daemon.lease_s, daemon.heartbeat_s = 9.0, 0.1
    stop = threading.Event()

    def churn() -> None:  # runs come and go on another thread, as the main loop does
        i = 0
        while not stop.is_set():
            i += 1
            daemon.runs[f"run-{i}"] = ActiveRun(run_id=f"run-{i}", epoch=1, strategy_id="s", name="s",
                                                stop_timeout_s=1.0, renewed_at=time.monotonic())
            if len(daemon.runs) > 500:
                daemon.runs.pop(next(iter(daemon.runs)), None)

    churner = threading.Thread(target=churn, daemon=True)
    beat = threading.Thread(target=daemon._heartbeat_thread, daemon=True)
    churner.start()
    beat.start()
    try:
        deadline = time.monotonic() + 20
        while client.calls < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.calls >= 5, "lease renewal stopped after a failed beat"
        assert beat.is_alive()
    finally:
        stop.set()
        daemon._beat_stop.set()
        beat.join(timeout=10)
        churner.join(timeout=5)


def test_if_lease_renewal_ends_unexpectedly_every_run_is_killed() -> None:
    daemon = RunnerDaemon(HangingClient(), sandbox=object(), name="t", region="r", capacity=1)  # type: ignore[arg-type]
    handle = Handle()
    run = ActiveRun(run_id="run-1", epoch=1, strategy_id="s", name="s", stop_timeout_s=1.0,
                    renewed_at=time.monotonic(), handle=handle)  # type: ignore[arg-type]
    daemon.runs[run.run_id] = run

    async def broken() -> None:
        raise RuntimeError("the renewal loop itself failed")

    daemon._heartbeat_loop = broken  # type: ignore[method-assign]
    try:
        daemon._heartbeat_thread()
    except RuntimeError:
        pass
    assert handle.killed_at is not None and run.stale  # nothing renews any more: fenced at once


def test_a_claim_delivered_late_is_not_started() -> None:
    """A poll left open across a partition was answered with a claim the coordinator then
    gave another runner when its lease lapsed; when the partition healed the claim arrived,
    was dated "renewed now" and started: a second copy until the next heartbeat said kill.
    Claims are dated from the poll's sending plus the coordinator's wait (``waited_s``)."""
    daemon = RunnerDaemon(HangingClient(), sandbox=object(), name="t", region="r", capacity=1)  # type: ignore[arg-type]
    daemon.lease_s = 12.0
    spec: Any = {"run_id": "late", "epoch": 1, "strategy_id": "s", "name": "n"}
    daemon._start(spec, time.monotonic() - 12.0 * FENCE_FRACTION - 1)  # granted long ago, delivered now
    assert "late" not in daemon.runs and daemon.starting == 0


class DownThenBack:
    """Refused (nothing listens) for *down* calls, then answering."""

    runner_id = "runner_test"

    def __init__(self, down: int) -> None:
        self.down, self.calls, self.reported = down, 0, None

    async def exit(self, run_id: str, epoch: int, report: Any) -> None:
        self.calls += 1
        if self.calls <= self.down:
            raise CoordinatorDown("connection refused")
        self.reported = (run_id, epoch, report)


def test_an_exit_is_reported_however_long_the_coordinator_is_down() -> None:
    """The runner gave up reporting an exit after four leases; the coordinator, back after a
    long outage, found the run's lease lapsed, called it lost and ran the strategy again
    (a one-shot strategy that had exited 0 acted twice)."""
    client = DownThenBack(down=5)  # retried after 0.1, 0.2, 0.4, 0.8 and 1.6 s: 3.1 s down
    daemon = RunnerDaemon(client, sandbox=object(), name="t", region="r", capacity=1)  # type: ignore[arg-type]
    daemon.lease_s = 0.25  # the old deadline (4 leases, 1 s) passes after a few retries
    r = ActiveRun(run_id="one-shot", epoch=3, strategy_id="s", name="n", stop_timeout_s=1, renewed_at=0.0)
    started = time.monotonic()
    asyncio.run(daemon._report(r, {"code": 0, "signal": None, "oom": False, "reason": "exited"}))
    assert time.monotonic() - started > 4 * daemon.lease_s  # it kept trying past the old deadline
    assert client.reported is not None and client.reported[0] == "one-shot" and client.reported[2]["code"] == 0


def test_spooled_lines_of_ended_runs_are_delivered_without_a_runner_restart(monkeypatch: Any) -> None:
    """A run that ended while the coordinator was away left its last lines in a spool that
    only the next runner process delivered: a long-lived runner never did."""
    import sequence.runner.daemon as daemon_mod

    delivered: list[set[str]] = []

    async def fake_deliver(client: Any, spools: Any, closing: Any) -> None:
        delivered.append(set(spools))

    class Sandbox:
        def pending_spools(self) -> dict[str, Any]:
            return {"ended": ("dir-a", {}), "still-running": ("dir-b", {})}

    monkeypatch.setattr(daemon_mod, "deliver_spools", fake_deliver)
    daemon = RunnerDaemon(HangingClient(), sandbox=Sandbox(), name="t", region="r", capacity=2)  # type: ignore[arg-type]
    daemon.runs["still-running"] = ActiveRun(run_id="still-running", epoch=1, strategy_id="s", name="n",
                                             stop_timeout_s=1, renewed_at=0.0)

    async def main() -> None:
        loop = asyncio.create_task(daemon._spool_loop(every=0.05))
        await asyncio.sleep(0.3)
        daemon._closing.set()
        await loop
        await asyncio.gather(*daemon._bg)

    asyncio.run(main())
    assert delivered and all(d == {"ended"} for d in delivered)
