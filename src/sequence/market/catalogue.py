"""What a venue lists: events and the markets (one order book each) inside them.

A :class:`MarketSpec` is static metadata; everything that moves (books, tick,
volume, liquidity) lives in the service. ``book_symbol`` names the one book a
market owns: the YES token for a binary market (its NO token reads the same
book through :class:`~sequence.market.book.MirrorBook`), the product id for
spot. ``aliases`` are extra symbols that resolve to the YES book (Kalshi's bare
ticker).

Catalogues round-trip through plain JSON (:meth:`Catalogue.to_json`) so a
recording carries the catalogue it was made with.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

InstrumentType = Literal["prediction", "spot"]

#: Price units per 1.0 for prediction markets: 0.01, 0.001 and 0.0001 ticks are whole units.
PREDICTION_PRICE_SCALE = 10_000


@dataclass(frozen=True, slots=True)
class MarketSpec:
    venue: str
    slug: str
    title: str
    instrument_type: InstrumentType
    book_symbol: str
    event_slug: str | None = None
    outcome_name: str | None = None
    yes_token_id: str | None = None
    no_token_id: str | None = None
    symbol: str | None = None
    aliases: tuple[str, ...] = ()
    active: bool = True
    close_time: str | None = None
    tick: int = 100  # price units
    price_scale: int = PREDICTION_PRICE_SCALE
    size_scale: int = 100
    min_notional: float = 0.0
    min_order_size: float = 1.0
    is_placeholder_outcome: bool = False
    neg_risk: bool | None = None
    volume: float = 0.0  # traded volume when the simulation starts (live: as the venue lists it)
    #: What a live venue's catalogue says of the book (its listing carries them); the listing
    #: shows these until the book itself is live, then the book's own figures.
    listed_best_bid: float | None = None
    listed_best_ask: float | None = None
    listed_liquidity: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def symbols(self) -> tuple[str, ...]:
        """Every symbol that quotes this market's book."""
        own = [s for s in (self.yes_token_id, self.no_token_id, self.symbol) if s]
        return (*own, *self.aliases)


@dataclass(frozen=True, slots=True)
class EventSpec:
    venue: str
    slug: str
    title: str
    markets: tuple[str, ...]  # market slugs, display order
    close_time: str | None = None
    neg_risk: bool = False
    multi_outcome: bool = False
    category: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EventSpec:
        return cls(**{**data, "markets": tuple(data["markets"])})


@dataclass(frozen=True, slots=True)
class Catalogue:
    markets: tuple[MarketSpec, ...]
    events: tuple[EventSpec, ...] = ()

    def __iter__(self) -> Iterator[MarketSpec]:
        return iter(self.markets)

    def __len__(self) -> int:
        return len(self.markets)

    def merged(self, other: Catalogue) -> Catalogue:
        return Catalogue(self.markets + other.markets, self.events + other.events)

    def to_json(self) -> dict[str, Any]:
        return {
            "markets": [spec_json(m) for m in self.markets],
            "events": [e.to_json() for e in self.events],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Catalogue:
        markets = tuple(spec_from_json(m) for m in data["markets"])
        events = tuple(EventSpec.from_json(e) for e in data.get("events", ()))
        return cls(markets, events)


def spec_json(m: MarketSpec) -> dict[str, Any]:
    """A market spec as JSON (recordings, the live catalogue cache)."""
    d = asdict(m)
    d["aliases"] = list(m.aliases)
    d["extra"] = dict(m.extra)
    return d


def spec_from_json(d: Mapping[str, Any]) -> MarketSpec:
    return MarketSpec(**{**d, "aliases": tuple(d.get("aliases", ())), "extra": dict(d.get("extra", {}))})
