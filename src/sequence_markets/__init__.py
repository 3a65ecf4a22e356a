"""sequence_markets — the Sequence SDK. Standard library only, Python >= 3.9.

::

    from sequence_markets import Sequence, SequenceError

    seq = Sequence()  # SEQUENCE_API_KEY / SEQUENCE_API_URL from the environment
    q = seq.quote("BTC-USD", depth=3)
    for msg in seq.stream([f"prices:{q['symbol']}"], duration_s=10, max_msgs=5):
        print(msg["channel"], msg["data"]["mid"])

See docs/sdk.md for the reference; the exception tree is drawn in
``sequence_markets._exceptions``.
"""

from ._client import Sequence
from ._clock import Clock
from ._exceptions import (
    AuthenticationError,
    NotFoundError,
    RateLimitError,
    SequenceConnectionError,
    SequenceError,
    SequenceTimeoutError,
    ServerError,
    StreamClosed,
    StreamError,
    ValidationError,
)
from ._graph import cross_price
from ._models import Request, Response
from ._retry import RetryPolicy
from ._stream import Stream
from ._transports import BaseTransport, HTTPTransport, MockTransport
from ._version import __version__

__all__ = [
    "AuthenticationError",
    "BaseTransport",
    "Clock",
    "HTTPTransport",
    "MockTransport",
    "NotFoundError",
    "RateLimitError",
    "Request",
    "Response",
    "RetryPolicy",
    "Sequence",
    "SequenceConnectionError",
    "SequenceError",
    "SequenceTimeoutError",
    "ServerError",
    "Stream",
    "StreamClosed",
    "StreamError",
    "ValidationError",
    "__version__",
    "cross_price",
]

# Show public objects as sequence_markets.X, not sequence_markets._module.X.
for _name in __all__:
    _obj = globals()[_name]
    if hasattr(_obj, "__module__"):
        _obj.__module__ = "sequence_markets"
del _name, _obj
