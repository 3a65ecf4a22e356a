"""Clocks and seeded randomness, injected so a simulation replays exactly.

Everything in the market service reads time through a :class:`Clock` and draws
randomness from :func:`seeded_rng`. With a :class:`ManualClock` and a fixed seed
two runs produce byte-identical event streams; with :class:`RealClock` the same
simulator follows the wall clock.

Times are epoch seconds (floats) at the API and integer epoch milliseconds
inside the simulation, so event timestamps never accumulate float error.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime
from typing import Literal, Protocol, overload, runtime_checkable

#: 2026-11-25T00:00:00Z — the default start of a :class:`ManualClock`.
DEFAULT_MANUAL_START = datetime(2026, 11, 25, tzinfo=UTC).timestamp()


@runtime_checkable
class Clock(Protocol):
    """Source of the current time in epoch seconds."""

    def now(self) -> float: ...


class RealClock:
    """The wall clock."""

    def now(self) -> float:
        return time.time()

    def __repr__(self) -> str:
        return "RealClock()"


class ManualClock:
    """A clock that only moves when told to; for tests, replays and benchmarks."""

    def __init__(self, start: float = DEFAULT_MANUAL_START) -> None:
        self._now = float(start)

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self._now += seconds
        return self._now

    def set(self, ts: float) -> None:
        if ts < self._now:
            raise ValueError("a clock cannot go backwards")
        self._now = float(ts)

    def __repr__(self) -> str:
        return f"ManualClock(now={self._now!r})"


def now_ms(clock: Clock) -> int:
    """The clock's time in whole epoch milliseconds."""
    return round(clock.now() * 1000)


Timespec = Literal["auto", "seconds", "milliseconds"]


@overload
def iso(ts: float, timespec: Timespec = ...) -> str: ...
@overload
def iso(ts: None, timespec: Timespec = ...) -> None: ...
@overload
def iso(ts: float | None, timespec: Timespec = ...) -> str | None: ...


def iso(ts: float | None, timespec: Timespec = "milliseconds") -> str | None:
    """Epoch seconds as ISO-8601 UTC with a ``Z`` suffix (``None`` stays ``None``).

    The one time formatter of the API: trading objects carry milliseconds
    (``2026-11-25T00:00:00.125Z``), catalogue close times whole seconds, and
    strategy rows ``auto`` (microseconds when there are any).
    """
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def seeded_rng(seed: int | str, *scope: str) -> random.Random:
    """A private RNG for ``scope`` under ``seed``.

    Seeding with a string is stable across processes (Python hashes ``str`` seeds
    with SHA-512, not with the randomised ``hash()``), so each venue gets its own
    reproducible stream and adding a venue does not perturb the others.
    """
    return random.Random(":".join([str(seed), *scope]))
