"""wait_for_fills() and tick_size(), on a fake clock."""

from __future__ import annotations

import pytest

from sequence_markets import Request, Response, SequenceError

from ._fakes import FakeClock, Recorder, client


def _page(*ids: str) -> Response:
    return Response.from_json(200, {"fills": [{"node_order_id": i, "qty_1e8": 10} for i in ids]})


def test_wait_for_fills_returns_as_soon_as_the_graph_has_fills() -> None:
    rec = Recorder(
        _page("graph:old:leg:1"),
        _page("graph:old:leg:1"),
        _page("graph:g7:leg:1", "graph:old:leg:1"),
    )
    clock = FakeClock()
    found = client(rec, clock=clock).wait_for_fills("g7", symbol="X")
    assert found == [{"node_order_id": "graph:g7:leg:1", "qty_1e8": 10}]
    assert len(rec.requests) == 3
    assert rec.last.params == {"symbol": "X", "graph_id": "g7", "limit": "100"}
    assert all(0 < s <= 0.25 for s in clock.sleeps)


def test_wait_for_fills_gives_up_with_an_empty_list_after_the_timeout() -> None:
    rec = Recorder(_page("graph:other:leg:1"))
    clock = FakeClock()
    start = clock.now
    assert client(rec, clock=clock).wait_for_fills("g7", timeout=2.0, poll_interval=0.25) == []
    assert clock.now - start == 2.0
    assert len(rec.requests) == 9  # polls at t=0, 0.25, ..., 2.0


def test_wait_for_fills_timeout_zero_polls_once() -> None:
    rec = Recorder(_page())
    assert client(rec, clock=FakeClock()).wait_for_fills("g", timeout=0) == []
    assert len(rec.requests) == 1


def test_wait_for_fills_respects_poll_interval() -> None:
    rec = Recorder(_page())
    clock = FakeClock()
    client(rec, clock=clock).wait_for_fills("g", timeout=1.0, poll_interval=0.5)
    assert clock.sleeps == [0.5, 0.5]


def _quote(tick: object) -> Response:
    return Response.from_json(200, {"symbol": "X", "tick_size": tick, "nbbo": {}})


def test_tick_size_comes_from_the_quote() -> None:
    rec = Recorder(_quote(0.001))
    assert client(rec).tick_size("0xabc") == 0.001
    assert rec.last.params == {"symbol": "0xabc", "depth": "1"}


@pytest.mark.parametrize("tick", [None, 0, -0.01, "0.01", True])
def test_tick_size_without_a_usable_value_raises(tick: object) -> None:
    with pytest.raises(SequenceError, match="tick_size"):
        client(Recorder(_quote(tick))).tick_size("X")


def test_tick_size_and_cross_price_compose() -> None:
    def handler(request: Request) -> Response:
        return _quote(0.01)

    seq = client(handler)
    assert seq.cross_price("buy", 0.57, seq.tick_size("X")) == 0.58
