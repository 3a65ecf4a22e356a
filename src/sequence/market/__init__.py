"""Market data: venues (simulated, replayed), order books, catalogues, quotes and listings.

No HTTP here: the routes are :mod:`sequence.api.routes.market`, and the
service publishes ``prices``/``book`` on a :class:`sequence.stream.Hub`. The
trading model that reads these books is :mod:`sequence.trading`.
"""

from .book import Book, BookView, Level, MirrorBook, Side
from .catalogue import Catalogue, EventSpec, MarketSpec
from .clock import Clock, ManualClock, RealClock, seeded_rng
from .errors import (
    BadCursor,
    BadRequest,
    MarketError,
    NotFound,
    Unavailable,
    UnknownSymbol,
)
from .events import BookEvent, BookReset, LevelUpdate, MarketListed, TickSizeChange, Trade
from .recording import Recorder, RecordingError, RecordingReader
from .service import Instrument, MarketService
from .venues import ReplayVenue, SimConfig, VenueAdapter

__all__ = [
    "BadCursor",
    "BadRequest",
    "Book",
    "BookEvent",
    "BookReset",
    "BookView",
    "Catalogue",
    "Clock",
    "EventSpec",
    "Instrument",
    "Level",
    "LevelUpdate",
    "ManualClock",
    "MarketError",
    "MarketListed",
    "MarketService",
    "MarketSpec",
    "MirrorBook",
    "NotFound",
    "RealClock",
    "Recorder",
    "RecordingError",
    "RecordingReader",
    "ReplayVenue",
    "Side",
    "SimConfig",
    "TickSizeChange",
    "Trade",
    "Unavailable",
    "UnknownSymbol",
    "VenueAdapter",
    "seeded_rng",
]
