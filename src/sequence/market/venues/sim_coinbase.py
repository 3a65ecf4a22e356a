"""A simulated Coinbase Advanced Trade: three USD spot products.

``BTC-USD``, ``ETH-USD`` and ``SOL-USD`` with Coinbase's increments: price
increment 0.01 (books are kept in cents), base increment 0.00000001 (sizes in
satoshi-like units), minimum notional $1 (``quote_min_size``). Prices follow a
log random walk within ±15% of their start; the spread is usually one cent,
the ladder thins out away from the top.
"""

from __future__ import annotations

from typing import Any

from ..catalogue import Catalogue, MarketSpec
from ..clock import Clock, seeded_rng
from .sim import SimConfig, SimParams, SimVenue

# product, title, start price, base volume (24h, base units), ladder step (cents),
# mean level size (base units), wake-ups per second
PRODUCTS = (
    ("BTC-USD", "Bitcoin / US Dollar", 95_000.0, 9_500.0, 50, 0.35, 10.0),
    ("ETH-USD", "Ethereum / US Dollar", 3_400.0, 160_000.0, 10, 4.0, 8.0),
    ("SOL-USD", "Solana / US Dollar", 180.0, 2_400_000.0, 2, 60.0, 6.0),
)


def build_coinbase(seed: int) -> tuple[Catalogue, dict[str, SimParams]]:
    rng = seeded_rng(seed, "coinbase", "catalogue")
    markets = []
    params: dict[str, SimParams] = {}
    for product, title, price, volume, step, size, rate in PRODUCTS:
        cents = price * 100 * rng.uniform(0.97, 1.03)
        extra: dict[str, Any] = {
            "product_id": product,
            "base_currency": product.split("-")[0],
            "quote_currency": "USD",
            "price_increment": "0.01",
            "quote_increment": "0.01",
            "base_increment": "0.00000001",
            "base_min_size": "0.00000001",
            "quote_min_size": "1",
            "status": "online",
            "trading_disabled": False,
        }
        markets.append(
            MarketSpec(
                venue="coinbase",
                slug=product,
                title=title,
                instrument_type="spot",
                book_symbol=product,
                symbol=product,
                tick=1,
                price_scale=100,
                size_scale=100_000_000,
                min_notional=1.0,
                min_order_size=0.00000001,
                volume=round(volume * rng.uniform(0.8, 1.2), 8),
                extra=extra,
            )
        )
        params[product] = SimParams(
            fair=cents,
            lo=cents * 0.85,
            hi=cents * 1.15,
            vol=0.00006,
            rate=rate,
            kind="spot",
            levels=20,
            spread=(1, 2),
            ladder_step=step,
            size=size,
            whole=False,
            fill=0.9,
        )
    return Catalogue(tuple(markets)), params


class SimCoinbase(SimVenue):
    """Coinbase-shaped simulator; see the module docstring."""

    def __init__(self, clock: Clock, config: SimConfig | None = None) -> None:
        config = config or SimConfig()
        catalogue, params = build_coinbase(config.seed)
        super().__init__("coinbase", catalogue, params, clock=clock, config=config)
