"""The simulation engine shared by the simulated venues.

Each market has a latent fair price that drifts inside ``[lo, hi]`` (a random
walk in logit space for binary markets, in log space for spot, reflected at
the bounds). Market makers quote a ladder of ``levels`` prices per side around
it with a spread of a few ticks. A market wakes up at Poisson times
(``rate`` per second, scaled by ``SimConfig.rate_hz / 8``) and does one of:

* **move**     — the fair price moves, makers requote (the top usually shifts);
* **requote**  — makers redraw the spread and refill holes in the ladder;
* **trade**    — a taker hits the best level of one side (a ``Trade`` print,
  the level shrinks or vanishes);
* **churn**    — one resting level is cancelled or resized.

Sometimes a market goes quiet for a few seconds (no events at all). Markets
with ``tick_rule="polymarket"`` switch to a 0.001 tick when the price leaves
[0.04, 0.96] and back to 0.01 once it is inside [0.05, 0.95], like Polymarket.
Far-from-the-money binaries are one-sided: nobody bids for a lottery ticket,
and nobody offers a near-certainty.

Determinism: one RNG per venue seeded from ``(seed, venue)``; wake-ups are
kept in a heap keyed by ``(time_ms, market_index)``, so the event stream is a
pure function of the seed and the start time, however ``advance`` is chunked
(as long as no call lags more than ``max_lag_s``, which skips ahead rather than
replaying a long stall).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from ..book import Book, Side
from ..catalogue import Catalogue, MarketSpec
from ..clock import Clock, now_ms, seeded_rng
from ..events import BookEvent, LevelUpdate, TickSizeChange, Trade
from .base import VenueAdapter

COARSE_TICK = 100  # 0.01 at PREDICTION_PRICE_SCALE
FINE_TICK = 10  # 0.001


BASE_RATE_HZ = 8.0


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Knobs shared by every simulated venue."""

    seed: int = 0
    #: Wake-ups per second of the most liquid markets; every market's rate scales with it
    #: (the default 8 moves each liquid top of book about three times a second).
    rate_hz: float = BASE_RATE_HZ
    #: Mean seconds between a market's quiet periods; 0 disables them.
    quiet_every_s: float = 90.0
    #: A quiet period lasts uniformly between these many seconds.
    quiet_s: tuple[float, float] = (1.0, 4.0)
    #: Allow Polymarket-style tick-size changes.
    tick_changes: bool = True
    #: If ``advance`` falls further behind than this, skip the gap instead of replaying it.
    max_lag_s: float | None = 10.0

    def __post_init__(self) -> None:
        if self.rate_hz <= 0:
            raise ValueError("rate_hz must be positive")
        if self.quiet_every_s < 0 or self.quiet_s[0] < 0 or self.quiet_s[1] < self.quiet_s[0]:
            raise ValueError("bad quiet period settings")

    @property
    def activity(self) -> float:
        """Factor applied to every market's base rate."""
        return self.rate_hz / BASE_RATE_HZ


@dataclass(frozen=True, slots=True)
class SimParams:
    """How one market behaves. Prices are in the book's price units."""

    fair: float
    lo: float
    hi: float
    #: Standard deviation of one move: logit units (prediction) or log return (spot).
    vol: float
    #: Wake-ups per second.
    rate: float
    kind: Literal["prediction", "spot"] = "prediction"
    levels: int = 10
    #: Spread in ticks, drawn uniformly at each requote.
    spread: tuple[int, int] = (1, 3)
    #: Ticks between ladder levels away from the top.
    ladder_step: int = 1
    #: Mean level size in display units (contracts, shares, coins).
    size: float = 100.0
    #: Sizes are whole display units (contracts/shares) rather than arbitrary size units.
    whole: bool = True
    quote_bids: bool = True
    quote_asks: bool = True
    #: Chance that a hole in the ladder is refilled at a requote.
    fill: float = 0.85
    tick_rule: Literal["fixed", "polymarket"] = "fixed"


class _Market:
    __slots__ = ("book", "max_p", "min_p", "params", "rate", "spec", "x", "xhi", "xlo")

    def __init__(self, spec: MarketSpec, params: SimParams, rate: float) -> None:
        self.spec = spec
        self.params = params
        self.rate = rate
        self.book = Book(
            spec.book_symbol, tick=spec.tick, price_scale=spec.price_scale, size_scale=spec.size_scale
        )
        scale = spec.price_scale
        if params.kind == "prediction":
            self.x = _logit(params.fair / scale)
            self.xlo = _logit(params.lo / scale)
            self.xhi = _logit(params.hi / scale)
        else:
            self.x = math.log(params.fair)
            self.xlo = math.log(params.lo)
            self.xhi = math.log(params.hi)
        self.min_p = 0
        self.max_p = 0
        self.bounds()

    def bounds(self) -> None:
        tick = self.book.tick
        self.min_p = tick
        self.max_p = self.spec.price_scale - tick if self.params.kind == "prediction" else 1 << 62

    @property
    def fair(self) -> float:
        if self.params.kind == "prediction":
            return self.spec.price_scale / (1.0 + math.exp(-self.x))
        return math.exp(self.x)


