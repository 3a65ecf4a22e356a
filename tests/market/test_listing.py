"""``MarketService.markets``: the /v1/markets contract."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from sequence.market import BadCursor, BadRequest, MarketService

ROW_FIELDS = {
    "venue", "slug", "title", "event_slug", "outcome_name", "instrument_type", "yes_token_id",
    "no_token_id", "symbol", "active", "volume", "liquidity", "close_time", "tick_size",
    "min_notional", "is_placeholder_outcome",
}  # fmt: skip


def all_rows(service: MarketService, **params: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = service.markets(cursor=cursor, **params)
        rows.extend(page["markets"])
        cursor = page["next_cursor"]
        if cursor is None:
            return rows


def test_every_row_has_the_api_fields(service: MarketService) -> None:
    rows = all_rows(service, limit=500, expand="outcomes")
    assert {r["venue"] for r in rows} == {"kalshi", "polymarket", "coinbase"}
    for r in rows:
        assert r.keys() >= ROW_FIELDS
        assert r["instrument_type"] in ("prediction", "spot")
        if r["instrument_type"] == "prediction":
            assert r["yes_token_id"] and r["no_token_id"] and r["symbol"] is None
        else:
            assert r["symbol"] and r["yes_token_id"] is None and r["no_token_id"] is None


def test_polymarket_without_expand_groups_multi_outcome_events(service: MarketService) -> None:
    rows = all_rows(service, venue="polymarket")
    events = [r for r in rows if "outcomes" in r]
    assert events
    for ev in events:
        assert ev["yes_token_id"] is None and ev["no_token_id"] is None
        assert len(ev["outcomes"]) == ev["outcome_count"] >= 3
        assert all(o["yes_token_id"] and o["event_slug"] == ev["slug"] for o in ev["outcomes"])
        assert ev["volume"] == pytest.approx(sum(o["volume"] for o in ev["outcomes"]), abs=0.1)
    binaries = [r for r in rows if "outcomes" not in r]
    assert binaries and all(r["yes_token_id"] for r in binaries)
    expanded = all_rows(service, venue="polymarket", expand="outcomes")
    assert len(expanded) == len(binaries) + sum(len(e["outcomes"]) for e in events)
    assert all("outcomes" not in r and r["yes_token_id"] for r in expanded)
    assert any(r["is_placeholder_outcome"] for r in expanded)


@pytest.mark.parametrize("order", ["volume", "liquidity"])
def test_order_descending(service: MarketService, order: str) -> None:
    rows = all_rows(service, venue="kalshi", order=order, limit=7)
    values = [r[order] for r in rows]
    assert values == sorted(values, reverse=True)


def test_order_close_time_ascending(service: MarketService) -> None:
    rows = all_rows(service, order="close_time", expand="outcomes")
    times = [r["close_time"] for r in rows if r["close_time"] is not None]
    assert times == sorted(times)
    assert rows[-1]["close_time"] is None  # spot products have none; they sort last


def test_pagination_covers_everything_once(service: MarketService) -> None:
    whole = service.markets(limit=500, expand="outcomes")
    assert whole["next_cursor"] is None
    paged = all_rows(service, limit=13, expand="outcomes")
    assert [r["slug"] for r in paged] == [r["slug"] for r in whole["markets"]]
    assert len({(r["venue"], r["slug"]) for r in paged}) == len(paged)


def test_active_filter(service: MarketService) -> None:
    active = all_rows(service, active=True, expand="outcomes")
    inactive = all_rows(service, active=False, expand="outcomes")
    both = all_rows(service, expand="outcomes")
    assert active and inactive
    assert all(r["active"] for r in active) and not any(r["active"] for r in inactive)
    assert len(active) + len(inactive) == len(both)


def test_search(service: MarketService) -> None:
    rows = all_rows(service, q="bitcoin", expand="outcomes")
    assert rows and all("bitcoin" in (r["title"] + r["slug"]).lower() for r in rows)
    assert {r["venue"] for r in rows} >= {"kalshi", "polymarket", "coinbase"}
    spain = all_rows(service, venue="polymarket", q="Spain")
    assert [r["slug"] for r in spain] == ["fifa-world-cup-2030-winner"]
    assert all_rows(service, q="no such market anywhere") == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"venue": "nyse"}, "venue"),
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"order": "price"}, "order"),
        ({"expand": "everything"}, "expand"),
    ],
)
def test_bad_input_names_the_field(service: MarketService, params: dict[str, Any], field: str) -> None:
    with pytest.raises(BadRequest) as info:
        service.markets(**params)
    assert info.value.field == field == info.value.details["field"]
    assert info.value.status == 400


def test_limits_at_the_bounds_work(service: MarketService) -> None:
    assert len(service.markets(limit=1)["markets"]) == 1
    assert len(service.markets(limit=500)["markets"]) > 1


def test_cursor_tampering_is_rejected(service: MarketService) -> None:
    cursor = service.markets(limit=5)["next_cursor"]
    assert cursor
    raw = bytearray(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    raw[4] ^= 0x01  # change the offset
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    for bad in (forged, "garbage!", "", cursor[:-2], cursor + "AA", "a" * 200):
        if not bad:
            continue
        with pytest.raises(BadCursor) as info:
            service.markets(limit=5, cursor=bad)
        assert info.value.field == "cursor"


def test_cursor_from_another_query_is_rejected(service: MarketService) -> None:
    cursor = service.markets(venue="kalshi", limit=5)["next_cursor"]
    assert cursor
    service.markets(venue="kalshi", limit=9, cursor=cursor)  # limit may change
    with pytest.raises(BadCursor, match="different query"):
        service.markets(venue="polymarket", limit=5, cursor=cursor)


def test_coinbase_rows(service: MarketService) -> None:
    rows = service.markets(venue="coinbase")["markets"]
    assert {r["symbol"] for r in rows} == {"BTC-USD", "ETH-USD", "SOL-USD"}
    for r in rows:
        assert r["tick_size"] == 0.01 and r["min_notional"] == 1.0 and r["liquidity"] > 0
        assert r["base_increment"] == "0.00000001"
