"""Garbage collection between events, not inside them.

CPython collects its youngest generation whenever 700 more container objects
are alive than at the last collection — wherever that happens to be: halfway
through an algo's quote → order path, say. In the coordinator a young
collection costs ~50 µs, every tenth one (generation 1) ~1 ms, and a full one
walked the whole startup heap (the catalogue, every imported module) for
40–240 ms; in the algo benchmark three collections in four ran inside a
measured quote → order path (``bench/algo_latency.py``, its "GC inside"
column, and its run without pacing). So the coordinator paces its own
collections:

* at start, :func:`gc.freeze` moves what startup built into the permanent
  generation, which no collection walks again;
* CPython's automatic thresholds are raised (:data:`SAFETY`) so they act only
  as a safety net;
* a task on the event loop wakes every ``interval`` and runs the collection
  CPython would have run by now (the same counts decide: 700 objects for
  generation 0, ten of those for generation 1) — between two events of the
  loop, never inside one. A full collection runs at most every
  :data:`FULL_EVERY_S` (CPython's own rule, "only when the long-lived objects
  grew by a quarter", is not visible from Python).

The work is the same; it moves to a point of the loop where nothing is half
done. An event that arrives during a collection still waits for it: the pauses
are in ``/metrics`` (``sequence_gc_pause_seconds``), by generation.
``SEQUENCE_GC_PACING_MS=0`` leaves CPython's collector as it is.

One pacer for the process however many apps start (tests run several): the
first start freezes and raises the thresholds, the last stop restores both.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable
from typing import Any

#: CPython's own thresholds: 700 objects, then ten collections of the generation below.
YOUNG = 700
OLDER = 10
#: While paced, CPython collects by itself only past these (a loop too busy to wake the pacer).
SAFETY = (50_000, 20, 20)
#: A full collection (generation 2) at most this often.
FULL_EVERY_S = 30.0

Observer = Callable[[int, float], None]


class GcPacer:
    """See the module docstring. ``observe(generation, seconds)`` hears of every collection,
    paced or not."""

    _users = 0
    _saved: tuple[int, int, int] | None = None

    def __init__(self, interval_s: float, observe: Observer | None = None) -> None:
        self.interval = interval_s
        self.observe = observe
        self.collections = [0, 0, 0]  # by this pacer, by generation
        self._last_full = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self._started_at: float | None = None

    # -- process-wide state -----------------------------------------------------------------
    def start(self) -> None:
        """Freeze, raise the thresholds (first user only), watch collections, start the task."""
        if self.observe is not None:
            gc.callbacks.append(self._callback)
        if self.interval <= 0:
            return
        if GcPacer._users == 0:
            GcPacer._saved = gc.get_threshold()
            # No collection first: in a big process (a test run) a full one costs seconds, and
            # startup's few cycles of garbage cost less frozen than that.
            gc.freeze()
            gc.set_threshold(*SAFETY)
        GcPacer._users += 1
        self._task = asyncio.get_running_loop().create_task(self._run(), name="gc-pacer")

    async def stop(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        GcPacer._users -= 1
        if GcPacer._users == 0 and GcPacer._saved is not None:
            gc.set_threshold(*GcPacer._saved)
            gc.unfreeze()
            GcPacer._saved = None

    # -- the pacing -----------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.step()

    def step(self, now: float | None = None) -> int | None:
        """Run the collection that is due, if one is; return its generation."""
        young, older, oldest = gc.get_count()
        if young < YOUNG:
            return None
        gen = 0
        if older >= OLDER:
            gen = 1
            now = time.monotonic() if now is None else now
            if oldest >= OLDER and now - self._last_full >= FULL_EVERY_S:
                gen = 2
                self._last_full = now
        gc.collect(gen)
        self.collections[gen] += 1
        return gen

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started_at = time.perf_counter()
        elif self._started_at is not None and self.observe is not None:
            self.observe(int(info["generation"]), time.perf_counter() - self._started_at)
            self._started_at = None


__all__ = ["FULL_EVERY_S", "SAFETY", "YOUNG", "GcPacer"]