class SimVenue(VenueAdapter):
    """A simulated venue: a catalogue plus :class:`SimParams` per market."""

    def __init__(
        self,
        name: str,
        catalogue: Catalogue,
        params: Mapping[str, SimParams],
        *,
        clock: Clock,
        config: SimConfig | None = None,
    ) -> None:
        self.name = name
        self.clock = clock
        self.config = config or SimConfig()
        self._catalogue = catalogue
        self._rng = seeded_rng(self.config.seed, name, "books")
        self._start_ms = now_ms(clock)
        self._now_ms = self._start_ms
        self._markets: list[_Market] = []
        self._heap: list[tuple[int, int]] = []
        self._out: list[BookEvent] = []
        for spec in catalogue:
            if not spec.active or spec.book_symbol not in params:
                continue
            p = params[spec.book_symbol]
            m = _Market(spec, p, p.rate * self.config.activity)
            self._markets.append(m)
        for idx, m in enumerate(self._markets):
            self._requote(m, self._start_ms, initial=True)
            heapq.heappush(self._heap, (self._start_ms + self._delay(m), idx))
        self._out.clear()
        self._initial = {m.book.symbol: m.book.copy() for m in self._markets}
        # Books of inactive markets exist, empty.
        for spec in catalogue:
            if spec.book_symbol not in self._initial:
                self._initial[spec.book_symbol] = Book(
                    spec.book_symbol,
                    tick=spec.tick,
                    price_scale=spec.price_scale,
                    size_scale=spec.size_scale,
                )
        self._max_lag_ms = (
            None if self.config.max_lag_s is None else int(self.config.max_lag_s * 1000)
        )

    # -- VenueAdapter ---------------------------------------------------------
    def catalogue(self) -> Catalogue:
        return self._catalogue

    def initial_books(self) -> dict[str, Book]:
        return {sym: b.copy() for sym, b in self._initial.items()}

    def next_event_ms(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def advance(self, until_ms: int) -> Iterable[BookEvent]:
        heap = self._heap
        if self._max_lag_ms is not None and until_ms - self._now_ms > self._max_lag_ms:
            self._skip_to(until_ms - self._max_lag_ms)
        out = self._out = []
        markets = self._markets
        while heap and heap[0][0] <= until_ms:
            t, idx = heapq.heappop(heap)
            m = markets[idx]
            self._activate(m, t)
            heapq.heappush(heap, (t + self._delay(m), idx))
        if until_ms > self._now_ms:
            self._now_ms = until_ms
        return out

    # -- scheduling -----------------------------------------------------------
    def _delay(self, m: _Market) -> int:
        rng = self._rng
        delay = rng.expovariate(m.rate)
        cfg = self.config
        if cfg.quiet_every_s > 0 and rng.random() < 1.0 / (cfg.quiet_every_s * m.rate):
            delay += rng.uniform(*cfg.quiet_s)
        return max(1, round(delay * 1000))

    def _skip_to(self, cutoff_ms: int) -> None:
        """Reschedule every wake-up before ``cutoff_ms`` to after it (a stall is not replayed)."""
        heap = self._heap
        moved: list[int] = []
        while heap and heap[0][0] < cutoff_ms:
            moved.append(heapq.heappop(heap)[1])
        for idx in sorted(moved):
            heapq.heappush(heap, (cutoff_ms + self._delay(self._markets[idx]), idx))
        self._now_ms = cutoff_ms

    # -- dynamics -------------------------------------------------------------
    def _activate(self, m: _Market, t: int) -> None:
        r = self._rng.random()
        if r < 0.40:
            self._move(m, t)
            self._requote(m, t)
        elif r < 0.60:
            self._requote(m, t)
        elif r < 0.80:
            self._trade(m, t)
        else:
            self._churn(m, t)

    def _move(self, m: _Market, t: int) -> None:
        x = m.x + self._rng.gauss(0.0, m.params.vol)
        if x < m.xlo:
            x = min(m.xhi, 2 * m.xlo - x)
        elif x > m.xhi:
            x = max(m.xlo, 2 * m.xhi - x)
        m.x = x
        if m.params.tick_rule == "polymarket" and self.config.tick_changes:
            p = m.fair / m.spec.price_scale
            tick = m.book.tick
            if tick == COARSE_TICK and (p < 0.04 or p > 0.96):
                self._set_tick(m, t, FINE_TICK)
            elif tick == FINE_TICK and 0.05 <= p <= 0.95:
                self._set_tick(m, t, COARSE_TICK)

    def _set_tick(self, m: _Market, t: int, tick: int) -> None:
        book = m.book
        for side in (Side.BID, Side.ASK):
            for price, _ in list(book.iter_levels(side)):
                if price % tick:
                    self._emit(m, t, side, price, 0)
        book.set_tick(tick)
        m.bounds()
        self._out.append(TickSizeChange(t, book.symbol, tick))

    def _emit(self, m: _Market, t: int, side: Side, price: int, size: int) -> None:
        if m.book.set_level(side, price, size):
            self._out.append(LevelUpdate(t, m.book.symbol, side, price, size))

    def _size(self, m: _Market, level_index: int) -> int:
        p = m.params
        mean = p.size * (1.0 + 0.12 * level_index)
        x = self._rng.lognormvariate(math.log(mean) - 0.18, 0.6)
        scale = m.book.size_scale
        if p.whole:
            return max(1, round(x)) * scale
        return max(1, round(x * scale))

    def _requote(self, m: _Market, t: int, *, initial: bool = False) -> None:
        book = m.book
        p = m.params
        rng = self._rng
        tick = book.tick
        spread = rng.randint(*p.spread) * tick
        fair = m.fair
        bid_top = math.floor((fair - spread / 2) / tick) * tick
        ask_top = bid_top + spread
        step = max(1, p.ladder_step) * tick

        bids: list[int] = []
        if p.quote_bids and bid_top >= m.min_p:
            top = min(bid_top, m.max_p)
            bids.append(top)
            g = (top - 1) // step * step
            while len(bids) < p.levels and g >= m.min_p:
                bids.append(g)
                g -= step
        asks: list[int] = []
        if p.quote_asks and ask_top <= m.max_p:
            top = max(ask_top, m.min_p)
            asks.append(top)
            g = (top // step + 1) * step
            while len(asks) < p.levels and g <= m.max_p:
                asks.append(g)
                g += step

        # Pull everything off the ladder first (so nothing can cross), then fill.
        for side, target in ((Side.BID, bids), (Side.ASK, asks)):
            keep = set(target)
            for price, _ in list(book.iter_levels(side)):
                if price not in keep:
                    self._emit(m, t, side, price, 0)
        fill = 1.0 if initial else p.fill
        for side, target in ((Side.BID, bids), (Side.ASK, asks)):
            for i, price in enumerate(target):
                if book.size_at(side, price) == 0 and (i == 0 or rng.random() < fill):
                    self._emit(m, t, side, price, self._size(m, i))

    def _trade(self, m: _Market, t: int) -> None:
        rng = self._rng
        side = Side.BID if rng.random() < 0.5 else Side.ASK
        best = m.book.best(side)
        if best is None:
            self._requote(m, t)
            return
        price, size = best
        unit = m.book.size_scale if m.params.whole else 1
        take = max(unit, round(size * rng.uniform(0.05, 1.0) / unit) * unit)
        take = min(take, size)
        self._out.append(Trade(t, m.book.symbol, side, price, take))
        self._emit(m, t, side, price, size - take)

    def _churn(self, m: _Market, t: int) -> None:
        rng = self._rng
        side = Side.BID if rng.random() < 0.5 else Side.ASK
        book = m.book
        n = book.level_count(side)
        if n == 0:
            self._requote(m, t)
            return
        price, size = _nth(book.iter_levels(side), rng.randrange(n))
        if rng.random() < 0.35:
            self._emit(m, t, side, price, 0)
            return
        unit = book.size_scale if m.params.whole else 1
        new = max(unit, round(size * rng.uniform(0.5, 1.7) / unit) * unit)
        self._emit(m, t, side, price, new)


def _nth(it: Iterable[tuple[int, int]], n: int) -> tuple[int, int]:
    for i, lvl in enumerate(it):
        if i == n:
            return lvl
    raise IndexError(n)


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def norm_cdf(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def prediction_params(
    fair_p: float,
    *,
    band: float,
    vol: float,
    rate: float,
    size: float,
    levels: int = 10,
    spread: tuple[int, int] = (1, 3),
    tick_rule: Literal["fixed", "polymarket"] = "fixed",
    one_sided_below: float = 0.02,
    floor: float = 0.002,
) -> SimParams:
    """Params for a binary market whose YES price is ``fair_p`` (0..1), drifting ``±band`` in logit.

    Markets whose whole band lies below ``one_sided_below`` get no bids (and
    above ``1 − one_sided_below`` no asks): the far-from-the-money one-sided books.
    """
    fair_p = min(max(fair_p, floor), 1 - floor)
    x = _logit(fair_p)
    lo = max(floor, 1 / (1 + math.exp(-(x - band))))
    hi = min(1 - floor, 1 / (1 + math.exp(-(x + band))))
    scale = 10_000
    return SimParams(
        fair=fair_p * scale,
        lo=lo * scale,
        hi=hi * scale,
        vol=vol,
        rate=rate,
        levels=levels,
        spread=spread,
        size=size,
        quote_bids=hi >= one_sided_below,
        quote_asks=lo <= 1 - one_sided_below,
        tick_rule=tick_rule,
    )
