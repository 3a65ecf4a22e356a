"""A simulated Polymarket: binary and multi-outcome (negative-risk) events.

Catalogue (years follow the clock's date ``d0``):

* multi-outcome, ``neg_risk``: a World Cup winner (30 teams + 2 placeholder
  outcomes), a Super Bowl champion (24 + 2), a 2028 Democratic nominee
  (14 + 3), the next Fed decision (4 outcomes), the largest company at year end
  (8); outcome prices of an event sum to about 1;
* binary: five Yes/No questions, one of which hovers around 4¢ and so flips
  between 0.01 and 0.001 ticks;
* closed: the 2024 presidential election winner (``active=false``, empty books).

Every outcome is a Yes/No market with two token ids, ~77-digit decimal
strings derived from the market slug (stable across seeds and restarts); the
NO token's book is the mirror of the YES token's. Ticks are 0.01, or 0.001 for
prices outside [0.04, 0.96], and change as prices move (``tick_size_change``).
Minimum notional $1, minimum order size 5 shares. Placeholder outcomes
(``is_placeholder_outcome``) have tiny one-sided books.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from datetime import UTC, datetime
from typing import Any

from ..catalogue import Catalogue, EventSpec, MarketSpec
from ..clock import Clock, seeded_rng
from .sim import COARSE_TICK, FINE_TICK, SimConfig, SimParams, SimVenue, prediction_params

WORLD_CUP = (
    "Spain", "France", "England", "Brazil", "Argentina", "Germany", "Portugal",
    "Netherlands", "Italy", "Belgium", "Uruguay", "Croatia", "Colombia", "USA",
    "Morocco", "Mexico", "Japan", "Denmark", "Switzerland", "Senegal", "Norway",
    "Ecuador", "South Korea", "Austria", "Turkey", "Canada", "Serbia", "Poland",
    "Nigeria", "Australia",
)  # fmt: skip
NFL = (
    "Kansas City", "Philadelphia", "Baltimore", "Buffalo", "Detroit", "San Francisco",
    "Green Bay", "Cincinnati", "Houston", "Los Angeles Rams", "Minnesota", "Washington",
    "Pittsburgh", "Tampa Bay", "Denver", "Los Angeles Chargers", "Seattle", "Miami",
    "Dallas", "Chicago", "Atlanta", "Arizona", "Jacksonville", "New York Jets",
)  # fmt: skip
NOMINEES = (
    "Gavin Newsom", "Josh Shapiro", "Pete Buttigieg", "Alexandria Ocasio-Cortez",
    "Wes Moore", "Gretchen Whitmer", "Andy Beshear", "JB Pritzker", "Kamala Harris",
    "Ro Khanna", "Cory Booker", "Mark Kelly", "Jon Ossoff", "Raphael Warnock",
)  # fmt: skip
COMPANIES = (
    "NVIDIA", "Microsoft", "Apple", "Alphabet", "Amazon", "Broadcom", "Meta", "Saudi Aramco",
)  # fmt: skip


def token_id(slug: str, outcome: str) -> str:
    """A 77-digit decimal token id, a pure function of market slug and outcome."""
    n = int.from_bytes(hashlib.sha256(f"polymarket:{slug}:{outcome}".encode()).digest(), "big")
    n %= 10**77
    if n < 10**76:
        n += 10**76
    return str(n)


def condition_id(slug: str) -> str:
    return "0x" + hashlib.sha256(f"condition:{slug}".encode()).hexdigest()


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _zipf_weights(n: int, rng: random.Random, s: float = 1.1) -> list[float]:
    w = [1.0 / (i + 1) ** s * rng.uniform(0.75, 1.25) for i in range(n)]
    total = sum(w)
    return [x / total for x in w]


class _Builder:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.markets: list[MarketSpec] = []
        self.events: list[EventSpec] = []
        self.params: dict[str, SimParams] = {}

    def outcome(
        self,
        *,
        slug: str,
        question: str,
        event_slug: str,
        outcome: str,
        close: str,
        fair: float,
        neg_risk: bool,
        placeholder: bool = False,
        active: bool = True,
        volume_scale: float = 1.0,
    ) -> str:
        rng = self.rng
        if placeholder:
            fair = rng.uniform(0.001, 0.004)
            params = prediction_params(
                fair, band=0.3, vol=0.03, rate=rng.uniform(0.1, 0.3), size=rng.uniform(15, 40),
                levels=2, spread=(2, 5), tick_rule="polymarket", one_sided_below=0.01,
                floor=0.001,
            )  # fmt: skip
            volume = rng.uniform(0, 2_000)
        elif 0.05 <= fair <= 0.95:
            params = prediction_params(
                fair, band=0.7, vol=0.05, rate=rng.uniform(4.0, 8.0) if fair >= 0.08 else 2.5,
                size=rng.uniform(300, 1500), levels=10, spread=(1, 3), tick_rule="polymarket",
            )  # fmt: skip
            volume = rng.lognormvariate(math.log(8_000_000 * max(fair, 0.1)), 0.5)
        else:
            params = prediction_params(
                fair, band=0.5, vol=0.05, rate=rng.uniform(0.8, 2.0), size=rng.uniform(500, 3000),
                levels=8, spread=(1, 4), tick_rule="polymarket", one_sided_below=0.004,
                floor=0.001,
            )  # fmt: skip
            volume = rng.lognormvariate(math.log(250_000), 0.8)
        if not active:  # settled long ago: volume follows the final price
            volume = rng.uniform(0.8, 1.2) * 20_000_000 * max(fair, 0.01)
        p = params.fair / 10_000
        tick = FINE_TICK if (p < 0.04 or p > 0.96) else COARSE_TICK
        yes, no = token_id(slug, "Yes"), token_id(slug, "No")
        extra: dict[str, Any] = {
            "condition_id": condition_id(slug),
            "question": question,
            "accepting_orders": active,
            "enable_order_book": True,
        }
        spec = MarketSpec(
            venue="polymarket",
            slug=slug,
            title=question,
            instrument_type="prediction",
            book_symbol=yes,
            event_slug=event_slug,
            outcome_name=outcome,
            yes_token_id=yes,
            no_token_id=no,
            active=active,
            close_time=close,
            tick=tick,
            min_notional=1.0,
            min_order_size=5.0,
            is_placeholder_outcome=placeholder,
            neg_risk=neg_risk,
            volume=float(round(volume * volume_scale, 2)),
            extra=extra,
        )
        self.markets.append(spec)
        if active:
            self.params[yes] = params
        return slug

    def multi(
        self,
        *,
        slug: str,
        title: str,
        close: str,
        names: tuple[str, ...],
        question: str,
        placeholders: tuple[str, ...] = (),
        category: str,
        active: bool = True,
        weights: list[float] | None = None,
        volume_scale: float = 1.0,
    ) -> None:
        w = weights or _zipf_weights(len(names), self.rng)
        slugs = [
            self.outcome(
                slug=slugify(question.format(name)),
                question=question.format(name),
                event_slug=slug,
                outcome=name,
                close=close,
                fair=f,
                neg_risk=True,
                active=active,
                volume_scale=volume_scale,
            )
            for name, f in zip(names, w, strict=True)
        ]
        slugs += [
            self.outcome(
                slug=slugify(question.format(name)),
                question=question.format(name),
                event_slug=slug,
                outcome=name,
                close=close,
                fair=0.002,
                neg_risk=True,
                placeholder=True,
                active=active,
            )
            for name in placeholders
        ]
        self.events.append(
            EventSpec(
                venue="polymarket",
                slug=slug,
                title=title,
                markets=tuple(slugs),
                close_time=close,
                neg_risk=True,
                multi_outcome=True,
                category=category,
            )
        )

    def binary(self, *, slug: str, question: str, close: str, fair: float, category: str) -> None:
        self.outcome(
            slug=slug,
            question=question,
            event_slug=slug,
            outcome="Yes",
            close=close,
            fair=fair,
            neg_risk=False,
        )
        self.events.append(
            EventSpec(
                venue="polymarket",
                slug=slug,
                title=question,
                markets=(slug,),
                close_time=close,
                neg_risk=False,
                multi_outcome=False,
                category=category,
            )
        )


def build_polymarket(start_ts: float, seed: int) -> tuple[Catalogue, dict[str, SimParams]]:
    rng = seeded_rng(seed, "polymarket", "catalogue")
    d0 = datetime.fromtimestamp(start_ts, tz=UTC).date()
    y = d0.year
    b = _Builder(rng)
    sb_year = y + 1 if d0.month >= 3 else y

    b.multi(
        slug="fifa-world-cup-2030-winner", title="2030 FIFA World Cup Winner",
        close="2030-07-21T23:59:00Z", names=WORLD_CUP,
        question="Will {} win the 2030 FIFA World Cup?", placeholders=("Team AF", "Team AG"),
        category="Sports",
    )  # fmt: skip
    b.multi(
        slug=f"super-bowl-champion-{sb_year}", title=f"Super Bowl Champion {sb_year}",
        close=f"{sb_year}-02-14T23:59:00Z", names=NFL,
        question=f"Will {{}} win Super Bowl {sb_year}?", placeholders=("Team Y", "Team Z"),
        category="Sports",
    )  # fmt: skip
    b.multi(
        slug="democratic-presidential-nominee-2028",
        title="Democratic Presidential Nominee 2028", close="2028-08-31T23:59:00Z",
        names=NOMINEES, question="Will {} win the 2028 Democratic presidential nomination?",
        placeholders=("Person D", "Person E", "Person F"), category="Politics",
    )  # fmt: skip
    fed_month = datetime(y + (d0.month == 12), d0.month % 12 + 1, 1, tzinfo=UTC)
    fed_name = f"{fed_month:%B}".lower()
    b.multi(
        slug=f"fed-decision-in-{fed_name}-{fed_month.year}",
        title=f"Fed decision in {fed_month:%B}?",
        close=f"{fed_month.year}-{fed_month.month:02d}-18T18:00:00Z",
        names=("50+ bps decrease", "25 bps decrease", "No change", "25+ bps increase"),
        question=f"Fed {{}} after {fed_month:%B} {fed_month.year} meeting?",
        category="Economics", weights=[0.04, 0.31, 0.63, 0.02],
    )  # fmt: skip
    b.multi(
        slug=f"largest-company-end-of-{y}", title=f"Largest company end of {y}?",
        close=f"{y}-12-31T23:59:00Z", names=COMPANIES,
        question=f"Will {{}} be the largest company in the world by market cap on December 31, {y}?",
        category="Finance",
    )  # fmt: skip
    b.binary(
        slug=f"will-bitcoin-reach-150000-by-december-31-{y}",
        question=f"Will Bitcoin reach $150,000 by December 31, {y}?",
        close=f"{y}-12-31T23:59:00Z", fair=0.042, category="Crypto",
    )  # fmt: skip
    b.binary(
        slug=f"us-recession-in-{y + 1}", question=f"US recession in {y + 1}?",
        close=f"{y + 2}-01-31T23:59:00Z", fair=rng.uniform(0.2, 0.35), category="Economics",
    )  # fmt: skip
    b.binary(
        slug=f"openai-announces-gpt-6-in-{y + 1}", question=f"OpenAI announces GPT-6 in {y + 1}?",
        close=f"{y + 1}-12-31T23:59:00Z", fair=rng.uniform(0.45, 0.65), category="Tech",
    )  # fmt: skip
    b.binary(
        slug=f"will-it-snow-in-nyc-on-christmas-day-{y}",
        question=f"Will it snow in NYC on Christmas Day {y}?",
        close=f"{y}-12-26T05:00:00Z", fair=rng.uniform(0.08, 0.16), category="Climate",
    )  # fmt: skip
    b.binary(
        slug=f"ethereum-above-5000-on-december-31-{y}",
        question=f"Will Ethereum be above $5,000 on December 31, {y}?",
        close=f"{y}-12-31T23:59:00Z", fair=rng.uniform(0.06, 0.12), category="Crypto",
    )  # fmt: skip
    b.multi(
        slug="presidential-election-winner-2024", title="Presidential Election Winner 2024",
        close="2024-11-05T23:59:00Z", names=("Donald Trump", "Kamala Harris", "Other"),
        question="Will {} win the 2024 US Presidential Election?", category="Politics",
        active=False, weights=[0.98, 0.015, 0.005], volume_scale=200.0,
    )  # fmt: skip
    return Catalogue(tuple(b.markets), tuple(b.events)), b.params


class SimPolymarket(SimVenue):
    """Polymarket-shaped simulator; see the module docstring."""

    def __init__(self, clock: Clock, config: SimConfig | None = None) -> None:
        config = config or SimConfig()
        catalogue, params = build_polymarket(clock.now(), config.seed)
        super().__init__("polymarket", catalogue, params, clock=clock, config=config)
