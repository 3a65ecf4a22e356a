"""Positions from fills: net quantity, average price, realized and unrealized P&L.

A pure fold over fills (average-cost method), in integers: quantities are
``qty × 10⁸`` and money is ``USD × 10⁸``. ``cost_1e8`` is the signed cost of
the open quantity (positive for a long, negative for a short), so the average
price is ``cost / net`` and unrealized P&L at ``mark`` is ``mark × net − cost``.

Fees are accumulated apart from trading P&L: ``realized_pnl`` is the gain on
closed quantity, ``fees`` what was paid, and ``total_pnl`` is
``realized + unrealized − fees``. Paper and live positions are separate rows
(the store keys them by client, paper or live, and symbol). The ``GET /v1/positions``
row is :func:`sequence.trading.wire.position_json`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from fractions import Fraction
from typing import Any


@dataclass(frozen=True, slots=True)
class Position:
    """One position; its fields are the ``positions`` columns of the same names."""

    net_1e8: int = 0
    cost_1e8: int = 0
    realized_1e8: int = 0
    fees_1e8: int = 0
    fill_count: int = 0

    @classmethod
    def from_row(cls, r: Mapping[str, Any]) -> Position:
        """From a ``positions`` row."""
        return cls(int(r["net_1e8"]), int(r["cost_1e8"]), int(r["realized_1e8"]), int(r["fees_1e8"]),
                   int(r["fill_count"]))

    def columns(self) -> dict[str, int]:
        """Its ``positions`` columns."""
        return asdict(self)

    @property
    def avg_price(self) -> Fraction | None:
        if self.net_1e8 == 0:
            return None
        return Fraction(self.cost_1e8, self.net_1e8)

    def unrealized_1e8(self, mark: Fraction | None) -> int | None:
        if self.net_1e8 == 0:
            return 0
        if mark is None:
            return None
        return round(mark * self.net_1e8) - self.cost_1e8


def apply_fill(pos: Position, side: str, price: Fraction, qty_1e8: int, fee_1e8: int = 0) -> Position:
    """The position after one fill (``side`` is ``buy`` or ``sell``)."""
    if qty_1e8 <= 0:
        raise ValueError("fill quantity must be positive")
    if side not in ("buy", "sell"):
        raise ValueError(f"side must be buy or sell, not {side!r}")
    q = qty_1e8 if side == "buy" else -qty_1e8
    net, cost, realized = pos.net_1e8, pos.cost_1e8, pos.realized_1e8
    if net == 0 or (net > 0) == (q > 0):
        net += q
        cost += round(price * q)
    else:
        sign = 1 if net > 0 else -1
        closing = min(abs(q), abs(net))
        closed_cost = cost if closing == abs(net) else round(Fraction(cost * closing, abs(net)))
        realized += round(sign * price * closing) - closed_cost
        net -= sign * closing
        cost -= closed_cost
        rest = abs(q) - closing
        if rest:
            opened = -sign * rest
            net += opened
            cost += round(price * opened)
    return replace(
        pos,
        net_1e8=net,
        cost_1e8=cost,
        realized_1e8=realized,
        fees_1e8=pos.fees_1e8 + fee_1e8,
        fill_count=pos.fill_count + 1,
    )



def apply_fill_row(pos: Position, fill: Mapping[str, Any]) -> Position:
    """The position after a ``fills`` row."""
    return apply_fill(pos, fill["side"], Fraction(fill["price_units"], fill["price_scale"]), fill["qty_1e8"],
                      fill["fee_1e8"])
