"""Retries: which requests, on what, how many times, and how long between."""

from __future__ import annotations

import pytest

from sequence_markets import (
    RateLimitError,
    Response,
    RetryPolicy,
    SequenceConnectionError,
    SequenceTimeoutError,
    ServerError,
    ValidationError,
)

from ._fakes import FakeClock, Recorder, client

OK = Response.from_json(200, {"ok": True, "markets": [], "graph_id": "g"})


def _status(status: int, headers: dict[str, str] | None = None) -> Response:
    return Response.from_json(status, {"error": {"code": "x", "message": "m"}}, headers=headers)


@pytest.mark.parametrize("status", [502, 503, 504])
def test_get_is_retried_on_gateway_statuses_then_succeeds(status: int) -> None:
    rec = Recorder(_status(status), _status(status), OK)
    clock = FakeClock()
    assert client(rec, clock=clock).markets() == OK.json()
    assert len(rec.requests) == 3
    assert len(clock.sleeps) == 2


def test_connection_errors_are_retried_for_gets() -> None:
    rec = Recorder(SequenceConnectionError("reset"), SequenceTimeoutError("slow"), OK)
    clock = FakeClock()
    client(rec, clock=clock).quote("X")
    assert len(rec.requests) == 3


def test_gives_up_after_max_retries_and_raises_the_last_error() -> None:
    rec = Recorder(_status(503))
    clock = FakeClock()
    with pytest.raises(ServerError) as info:
        client(rec, clock=clock, retry=RetryPolicy(max_retries=2)).quote("X")
    assert info.value.status == 503
    assert len(rec.requests) == 3
    assert len(clock.sleeps) == 2


def test_connection_error_after_max_retries_propagates() -> None:
    rec = Recorder(SequenceConnectionError("refused"))
    with pytest.raises(SequenceConnectionError):
        client(rec, retry=RetryPolicy(max_retries=1)).quote("X")
    assert len(rec.requests) == 2


def test_backoff_grows_exponentially_within_jitter_bounds() -> None:
    rec = Recorder(_status(502))
    clock = FakeClock()
    policy = RetryPolicy(max_retries=5, backoff_base=0.5, backoff_max=3.0, jitter=0.5)
    with pytest.raises(ServerError):
        client(rec, clock=clock, retry=policy).markets()
    ceilings = [0.5, 1.0, 2.0, 3.0, 3.0]
    assert len(clock.sleeps) == len(ceilings)
    for slept, ceiling in zip(clock.sleeps, ceilings, strict=True):
        assert ceiling * 0.5 <= slept <= ceiling


def test_backoff_without_jitter_is_exact() -> None:
    policy = RetryPolicy(backoff_base=0.25, backoff_max=8.0, jitter=0.0)
    assert [policy.backoff(n, 0.99) for n in range(7)] == [0.25, 0.5, 1, 2, 4, 8, 8]
    assert policy.backoff(10_000, 0.0) == 8.0  # no overflow


def test_429_honours_retry_after_seconds() -> None:
    rec = Recorder(_status(429, {"Retry-After": "2"}), OK)
    clock = FakeClock()
    client(rec, clock=clock).quote("X")
    assert clock.sleeps == [2.0]


def test_429_honours_retry_after_http_date() -> None:
    clock = FakeClock()
    import email.utils

    when = email.utils.formatdate(clock.time() + 5, usegmt=True)
    rec = Recorder(_status(429, {"Retry-After": when}), OK)
    client(rec, clock=clock).quote("X")
    assert len(clock.sleeps) == 1
    assert 4.0 <= clock.sleeps[0] <= 5.0  # HTTP-dates have whole-second resolution


def test_503_retry_after_is_honoured_too() -> None:
    rec = Recorder(_status(503, {"Retry-After": "1.5"}), OK)
    clock = FakeClock()
    client(rec, clock=clock).quote("X")
    assert clock.sleeps == [1.5]


def test_retry_after_beyond_the_cap_raises_at_once_with_the_hint() -> None:
    rec = Recorder(_status(429, {"Retry-After": "3600"}), OK)
    clock = FakeClock()
    with pytest.raises(RateLimitError) as info:
        client(rec, clock=clock, retry=RetryPolicy(max_retry_after=60)).quote("X")
    assert info.value.retry_after == 3600.0
    assert clock.sleeps == []
    assert len(rec.requests) == 1


def test_rate_limit_error_after_retries_carries_retry_after() -> None:
    rec = Recorder(_status(429, {"Retry-After": "1"}))
    with pytest.raises(RateLimitError) as info:
        client(rec, retry=RetryPolicy(max_retries=2)).quote("X")
    assert info.value.retry_after == 1.0
    assert len(rec.requests) == 3


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422, 500])
def test_other_statuses_are_not_retried(status: int) -> None:
    rec = Recorder(_status(status), OK)
    clock = FakeClock()
    with pytest.raises(Exception):  # noqa: B017 - the class is checked in test_errors
        client(rec, clock=clock).quote("X")
    assert len(rec.requests) == 1
    assert clock.sleeps == []


def test_graph_submit_is_retried_with_the_same_idempotency_key() -> None:
    rec = Recorder(SequenceConnectionError("reset"), _status(503), OK)
    seq = client(rec)
    seq.graph([seq.node("leg", "X", "buy", 1)])
    keys = {r.header("Idempotency-Key") for r in rec.requests}
    bodies = {r.content for r in rec.requests}
    assert len(rec.requests) == 3
    assert len(keys) == 1 and None not in keys
    assert len(bodies) == 1


def test_cancel_post_is_retried() -> None:
    rec = Recorder(_status(502), OK)
    client(rec).cancel("g")
    assert [r.method for r in rec.requests] == ["POST", "POST"]


def test_max_retries_zero_disables_retries() -> None:
    rec = Recorder(_status(503), OK)
    with pytest.raises(ServerError):
        client(rec, retry=RetryPolicy(max_retries=0)).quote("X")
    assert len(rec.requests) == 1


def test_validation_error_is_not_retried_even_for_graphs() -> None:
    rec = Recorder(_status(422), OK)
    seq = client(rec)
    with pytest.raises(ValidationError):
        seq.graph([seq.node("leg", "X", "buy", 1)])
    assert len(rec.requests) == 1


@pytest.mark.parametrize(
    "kwargs",
    [{"max_retries": -1}, {"backoff_base": -1.0}, {"jitter": 1.5}, {"max_retry_after": -1.0}],
)
def test_retry_policy_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_retry_policy_repr_names_every_setting() -> None:
    text = repr(RetryPolicy())
    for name in ("max_retries", "backoff_base", "backoff_max", "jitter", "max_retry_after"):
        assert name in text


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0", 0.0), (" 7 ", 7.0), ("-3", 0.0), ("soon", None), ("nan", None)],
)
def test_parse_retry_after(value: str, expected: float | None) -> None:
    from sequence_markets._retry import parse_retry_after

    assert parse_retry_after({"retry-after": value}, now=0.0) == expected
    assert parse_retry_after({}, now=0.0) is None


def test_parse_retry_after_dates_in_the_past_and_without_zone() -> None:
    from sequence_markets._retry import parse_retry_after

    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=2e9) == 0.0
    value = parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 -0000"}, now=1445412470.0)
    assert value == 10.0
