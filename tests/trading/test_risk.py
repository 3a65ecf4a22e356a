"""Risk limits: each limit's breach is named; reducing a position is always allowed."""

from __future__ import annotations

from fractions import Fraction as F

import pytest

from sequence.trading.risk import (
    DEFAULT_LIMITS,
    Exposure,
    OrderRisk,
    RiskLimits,
    check,
    parse_limits,
)

LIMITS = RiskLimits(max_order_notional=100, max_position_notional=300, max_open_orders=2,
                    max_orders_per_second=3, max_daily_loss=50)


def order(qty: str = "10", price: str = "0.5", side: str = "buy", symbol: str = "X") -> OrderRisk:
    return OrderRisk(symbol, side, F(qty), F(price))


def test_an_order_inside_every_limit_passes() -> None:
    assert check(LIMITS, order(), Exposure(), at=0.0) is None
    assert check(RiskLimits(), order("1e9", "1"), Exposure(open_orders=10**6), at=0.0) is None  # no limits


def test_order_notional() -> None:
    assert check(LIMITS, order("200", "0.5"), Exposure(), at=0.0) is None  # exactly 100
    code, msg = check(LIMITS, order("201", "0.5"), Exposure(), at=0.0) or ("", "")
    assert code == "risk_max_order_notional" and "100.50" in msg


def test_position_notional_counts_what_is_held_and_never_stops_a_reduction() -> None:
    held = Exposure(positions={"X": F(500)})
    code, _ = check(LIMITS, order("150", "0.5"), held, at=0.0) or ("", "")
    assert code == "risk_max_position_notional"  # 650 × 0.5 = 325 > 300
    assert check(LIMITS, order("150", "0.5", side="sell"), held, at=0.0) is None  # reduces
    assert check(LIMITS, order("100", "0.5"), held, at=0.0) is None  # 600 × 0.5 = 300
    short = Exposure(positions={"X": F(-700)})
    assert check(LIMITS, order("100", "0.5", side="sell"), short, at=0.0)[0] == "risk_max_position_notional"  # type: ignore[index]


def test_open_orders_rate_and_daily_loss() -> None:
    assert check(LIMITS, order(), Exposure(open_orders=2), at=0.0)[0] == "risk_max_open_orders"  # type: ignore[index]
    e = Exposure()
    for t in (0.0, 0.1, 0.2):
        assert check(LIMITS, order(), e, at=t) is None
        e.record_send(t)
    assert check(LIMITS, order(), e, at=0.5)[0] == "risk_max_orders_per_second"  # type: ignore[index]
    assert check(LIMITS, order(), e, at=1.05) is None  # the window slid past the first send
    lost = Exposure(realized_today=F(-50))
    assert check(LIMITS, order(), lost, at=0.0)[0] == "risk_max_daily_loss"  # type: ignore[index]
    assert check(LIMITS, order(), Exposure(realized_today=F(-4999, 100)), at=0.0) is None


def test_the_day_rolls_at_midnight_utc() -> None:
    e = Exposure(day=1, realized_today=F(-80))
    e.roll(now=86400 * 1 + 10)
    assert e.realized_today == -80
    e.roll(now=86400 * 2 + 1)
    assert e.day == 2 and e.realized_today == 0


def test_defaults_are_set_for_every_limit() -> None:
    assert all(v is not None for v in DEFAULT_LIMITS.as_dict().values())


@pytest.mark.parametrize(("body", "field"), [
    ({}, "body"), ([], "body"), ({"max_orders": 1}, "max_orders"), ({"max_open_orders": 1.5}, "max_open_orders"),
    ({"max_daily_loss": -1}, "max_daily_loss"), ({"max_daily_loss": True}, "max_daily_loss"),
    ({"max_order_notional": "10"}, "max_order_notional"), ({"max_order_notional": float("nan")}, "max_order_notional"),
])
def test_bad_limit_bodies_name_the_field(body: object, field: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_limits(body)
    assert err.value.args[0] == field


def test_a_good_body_parses_and_null_removes_a_limit() -> None:
    assert parse_limits({"max_open_orders": 5.0, "max_daily_loss": None}) == {"max_open_orders": 5,
                                                                             "max_daily_loss": None}
    assert DEFAULT_LIMITS.merged({"max_daily_loss": None}).max_daily_loss is None
