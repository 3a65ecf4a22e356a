"""Trading fees per venue, configurable.

Fees are exact: computed with :class:`fractions.Fraction` from integer prices
and quantities and returned as an integer number of 10⁻⁸ US dollars
(``fee_1e8``). Defaults follow the venues' public schedules (2026):

* **kalshi** — ``ceil_to_cent(rate × contracts × P × (1 − P))`` with a taker
  rate of 0.07 and no maker fee (Kalshi charges makers only on a few markets);
* **polymarket** — no trading fee on most markets;
* **coinbase** — a share of notional: 0.60 % taker, 0.40 % maker (the
  lowest-volume Advanced Trade tier).

Paper fills are charged the same fees so that paper P&L is
comparable with live P&L. Override any venue with :meth:`FeeSchedule.from_mapping`::

    {"coinbase": {"model": "notional", "taker": 0.004, "maker": 0.0025},
     "kalshi": {"model": "kalshi", "taker": 0.07, "maker": 0.0175}}
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

Model = Literal["kalshi", "notional", "zero"]
MODELS: tuple[str, ...] = ("kalshi", "notional", "zero")
USD_1E8 = 100_000_000
CENT_1E8 = 1_000_000


class FeeConfigError(ValueError):
    """A fee schedule that cannot be used."""


@dataclass(frozen=True, slots=True)
class FeeModel:
    model: Model = "zero"
    taker: float = 0.0
    maker: float = 0.0

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise FeeConfigError(f"fee model must be one of {', '.join(MODELS)}, not {self.model!r}")
        for name in ("taker", "maker"):
            rate = getattr(self, name)
            if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate < 1:
                raise FeeConfigError(f"{name} fee rate must be a number in [0, 1), not {rate!r}")

    def fee_1e8(self, price: Fraction, qty: Fraction, liquidity: str) -> int:
        """Fee in 10⁻⁸ USD for ``qty`` units traded at ``price`` USD each."""
        rate = Fraction(str(self.taker if liquidity == "taker" else self.maker))
        if rate == 0 or self.model == "zero" or qty <= 0:
            return 0
        if self.model == "kalshi":
            raw = rate * qty * price * (1 - price)  # dollars
            return math.ceil(raw * 100) * CENT_1E8
        return math.ceil(rate * qty * price * USD_1E8)


DEFAULT_FEES: Mapping[str, FeeModel] = {
    "kalshi": FeeModel("kalshi", taker=0.07, maker=0.0),
    "polymarket": FeeModel("zero"),
    "coinbase": FeeModel("notional", taker=0.006, maker=0.004),
}


@dataclass(frozen=True)
class FeeSchedule:
    venues: Mapping[str, FeeModel] = field(default_factory=lambda: dict(DEFAULT_FEES))
    default: FeeModel = field(default_factory=FeeModel)

    def model(self, venue: str) -> FeeModel:
        return self.venues.get(venue, self.default)

    def fee_1e8(self, venue: str, price: Fraction, qty: Fraction, liquidity: str) -> int:
        return self.model(venue).fee_1e8(price, qty, liquidity)

    @classmethod
    def from_mapping(cls, overrides: Mapping[str, Any] | str | None) -> FeeSchedule:
        """Defaults with ``overrides`` (a mapping or its JSON text) layered on top, per venue."""
        if overrides is None or overrides == "":
            return cls()
        if isinstance(overrides, str):
            try:
                overrides = json.loads(overrides)
            except ValueError as exc:
                raise FeeConfigError(f"fee schedule is not valid JSON: {exc}") from exc
        if not isinstance(overrides, Mapping):
            raise FeeConfigError("fee schedule must be a JSON object keyed by venue")
        venues = dict(DEFAULT_FEES)
        for venue, spec in overrides.items():
            if not isinstance(spec, Mapping):
                raise FeeConfigError(f"fees for {venue!r} must be an object like "
                                     '{"model": "notional", "taker": 0.006, "maker": 0.004}')
            unknown = set(spec) - {"model", "taker", "maker"}
            if unknown:
                raise FeeConfigError(f"unknown fee setting(s) for {venue!r}: {', '.join(sorted(unknown))}")
            base = venues.get(venue, FeeModel())
            venues[venue] = FeeModel(
                spec.get("model", base.model), spec.get("taker", base.taker), spec.get("maker", base.maker)
            )
        return cls(venues)
