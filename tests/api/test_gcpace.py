"""The coordinator's garbage collection runs between events of its loop, not inside them
(src/sequence/api/gcpace.py); what it changes in the process is undone by the last stop."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from sequence.api import gcpace
from sequence.api.gcpace import GcPacer
from sequence.settings import Settings, SettingsError

# An event that leaves this many containers alive: ~30 of CPython's young collections' worth,
# under the pacer's safety threshold.
EVENT_OBJECTS = 20_000


@contextmanager
def collections() -> Iterator[list[int]]:
    """The generations of the collections that start while inside."""
    seen: list[int] = []

    def cb(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            seen.append(info["generation"])

    gc.callbacks.append(cb)
    try:
        yield seen
    finally:
        gc.callbacks.remove(cb)


def _event() -> list[list[int]]:
    return [[] for _ in range(EVENT_OBJECTS)]


@pytest.fixture(autouse=True)
def _cpython_defaults() -> Iterator[None]:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    assert GcPacer._users == 0
    yield
    gc.set_threshold(*before)


def test_an_event_that_allocates_is_not_interrupted_and_the_pacer_collects_after_it() -> None:
    # Without the pacer, CPython collects inside the event (what the pacer exists to prevent).
    with collections() as inside:
        kept = _event()
    assert len(inside) >= 10
    del kept

    async def main() -> tuple[list[int], list[int], list[int]]:
        pacer = GcPacer(0.005)
        pacer.start()
        try:
            with collections() as inside:
                kept = _event()  # one event: no await, so the pacer cannot run in it
                during = list(inside)
            with collections() as between:
                await asyncio.sleep(0.1)  # the loop's turn: the pacer runs the collection due
            del kept
            return during, list(between), pacer.collections
        finally:
            await pacer.stop()

    during, between, by_pacer = asyncio.run(main())
    assert during == []
    assert between and between[0] == 0 and by_pacer[0] >= 1


def test_startup_is_frozen_and_the_last_stop_restores_thresholds_and_unfreezes() -> None:
    async def main() -> None:
        first, second = GcPacer(0.01), GcPacer(0.01)
        first.start()
        assert gc.get_threshold() == gcpace.SAFETY and gc.get_freeze_count() > 0
        second.start()
        await first.stop()
        assert gc.get_threshold() == gcpace.SAFETY and gc.get_freeze_count() > 0  # one is still running
        await second.stop()
        assert gc.get_threshold() == (700, 10, 10) and gc.get_freeze_count() == 0
        assert GcPacer._users == 0

    asyncio.run(main())


def test_pacing_off_leaves_cpython_alone_but_still_reports_pauses() -> None:
    paused: list[tuple[int, float]] = []

    async def main() -> None:
        pacer = GcPacer(0, observe=lambda gen, s: paused.append((gen, s)))
        pacer.start()
        assert gc.get_threshold() == (700, 10, 10) and gc.get_freeze_count() == 0
        gc.collect(1)
        await pacer.stop()
        gc.collect(0)  # after stop: not reported

    asyncio.run(main())
    assert [g for g, _s in paused] == [1] and paused[0][1] >= 0


def test_a_full_collection_at_most_every_full_every_s() -> None:
    pacer = GcPacer(1.0)  # not started: step() driven by hand, with its clock
    gc.set_threshold(*gcpace.SAFETY)  # as a started pacer sets them (the fixture restores them)
    t0 = pacer._last_full
    gens = []
    keep = []
    for _ in range(400):
        keep.append([[] for _ in range(gcpace.YOUNG + 50)])
        gens.append(pacer.step(now=t0 + 1.0))
    assert gens.count(2) == 0 and gens.count(1) >= 30  # generation 1 every tenth; never the oldest yet
    for _ in range(30):
        keep.append([[] for _ in range(gcpace.YOUNG + 50)])
        if pacer.step(now=t0 + gcpace.FULL_EVERY_S + 1) == 2:
            break
    else:
        pytest.fail("no full collection once FULL_EVERY_S had passed")
    assert pacer.collections[2] == 1


def test_nothing_is_collected_while_the_young_generation_is_small() -> None:
    pacer = GcPacer(1.0)
    gc.collect(0)
    assert pacer.step() is None and pacer.collections == [0, 0, 0]


@pytest.mark.parametrize("value", ["-1", "1001", "soon"])
def test_a_bad_gc_pacing_setting_is_refused_with_its_name(value: str) -> None:
    with pytest.raises(SettingsError, match=r"gc_pacing_ms|SEQUENCE_GC_PACING_MS"):
        Settings.from_env({"SEQUENCE_GC_PACING_MS": value})


def test_the_setting_reads_from_the_environment() -> None:
    assert Settings.from_env({}).gc_pacing_ms == 10.0
    assert Settings.from_env({"SEQUENCE_GC_PACING_MS": "0"}).gc_pacing_ms == 0.0
