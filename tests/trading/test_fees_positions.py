"""Fees per venue and the positions fold."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sequence.trading.fees import FeeConfigError, FeeModel, FeeSchedule
from sequence.trading.positions import Position, apply_fill, apply_fill_row
from sequence.trading.wire import position_json

Q = 100_000_000  # qty_1e8 of one unit


def test_default_fees_follow_the_venues() -> None:
    fees = FeeSchedule()
    # Kalshi: ceil to the cent of 0.07 * C * P * (1 - P)
    assert fees.fee_1e8("kalshi", Fraction(37, 100), Fraction(1), "taker") == 2_000_000
    assert fees.fee_1e8("kalshi", Fraction(50, 100), Fraction(100), "taker") == 175_000_000
    assert fees.fee_1e8("kalshi", Fraction(50, 100), Fraction(100), "maker") == 0
    assert fees.fee_1e8("polymarket", Fraction(1, 2), Fraction(100), "taker") == 0
    # Coinbase: 60 bps taker, 40 bps maker of notional
    assert fees.fee_1e8("coinbase", Fraction(50_000), Fraction(1, 10), "taker") == 30 * Q
    assert fees.fee_1e8("coinbase", Fraction(50_000), Fraction(1, 10), "maker") == 20 * Q
    assert fees.fee_1e8("elsewhere", Fraction(1), Fraction(1), "taker") == 0


def test_fee_overrides_layer_on_the_defaults() -> None:
    fees = FeeSchedule.from_mapping('{"coinbase": {"taker": 0.001}, "polymarket": {"model": "notional", '
                                    '"taker": 0.02}}')
    assert fees.model("coinbase") == FeeModel("notional", taker=0.001, maker=0.004)
    assert fees.fee_1e8("polymarket", Fraction(1, 2), Fraction(10), "taker") == 10_000_000
    assert FeeSchedule.from_mapping(None) == FeeSchedule()


@pytest.mark.parametrize("bad", ["[", "[]", '{"kalshi": 1}', '{"kalshi": {"rate": 1}}',
                                 '{"kalshi": {"taker": 2}}', '{"kalshi": {"model": "flat"}}'])
def test_bad_fee_config_is_refused(bad: str) -> None:
    with pytest.raises(FeeConfigError):
        FeeSchedule.from_mapping(bad)


def test_round_trip_realizes_pnl_and_flat_position_has_no_average() -> None:
    p = apply_fill(Position(), "buy", Fraction(40, 100), 10 * Q, fee_1e8=5)
    p = apply_fill(p, "buy", Fraction(50, 100), 10 * Q)
    assert p.avg_price == Fraction(45, 100)
    assert p.unrealized_1e8(Fraction(60, 100)) == 3 * Q  # (0.60 - 0.45) * 20
    p = apply_fill(p, "sell", Fraction(60, 100), 20 * Q, fee_1e8=7)
    assert (p.net_1e8, p.cost_1e8, p.realized_1e8, p.fees_1e8, p.fill_count) == (0, 0, 3 * Q, 12, 3)
    assert p.avg_price is None and p.unrealized_1e8(None) == 0


def test_flipping_from_long_to_short() -> None:
    p = apply_fill(Position(), "buy", Fraction(1, 2), 10 * Q)
    p = apply_fill(p, "sell", Fraction(6, 10), 15 * Q)
    assert p.net_1e8 == -5 * Q and p.avg_price == Fraction(6, 10)
    assert p.realized_1e8 == 1 * Q
    assert p.unrealized_1e8(Fraction(5, 10)) == Q // 2  # short gains as the price falls


def test_position_json_shape() -> None:
    p = apply_fill(Position(), "buy", Fraction(37, 100), Q, fee_1e8=2_000_000)
    out = position_json(p, symbol="X", venue="kalshi", paper=True, mark=Fraction(4, 10))
    assert out["net_qty"] == 1.0 and out["net_qty_1e8"] == Q and out["avg_price"] == 0.37
    assert out["unrealized_pnl"] == pytest.approx(0.03) and out["fees"] == 0.02
    assert out["total_pnl"] == pytest.approx(0.01) and out["sandbox"] is True
    assert position_json(p, symbol="X", venue="kalshi", paper=False, mark=None)["unrealized_pnl"] is None


def test_apply_fill_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        apply_fill(Position(), "buy", Fraction(1), 0)
    with pytest.raises(ValueError):
        apply_fill(Position(), "hold", Fraction(1), 1)


trades = st.lists(st.tuples(st.sampled_from(["buy", "sell"]), st.integers(1, 99), st.integers(1, 50)),
                  min_size=1, max_size=30)


@settings(max_examples=200, deadline=None)
@given(trades)
def test_pnl_identity(fills: list[tuple[str, int, int]]) -> None:
    """realized + unrealized at mark equals cash flow + position value at mark (up to rounding)."""
    p = Position()
    cash = Fraction(0)
    for side, cents, qty in fills:
        price = Fraction(cents, 100)
        p = apply_fill(p, side, price, qty * Q)
        cash += (-1 if side == "buy" else 1) * price * qty * Q
    mark = Fraction(1, 2)
    unreal = p.unrealized_1e8(mark)
    assert unreal is not None
    expected = cash + mark * p.net_1e8
    assert abs(p.realized_1e8 + unreal - expected) <= len(fills) + 1
    assert p.net_1e8 == sum((q if s == "buy" else -q) * Q for s, _, q in fills)


def test_a_position_round_trips_through_its_row_and_folds_fill_rows() -> None:
    fill = {"side": "buy", "price_units": 40, "price_scale": 100, "qty_1e8": 2 * Q, "fee_1e8": 3}
    pos = apply_fill_row(Position(), fill)
    assert pos == apply_fill(Position(), "buy", Fraction(40, 100), 2 * Q, 3)
    assert Position.from_row({"client_id": "c", **pos.columns()}) == pos
