"""Risk limits: what a real order must pass before it leaves for a venue.

Pure: :func:`check` takes the limits, the order and a snapshot of the
client's (or strategy's) exposure, and names the first limit the order would
breach — or None. The engine keeps the exposure (:class:`Exposure`) and asks
before every real order it sends, roots and triggered nodes alike; a breach
rejects the node with the limit's code (``risk_max_order_notional`` …).

Limits apply to real orders only: paper orders (a ``seq_test_`` key or
``sandbox: true``) never reach a venue and are not limited. A client's limits
apply to all its real orders; a strategy may have its own, tighter or looser,
checked for that strategy's orders *in addition* to the client's.

Money is in dollars (USD, or the quote currency for Coinbase products), as
:class:`~fractions.Fraction` so that comparisons are exact.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from fractions import Fraction
from typing import Any

__all__ = ["CANCEL_ON_STOP", "CONTROL_FIELDS", "DEFAULT_LIMITS", "LIMIT_FIELDS", "Exposure", "OrderRisk",
           "RiskLimits", "check", "parse_limits"]


@dataclass(frozen=True)
class RiskLimits:
    """Each limit in its unit; None = no limit."""

    max_order_notional: float | None = None  # dollars of one order (qty × limit price)
    max_position_notional: float | None = None  # dollars held in one symbol after the order fills
    max_open_orders: int | None = None  # real orders working at once
    max_orders_per_second: float | None = None  # real orders sent in any one-second window
    max_daily_loss: float | None = None  # realized loss (fees included) since 00:00 UTC

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def merged(self, changes: Mapping[str, Any]) -> RiskLimits:
        return replace(self, **{k: v for k, v in changes.items() if k in LIMIT_FIELDS})


LIMIT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(RiskLimits))

#: A client's limits until it sets its own: small enough that a runaway strategy on a new
#: live key loses little; every one can be raised (docs/trading.md "Risk limits").
DEFAULT_LIMITS = RiskLimits(
    max_order_notional=100.0,
    max_position_notional=500.0,
    max_open_orders=20,
    max_orders_per_second=5.0,
    max_daily_loss=100.0,
)


@dataclass(frozen=True)
class OrderRisk:
    """The order being checked."""

    symbol: str
    side: str  # buy | sell
    qty: Fraction
    price: Fraction  # the limit (dollars per unit)


@dataclass
class Exposure:
    """One scope's (client or strategy) live exposure, kept by the engine as orders and fills happen."""

    open_orders: int = 0
    positions: dict[str, Fraction] = field(default_factory=dict)  # symbol -> net quantity
    day: int = 0  # days since the epoch (UTC) that realized_today counts
    realized_today: Fraction = Fraction(0)  # P&L realized today, fees subtracted
    sent: deque[float] = field(default_factory=deque)  # monotonic times of recent sends

    def roll(self, now: float | None = None) -> None:
        today = int((now if now is not None else time.time()) // 86400)
        if today != self.day:
            self.day, self.realized_today = today, Fraction(0)

    def record_send(self, at: float) -> None:
        self.sent.append(at)

    def sent_in_last_second(self, at: float) -> int:
        while self.sent and at - self.sent[0] >= 1.0:
            self.sent.popleft()
        return len(self.sent)


def check(limits: RiskLimits, order: OrderRisk, exposure: Exposure, *, at: float) -> tuple[str, str] | None:
    """``(code, message)`` of the first limit *order* breaches, or None. ``at`` is a monotonic time."""
    notional = order.qty * order.price
    if limits.max_order_notional is not None and notional > Fraction(str(limits.max_order_notional)):
        return ("risk_max_order_notional",
                f"order notional {float(notional):.2f} is over the max_order_notional limit "
                f"{limits.max_order_notional:g}")
    if limits.max_position_notional is not None:
        held = exposure.positions.get(order.symbol, Fraction(0))
        after = held + (order.qty if order.side == "buy" else -order.qty)
        # Only an order that grows the position can breach: reducing one is always allowed.
        if abs(after) > abs(held) and abs(after) * order.price > Fraction(str(limits.max_position_notional)):
            return ("risk_max_position_notional",
                    f"position in {order.symbol} would be {float(abs(after) * order.price):.2f} "
                    f"at this price, over the max_position_notional limit {limits.max_position_notional:g}")
    if limits.max_open_orders is not None and exposure.open_orders >= limits.max_open_orders:
        return ("risk_max_open_orders",
                f"{exposure.open_orders} orders are working: the max_open_orders limit is {limits.max_open_orders}")
    if (limits.max_orders_per_second is not None
            and exposure.sent_in_last_second(at) + 1 > limits.max_orders_per_second):
        return ("risk_max_orders_per_second",
                f"more than {limits.max_orders_per_second:g} orders in one second (max_orders_per_second)")
    if limits.max_daily_loss is not None and -exposure.realized_today >= Fraction(str(limits.max_daily_loss)):
        return ("risk_max_daily_loss",
                f"today's realized loss {float(-exposure.realized_today):.2f} has reached the "
                f"max_daily_loss limit {limits.max_daily_loss:g}; new orders wait for tomorrow (UTC) "
                "or a higher limit")
    return None


#: Beside the limits, per client or strategy: cancel a run's real orders when the run ends,
#: loses its lease, or its venue session drops (default on).
CANCEL_ON_STOP = "cancel_on_stop"
CONTROL_FIELDS: tuple[str, ...] = (*LIMIT_FIELDS, CANCEL_ON_STOP)


def parse_limits(body: Any) -> dict[str, Any]:
    """A ``PUT /v1/risk`` body: known limit names, each a non-negative number or null (no limit),
    and ``cancel_on_stop`` (true/false). Raises ``ValueError(field, message)`` naming the field."""
    if not isinstance(body, Mapping) or not body:
        raise ValueError("body", f"a JSON object with one or more of: {', '.join(CONTROL_FIELDS)}")
    out: dict[str, Any] = {}
    for key, value in body.items():
        if key == CANCEL_ON_STOP:
            if not isinstance(value, bool):
                raise ValueError(key, "cancel_on_stop must be true or false")
            out[key] = value
            continue
        if key not in LIMIT_FIELDS:
            raise ValueError(str(key), f"unknown limit {str(key)[:40]!r}; the limits are {', '.join(CONTROL_FIELDS)}")
        if value is None:
            out[key] = None
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < 0 \
                or value > 1e12:
            raise ValueError(key, f"{key} must be a number from 0 to 1e12, or null for no limit")
        if key == "max_open_orders":
            if int(value) != value:
                raise ValueError(key, "max_open_orders must be a whole number")
            value = int(value)
        out[key] = value
    return out
