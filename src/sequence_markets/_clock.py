"""Time, injected so retries, polling and reconnect backoff are testable."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """What the SDK needs from time. Pass your own to ``Sequence(clock=...)``."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (deadlines)."""

    def time(self) -> float:
        """Seconds since the epoch (to read HTTP-date ``Retry-After``)."""

    def sleep(self, seconds: float) -> None:
        """Block for ``seconds``."""


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)
