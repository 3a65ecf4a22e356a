"""Error mapping: one class per status family, all under SequenceError."""

from __future__ import annotations

import json
import pickle

import pytest

import sequence_markets
from sequence_markets import (
    AuthenticationError,
    NotFoundError,
    RateLimitError,
    Response,
    RetryPolicy,
    SequenceConnectionError,
    SequenceError,
    SequenceTimeoutError,
    ServerError,
    StreamClosed,
    StreamError,
    ValidationError,
)

from ._fakes import Recorder, client


def _envelope(status: int, code: str = "bad", message: str = "nope", **details: object) -> Response:
    return Response(
        status,
        headers={"X-Request-ID": "req-42", "Content-Type": "application/json"},
        content=json.dumps(
            {"error": {"code": code, "message": message, "details": details}}
        ).encode(),
        reason="Reason",
    )


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, ValidationError),
        (401, AuthenticationError),
        (403, AuthenticationError),
        (404, NotFoundError),
        (409, SequenceError),
        (413, SequenceError),
        (422, ValidationError),
        (429, RateLimitError),
        (500, ServerError),
        (502, ServerError),
        (503, ServerError),
        (504, ServerError),
    ],
)
def test_status_maps_to_error_class(status: int, cls: type[SequenceError]) -> None:
    seq = client(Recorder(_envelope(status, field="symbol")), retry=RetryPolicy(max_retries=0))
    with pytest.raises(cls) as info:
        seq.quote("X")
    error = info.value
    assert type(error) is cls
    assert isinstance(error, SequenceError)
    assert error.status == status
    assert error.code == "bad"
    assert error.message == "nope"
    assert error.request_id == "req-42"
    assert error.details == {"field": "symbol"}
    assert str(error) == f"{status} bad: nope (request_id=req-42)"


def test_framework_detail_bodies_still_give_a_message() -> None:
    seq = client(Recorder(Response.from_json(422, {"detail": [{"loc": ["query", "symbol"]}]})))
    with pytest.raises(ValidationError) as info:
        seq.quote("X")
    assert "symbol" in info.value.message
    assert info.value.details == {"detail": [{"loc": ["query", "symbol"]}]}
    seq = client(Recorder(Response.from_json(404, {"detail": "Not Found"})))
    with pytest.raises(NotFoundError, match="Not Found"):
        seq.quote("X")


def test_non_json_error_body_uses_its_text_or_the_reason() -> None:
    seq = client(
        Recorder(Response(502, content=b"<h1>Bad Gateway</h1>")), retry=RetryPolicy(max_retries=0)
    )
    with pytest.raises(ServerError, match="Bad Gateway"):
        seq.quote("X")
    seq = client(Recorder(Response(500, reason="Internal Server Error")))
    with pytest.raises(ServerError, match="Internal Server Error"):
        seq.quote("X")
    seq = client(Recorder(Response(418)))
    with pytest.raises(SequenceError, match="HTTP 418"):
        seq.quote("X")


def test_the_hierarchy_is_as_documented() -> None:
    for cls in (
        AuthenticationError,
        NotFoundError,
        ValidationError,
        RateLimitError,
        ServerError,
        SequenceConnectionError,
        StreamError,
    ):
        assert cls.__bases__ == (SequenceError,)
    assert SequenceTimeoutError.__bases__ == (SequenceConnectionError,)
    assert StreamClosed.__bases__ == (StreamError,)
    assert not issubclass(SequenceConnectionError, ConnectionError)  # no builtin confusion
    doc = sequence_markets._exceptions.__doc__ or ""
    for documented in (
        SequenceError,
        AuthenticationError,
        NotFoundError,
        ValidationError,
        RateLimitError,
        ServerError,
        SequenceConnectionError,
        SequenceTimeoutError,
        StreamError,
        StreamClosed,
    ):
        assert documented.__name__ in doc


def test_errors_pickle_round_trip_with_their_attributes() -> None:
    errors = [
        SequenceError("m", status=409, code="conflict", request_id="r", details={"a": 1}),
        RateLimitError("slow down", status=429, retry_after=3.0),
        StreamError("bad", close_code=1002),
        StreamClosed(1001, "going away"),
    ]
    for error in errors:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error)
        assert copy.__dict__ == error.__dict__
        assert str(copy) == str(error)


def test_stream_closed_describes_its_code() -> None:
    assert str(StreamClosed(1000, "bye")) == "stream closed (code 1000: bye)"
    assert str(StreamClosed()) == "stream closed"
