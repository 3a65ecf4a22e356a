"""When to retry, and how long to wait first. Pure: no sleeping here."""

from __future__ import annotations

import datetime
import email.utils
from typing import Mapping, Optional

#: Statuses worth another try: the request never reached a healthy server.
RETRY_STATUSES = frozenset({429, 502, 503, 504})


class RetryPolicy:
    """Exponential backoff with jitter.

    Attempt ``n`` (0-based) waits ``min(backoff_max, backoff_base * 2**n)``
    scaled by a random factor in ``[1 - jitter, 1]``, so many clients that
    failed together do not retry together. A server's ``Retry-After`` is
    honoured exactly instead; if it asks for more than ``max_retry_after``
    seconds the SDK gives up at once and raises, leaving the decision to you.

    ``RetryPolicy(max_retries=0)`` turns retries off.
    """

    __slots__ = ("backoff_base", "backoff_max", "jitter", "max_retries", "max_retry_after")

    def __init__(
        self,
        max_retries: int = 3,
        *,
        backoff_base: float = 0.25,
        backoff_max: float = 8.0,
        jitter: float = 0.5,
        max_retry_after: float = 60.0,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if backoff_base < 0 or backoff_max < 0 or max_retry_after < 0:
            raise ValueError("backoff_base, backoff_max and max_retry_after must be >= 0")
        if not 0 <= jitter <= 1:
            raise ValueError("jitter must be between 0 and 1")
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.jitter = jitter
        self.max_retry_after = max_retry_after

    def backoff(self, attempt: int, rand: float) -> float:
        """Seconds to wait before retry number ``attempt + 1``.

        ``rand`` is a uniform draw in ``[0, 1)``, passed in so this stays pure.
        """
        ceiling = min(self.backoff_max, self.backoff_base * float(2 ** min(attempt, 62)))
        return ceiling * (1.0 - self.jitter * rand)

    def __repr__(self) -> str:
        return (
            f"RetryPolicy(max_retries={self.max_retries}, backoff_base={self.backoff_base}, "
            f"backoff_max={self.backoff_max}, jitter={self.jitter}, "
            f"max_retry_after={self.max_retry_after})"
        )


def parse_retry_after(headers: Mapping[str, str], now: float) -> Optional[float]:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date).

    ``headers`` keys are lower-case; ``now`` is epoch seconds. Unparseable
    values count as absent; dates in the past count as zero.
    """
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # "-0000": UTC, origin unknown
            when = when.replace(tzinfo=datetime.timezone.utc)
        seconds = when.timestamp() - now
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)
