"""Errors raised by the market service.

One root, so callers can catch everything this component raises::

    MarketError                  every error from sequence.market
    ├── BadRequest               400  bad input; ``field`` names the culprit
    │   └── BadCursor            400  cursor is malformed, tampered with or from another query
    ├── NotFound                 404  something named does not exist
    │   └── UnknownSymbol        404  no book for this symbol
    └── Unavailable              503  a live venue has not sent this book (yet); retry

Each carries the HTTP ``status`` and ``code`` it answers; the API's one error
envelope (:mod:`sequence.api.errors`) sends them. A stream channel that cannot
be subscribed is a :class:`sequence.stream.ChannelError`, not one of these.
"""

from __future__ import annotations

from typing import Any

from sequence.echo import shown


class MarketError(Exception):
    """Root of every error raised by :mod:`sequence.market`."""

    status = 500
    code = "market_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details


class BadRequest(MarketError):
    """The caller sent something invalid; ``details["field"]`` names it."""

    status = 400
    code = "bad_request"

    def __init__(self, field: str, message: str, **details: Any) -> None:
        super().__init__(message, field=field, **details)
        self.field = field


class BadCursor(BadRequest):
    """A cursor that we did not issue, or issued for a different query."""

    code = "bad_cursor"

    def __init__(self, message: str = "invalid cursor") -> None:
        super().__init__("cursor", message)


class NotFound(MarketError):
    status = 404
    code = "not_found"


class UnknownSymbol(NotFound):
    def __init__(self, symbol: str) -> None:
        symbol = str(symbol)[:256]
        super().__init__(f"unknown symbol: {shown(symbol)}", symbol=symbol)
        self.symbol = symbol



class Unavailable(MarketError):
    """A live book the venue has not delivered in time (connecting, reconnecting, throttled)."""

    status = 503
    code = "market_unavailable"
