"""Market data: simulated venues, order books, quotes, listings and stream channels.

The HTTP/WebSocket routes live in :mod:`sequence.market.routes` and the
coordinator hook in :mod:`sequence.market.wiring`; neither is imported here,
so the service and books can be used without the web stack.
"""

from .book import Book, BookView, Level, MirrorBook, Side
from .catalogue import Catalogue, EventSpec, MarketSpec
from .clock import Clock, ManualClock, RealClock, seeded_rng
from .errors import (
    BadCursor,
    BadRequest,
    ChannelError,
    MarketError,
    NotFound,
    Unauthorized,
    UnknownSymbol,
)
from .events import BookEvent, LevelUpdate, TickSizeChange, Trade
from .hub import ChannelKind, Hub, Message, SubscribeResult, Subscription
from .recording import Recorder, RecordingError, RecordingReader
from .service import Instrument, MarketService
from .venues import ReplayVenue, SimConfig, VenueAdapter

__all__ = [
    "BadCursor",
    "BadRequest",
    "Book",
    "BookEvent",
    "BookView",
    "Catalogue",
    "ChannelError",
    "ChannelKind",
    "Clock",
    "EventSpec",
    "Hub",
    "Instrument",
    "Level",
    "LevelUpdate",
    "ManualClock",
    "MarketError",
    "MarketService",
    "MarketSpec",
    "Message",
    "MirrorBook",
    "NotFound",
    "RealClock",
    "Recorder",
    "RecordingError",
    "RecordingReader",
    "ReplayVenue",
    "Side",
    "SimConfig",
    "SubscribeResult",
    "Subscription",
    "TickSizeChange",
    "Trade",
    "Unauthorized",
    "UnknownSymbol",
    "VenueAdapter",
    "seeded_rng",
]
