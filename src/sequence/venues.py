"""The venues Sequence knows, listed once.

Everything keyed by venue — the simulators (:mod:`sequence.market.venues`), the
order rules and fees (:mod:`sequence.trading`), venue credentials
(``/v1/credentials``), regions and ``latency_target`` — covers these names.
"""

from __future__ import annotations

from typing import Final

VENUES: Final[tuple[str, ...]] = ("kalshi", "polymarket", "coinbase")
