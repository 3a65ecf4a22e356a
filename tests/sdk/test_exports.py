"""The public surface is exactly __all__, sorted and locked."""

from __future__ import annotations

import types
from pathlib import Path

import sequence_markets

EXPECTED = [
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


def test_all_is_sorted_and_locked() -> None:
    assert sequence_markets.__all__ == sorted(sequence_markets.__all__)
    assert sequence_markets.__all__ == EXPECTED


def test_public_names_are_exactly_all() -> None:
    public = {
        name
        for name, value in vars(sequence_markets).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(sequence_markets.__all__) - {"__version__"}


def test_exported_objects_present_as_the_package() -> None:
    for name in sequence_markets.__all__:
        value = getattr(sequence_markets, name)
        if hasattr(value, "__module__") and not isinstance(value, str):
            assert value.__module__ == "sequence_markets", name


def test_version_equals_the_platform_version() -> None:
    import sequence

    assert sequence_markets.__version__ == sequence.__version__ == "0.4.0"


def test_package_is_typed() -> None:
    assert (Path(sequence_markets.__file__).parent / "py.typed").is_file()
