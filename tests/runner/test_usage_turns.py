"""A heartbeat reports the memory and CPU of at most USAGE_PER_BEAT runs, in turn."""

from __future__ import annotations

from sequence.runner.daemon import USAGE_PER_BEAT, ActiveRun, RunnerDaemon


def _runs(n: int) -> list[ActiveRun]:
    return [ActiveRun(run_id=f"r{i}", epoch=1, strategy_id="s", name="s", stop_timeout_s=1.0, renewed_at=0.0)
            for i in range(n)]


def test_a_small_runner_reports_every_run_every_beat() -> None:
    daemon = RunnerDaemon(object(), sandbox=object(), name="t", region="r", capacity=10)  # type: ignore[arg-type]
    runs = _runs(USAGE_PER_BEAT)
    assert daemon._usage_turn(runs) == runs
    assert daemon._usage_turn(runs) == runs


def test_a_big_runner_reports_a_slice_each_beat_and_every_run_in_turn() -> None:
    daemon = RunnerDaemon(object(), sandbox=object(), name="t", region="r", capacity=1000)  # type: ignore[arg-type]
    runs = _runs(USAGE_PER_BEAT * 2 + 50)
    seen: list[str] = []
    for _ in range(3):
        part = daemon._usage_turn(runs)
        assert len(part) == USAGE_PER_BEAT
        seen += [r.run_id for r in part]
    assert set(seen) == {r.run_id for r in runs}  # three beats covered all 250
    runs = runs[:120]  # runs ended meanwhile: the turn goes on without an error
    assert len(daemon._usage_turn(runs)) == USAGE_PER_BEAT
