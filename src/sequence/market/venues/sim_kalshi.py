"""A simulated Kalshi: binary event contracts in cents.

Catalogue (anchored to the clock's UTC date ``d0``, so tickers look current):

* ``KXBTCD-<d0+5>`` — Bitcoin above $K at 5pm EST, 19 strikes $1,000 apart;
* ``KXETHD-<d0+5>`` — Ethereum above $K, 11 strikes $50 apart;
* ``KXFED-<YYMON>`` — Fed upper bound above X% after the next meeting, 6 strikes;
* ``KXHIGHNY-<d0+1>`` — NYC high-temperature buckets, 6 markets;
* ``KXNBAGAME-<d0+2><AWAY><HOME>`` — two games, one market per team;
* ``KXCPIYOY-<YYMON>`` — CPI year-over-year above X%, 5 strikes;
* ``KXBTCD-<d0-1>`` — yesterday's event, closed (``active=false``, empty books).

Tickers follow Kalshi (``KXBTCD-26NOV30-T98000``). Symbols: the YES token is
``<ticker>-YES`` and the NO token ``<ticker>-NO``; both quote one book (NO is
the mirror of YES, so YES ask = 1 − best NO bid exactly), and the bare ticker
is an alias of the YES token. Tick 0.01 everywhere (``linear_cent``), prices
0.01–0.99, no minimum notional, minimum one contract. Strikes far from the
money have one-sided books.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, date, datetime, timedelta
from typing import Any

from ..catalogue import Catalogue, EventSpec, MarketSpec
from ..clock import Clock, iso, seeded_rng
from .sim import SimConfig, SimParams, SimVenue, norm_cdf, prediction_params

MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
FOMC_MONTHS = (1, 3, 4, 6, 7, 9, 10, 12)
NBA_TEAMS = (
    ("LAL", "Los Angeles L"),
    ("BOS", "Boston"),
    ("GSW", "Golden State"),
    ("NYK", "New York"),
    ("DEN", "Denver"),
    ("MIA", "Miami"),
    ("MIL", "Milwaukee"),
    ("PHX", "Phoenix"),
    ("DAL", "Dallas"),
    ("OKC", "Oklahoma City"),
    ("CLE", "Cleveland"),
    ("MIN", "Minnesota"),
)


def day_code(d: date) -> str:
    return f"{d:%y}{MONTHS[d.month - 1]}{d:%d}"


def month_code(d: date) -> str:
    return f"{d:%y}{MONTHS[d.month - 1]}"


def _iso(d: date, hour: int, minute: int = 0) -> str:
    return iso(datetime(d.year, d.month, d.day, hour, minute, tzinfo=UTC).timestamp(), "seconds")


def _long_date(d: date) -> str:
    return f"{d:%b} {d.day}, {d.year}"


class _Builder:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.markets: list[MarketSpec] = []
        self.events: list[EventSpec] = []
        self.params: dict[str, SimParams] = {}

    def event(self, ticker: str, title: str, close: str, category: str, tickers: list[str]) -> None:
        self.events.append(
            EventSpec(
                venue="kalshi",
                slug=ticker,
                title=title,
                markets=tuple(tickers),
                close_time=close,
                multi_outcome=len(tickers) > 1,
                category=category,
            )
        )

    def market(
        self,
        ticker: str,
        event: str,
        title: str,
        outcome: str,
        close: str,
        fair: float,
        *,
        active: bool = True,
        liquid_boost: float = 1.0,
    ) -> str:
        rng = self.rng
        edge = min(fair, 1 - fair)
        if edge >= 0.15:
            params = prediction_params(
                fair,
                band=0.9,
                vol=0.06,
                rate=rng.uniform(6.0, 9.0),
                size=rng.uniform(120, 400),
                levels=12,
            )
            volume = rng.lognormvariate(math.log(600_000), 0.5)
        elif edge >= 0.02:
            params = prediction_params(
                fair,
                band=0.6,
                vol=0.05,
                rate=rng.uniform(2.0, 4.0),
                size=rng.uniform(150, 500),
                levels=9,
            )
            volume = rng.lognormvariate(math.log(120_000), 0.6)
        else:
            params = prediction_params(
                fair,
                band=0.4,
                vol=0.04,
                rate=rng.uniform(0.4, 1.2),
                size=rng.uniform(300, 900),
                levels=6,
                spread=(2, 4),
                one_sided_below=0.015,
                floor=0.003,
            )
            volume = rng.lognormvariate(math.log(20_000), 0.7)
        volume *= liquid_boost
        extra: dict[str, Any] = {
            "ticker": ticker,
            "event_ticker": event,
            "market_type": "binary",
            "status": "active" if active else "closed",
            "price_level_structure": "linear_cent",
            "price_ranges": [{"start": "0.01", "end": "0.99", "step": "0.01"}],
            "yes_sub_title": outcome,
        }
        spec = MarketSpec(
            venue="kalshi",
            slug=ticker,
            title=title,
            instrument_type="prediction",
            book_symbol=f"{ticker}-YES",
            event_slug=event,
            outcome_name=outcome,
            yes_token_id=f"{ticker}-YES",
            no_token_id=f"{ticker}-NO",
            aliases=(ticker,),
            active=active,
            close_time=close,
            tick=100,
            min_notional=0.0,
            min_order_size=1.0,
            volume=float(round(volume)),
            extra=extra,
        )
        self.markets.append(spec)
        if active:
            self.params[spec.book_symbol] = params
        return ticker


def build_kalshi(start_ts: float, seed: int) -> tuple[Catalogue, dict[str, SimParams]]:
    rng = seeded_rng(seed, "kalshi", "catalogue")
    d0 = datetime.fromtimestamp(start_ts, tz=UTC).date()
    b = _Builder(rng)

    def crypto(series: str, name: str, spot: float, step: int, n: int, sigma: float) -> None:
        d = d0 + timedelta(days=5)
        ev = f"{series}-{day_code(d)}"
        close = _iso(d, 22)
        centre = round(spot / step) * step
        tickers = []
        for i in range(-(n // 2), n // 2 + 1):
            k = centre + i * step
            z = math.log(k / spot) / sigma
            fair = 1 - norm_cdf(z)
            tickers.append(
                b.market(
                    f"{ev}-T{k}",
                    ev,
                    f"{name} above ${k:,} on {_long_date(d)} at 5pm EST?",
                    f"${k:,} or above",
                    close,
                    fair,
                    liquid_boost=2.0,
                )
            )
        b.event(ev, f"{name} price on {_long_date(d)} at 5pm EST", close, "Crypto", tickers)

    crypto("KXBTCD", "Bitcoin", 95_000 * rng.uniform(0.97, 1.03), 1000, 19, 0.03)
    crypto("KXETHD", "Ethereum", 3_400 * rng.uniform(0.97, 1.03), 50, 11, 0.04)

    # Fed: the next FOMC month after d0.
    y, mth = d0.year, d0.month
    while True:
        if mth in FOMC_MONTHS and date(y, mth, 10) > d0:
            break
        mth += 1
        if mth > 12:
            y, mth = y + 1, 1
    meeting = date(y, mth, 9)
    ev = f"KXFED-{month_code(meeting)}"
    close = _iso(meeting, 18)
    tickers = []
    fairs = (0.995, 0.97, 0.88, 0.38, 0.045, 0.006)
    for i, rate in enumerate(("3.00", "3.25", "3.50", "3.75", "4.00", "4.25")):
        tickers.append(
            b.market(
                f"{ev}-T{rate}",
                ev,
                f"Will the upper bound of the federal funds rate be above {rate}% following "
                f"the Fed's {meeting:%b} {meeting.year} meeting?",
                f"Above {rate}%",
                close,
                min(0.997, max(0.003, fairs[i] + rng.uniform(-0.01, 0.01))),
                liquid_boost=1.5,
            )
        )
    b.event(ev, f"Fed rate after the {meeting:%B} {meeting.year} meeting", close, "Economics", tickers)

    # NYC high temperature tomorrow.
    d = d0 + timedelta(days=1)
    ev = f"KXHIGHNY-{day_code(d)}"
    close = _iso(d + timedelta(days=1), 4, 59)
    base = 50 + rng.randint(-3, 3)
    buckets = [
        (f"T{base - 6}", f"{base - 6}° or below"),
        (f"B{base - 4.5}", f"{base - 5}° to {base - 4}°"),
        (f"B{base - 2.5}", f"{base - 3}° to {base - 2}°"),
        (f"B{base - 0.5}", f"{base - 1}° to {base}°"),
        (f"B{base + 1.5}", f"{base + 1}° to {base + 2}°"),
        (f"T{base + 2}", f"{base + 3}° or above"),
    ]
    weights = [0.05, 0.17, 0.33, 0.27, 0.13, 0.05]
    tickers = [
        b.market(
            f"{ev}-{code}",
            ev,
            f"Will the high temp in NYC be {label} on {_long_date(d)}?",
            label,
            close,
            w,
        )
        for (code, label), w in zip(buckets, weights, strict=True)
    ]
    b.event(ev, f"Highest temperature in NYC on {_long_date(d)}", close, "Climate", tickers)

    # Two NBA games.
    d = d0 + timedelta(days=2)
    teams = list(NBA_TEAMS)
    rng.shuffle(teams)
    for g in range(2):
        (away, away_name), (home, home_name) = teams[2 * g], teams[2 * g + 1]
        ev = f"KXNBAGAME-{day_code(d)}{away}{home}"
        close = _iso(d + timedelta(days=1), 3 + g)
        p_away = rng.uniform(0.3, 0.7)
        title = f"{away_name} at {home_name} Winner?"
        tickers = [
            b.market(f"{ev}-{away}", ev, title, away_name, close, p_away),
            b.market(f"{ev}-{home}", ev, title, home_name, close, 1 - p_away),
        ]
        b.event(ev, f"{away_name} at {home_name}", close, "Sports", tickers)

    # CPI year over year, released mid next month.
    ref = d0.replace(day=1)
    release = (ref + timedelta(days=40)).replace(day=11)
    ev = f"KXCPIYOY-{month_code(ref)}"
    close = _iso(release, 12, 30)
    tickers = []
    for level, fair in (("2.4", 0.96), ("2.6", 0.8), ("2.8", 0.45), ("3.0", 0.14), ("3.2", 0.025)):
        tickers.append(
            b.market(
                f"{ev}-T{level}",
                ev,
                f"Will CPI rise more than {level}% year-over-year in {ref:%B} {ref.year}?",
                f"Above {level}%",
                close,
                fair,
            )
        )
    b.event(ev, f"CPI year-over-year in {ref:%B} {ref.year}", close, "Economics", tickers)

    # Yesterday's Bitcoin event: closed, books empty.
    d = d0 - timedelta(days=1)
    ev = f"KXBTCD-{day_code(d)}"
    close = _iso(d, 22)
    tickers = []
    for k in range(93_000, 98_000, 1000):
        tickers.append(
            b.market(
                f"{ev}-T{k}",
                ev,
                f"Bitcoin above ${k:,} on {_long_date(d)} at 5pm EST?",
                f"${k:,} or above",
                close,
                0.5,
                active=False,
                liquid_boost=0.5,
            )
        )
    b.event(ev, f"Bitcoin price on {_long_date(d)} at 5pm EST", close, "Crypto", tickers)

    return Catalogue(tuple(b.markets), tuple(b.events)), b.params


class SimKalshi(SimVenue):
    """Kalshi-shaped simulator; see the module docstring."""

    def __init__(self, clock: Clock, config: SimConfig | None = None) -> None:
        config = config or SimConfig()
        catalogue, params = build_kalshi(clock.now(), config.seed)
        super().__init__("kalshi", catalogue, params, clock=clock, config=config)
