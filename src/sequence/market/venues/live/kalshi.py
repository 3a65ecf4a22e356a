"""Kalshi live market data (trade-api v2): REST discovery and books, a signed WebSocket for deltas.

Wire formats (see ``docs/VENUES.md``, Kalshi section; the AsyncAPI spec at
``docs.kalshi.com/asyncapi.yaml``):

Discovery
    ``GET {api}/markets?limit=<=1000&cursor=&status=open&mve_filter=exclude``,
    paged by ``cursor`` (an empty cursor ends the listing). ``status`` is a
    *filter* status (``unopened|open|paused|closed|settled``); rows come back
    with a *market* status (``initialized|active|inactive|closed|determined|
    finalized``): we ask for ``open`` and read ``active`` as tradeable.
    ``mve_filter=exclude`` keeps out the auto-generated combo markets
    (``KXMVE…``) that otherwise flood the listing; a combo row that slips
    through anyway is dropped. Event titles come from ``GET {api}/events``
    (``status=open``, ``limit`` ≤ 200, paged by ``cursor``) when many events
    are needed, or ``GET {api}/events/{event_ticker}`` one by one when a few
    are (and for any the listing missed).

Tick
    The book's tick is the finest ``step`` of the market's ``price_ranges``
    (``[{start, end, step}]``, dollar strings); without ranges, from the
    ``price_level_structure`` name (``linear_cent`` 0.01, ``deci_cent`` 0.001,
    ``tapered_deci_cent`` 0.001 at the tails, ``center_<a>_edge_<b>_cent``).
    ``price_ranges`` stay in ``MarketSpec.extra`` so order validation can
    apply the tapered steps.

Books
    ``GET {api}/markets/{ticker}/orderbook`` →
    ``{"orderbook_fp": {"yes_dollars": [[price, count], …], "no_dollars": […]}}``:
    bids only, ascending (best last), an empty side ``[]``. Our book is the
    YES book: bids = YES bids, asks = 1 − NO bids.

WebSocket (``{ws}`` = ``…/trade-api/ws/v2``)
    The upgrade carries ``KALSHI-ACCESS-KEY``, ``KALSHI-ACCESS-TIMESTAMP`` (ms)
    and ``KALSHI-ACCESS-SIGNATURE`` (:func:`kalshi_headers`) — even for public
    data. Commands ``{"id", "cmd", "params"}``: ``subscribe`` (``channels``,
    ``market_tickers``) → ``{"type": "subscribed", "msg": {"channel", "sid"}}``;
    ``update_subscription`` (``sids`` = exactly one, ``market_tickers``,
    ``action`` = ``add_markets`` | ``delete_markets`` | ``get_snapshot``) →
    ``{"type": "ok", "sid", "seq", "msg": {"market_tickers": […]}}``;
    ``unsubscribe`` (``sids``) → ``{"type": "unsubscribed", "sid", "seq"}``;
    failures → ``{"type": "error", "msg": {"code", "msg"}}``.
    ``orderbook_delta`` sends per market an ``orderbook_snapshot``
    (``msg.yes_dollars_fp`` / ``msg.no_dollars_fp``: ``[[price, count], …]``, a
    side may be absent when empty) and then ``orderbook_delta``s
    (``msg.price_dollars``, signed ``msg.delta_fp``, ``msg.side`` yes|no,
    ``msg.ts_ms``), each with ``sid`` and ``seq``, consecutive per subscription.
    A ``seq`` gap means a message was lost: every book of the subscription is
    discarded (its deltas ignored) and re-snapshotted with ``get_snapshot``.
    ``trade`` sends prints (``yes_price_dollars``, ``count_fp``,
    ``taker_outcome_side`` / legacy ``taker_side``, ``ts_ms``).
    ``market_lifecycle_v2`` (all markets; it takes no market filter) sends
    ``{"type": "market_lifecycle_v2", "sid", "msg": {"event_type",
    "market_ticker", …}}``; ``price_level_structure_updated`` carries
    ``price_level_structure`` and ``price_ranges`` (a tick change: the market
    is relisted and the book gets a ``TickSizeChange``); ``activated`` /
    ``deactivated`` (``is_deactivated``), ``determined`` and ``settled`` relist
    the market as (in)active. The server sends WebSocket ping frames every
    10 s (body ``heartbeat``); the library answers them.

Stall detection
    A socket counts as alive while *any* frame arrives — data or the venue's
    ping frames — so a quiet book (no deltas for minutes is normal on Kalshi)
    is not a stall. A watchdog replaces the socket after ``stall_s`` without a
    frame (``stats.stalls``). This is why :meth:`LiveVenue.recv` is not used:
    it only sees data messages, and on Python 3.11 its ``wait_for`` costs a
    task per message on the hot path.

Without a key
    No WebSocket: the books in :attr:`wanted` are polled over REST every
    ``poll_s`` and diffed into level updates (``stats.state == "polling"``,
    ``stats.note`` says so). A key the venue refuses (HTTP 401 at the upgrade)
    falls back to polling too, and the WebSocket is retried after
    :data:`AUTH_RETRY_S`.

Rate limit
    Basic tier: 200 read tokens a second, 10 per request → 20 reads/s, a
    bucket of one second; a 429 comes without ``Retry-After``. A config's
    ``reads_per_s``/``burst`` override it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from ...book import Side
from ...catalogue import PREDICTION_PRICE_SCALE, EventSpec, MarketSpec
from ...clock import Clock
from ...events import BookEvent, BookReset, LevelUpdate, MarketListed, TickSizeChange, Trade
from .base import LiveConfig, LiveVenue, Stalled, VenueError, units

__all__ = [
    "KalshiLive",
    "KalshiStream",
    "book_symbol",
    "kalshi_headers",
    "load_private_key",
    "parse_event",
    "parse_market",
    "parse_orderbook",
    "tick_of",
    "ticker_of",
]

log = logging.getLogger("sequence.market.live.kalshi")

PS = PREDICTION_PRICE_SCALE  # price units per dollar (0.0001 = 1 unit)
SS = 100  # size units per contract (count_fp has two decimals)
#: Kalshi Basic tier: 20 reads a second (200 tokens/s at 10 tokens a read), one second of burst.
READS_PER_S = 20.0
READ_BURST = 20
MARKETS_PAGE = 1000  # GET /markets limit ≤ 1000
EVENTS_PAGE = 200  # GET /events limit ≤ 200
#: At most this many events are fetched one by one (GET /events/{ticker}); more → the paged listing.
EVENTS_ONE_BY_ONE = 8
#: After the venue refused the key at the upgrade, poll this long before trying the WebSocket again.
AUTH_RETRY_S = 300.0
#: WebSocket error codes after which Kalshi wants the subscription made again.
TERMINAL_ERRORS = frozenset({10, 17, 25})

_STEP_WORDS = {"whole": "0.01", "half": "0.005", "quint": "0.002", "deci": "0.001", "centi": "0.0001"}
STRUCTURE_RANGES: Mapping[str, tuple[tuple[str, str, str], ...]] = {
    "linear_cent": (("0.00", "1.00", "0.01"),),
    "deci_cent": (("0.00", "1.00", "0.001"),),
    "tapered_deci_cent": (("0.00", "0.10", "0.001"), ("0.10", "0.90", "0.01"), ("0.90", "1.00", "0.001")),
}
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)


# -- auth ---------------------------------------------------------------------------------------
def load_private_key(pem: str | bytes) -> rsa.RSAPrivateKey:
    """An RSA private key from PEM (PKCS#8 or PKCS#1, unencrypted), as Kalshi issues them."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise VenueError("the Kalshi private key is not an unencrypted PEM RSA key") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise VenueError("the Kalshi private key must be an RSA key")
    return key


def kalshi_headers(key_id: str, private_key: rsa.RSAPrivateKey | str | bytes, method: str, path: str,
                   ts_ms: int | None = None) -> dict[str, str]:
    """Kalshi's signed request headers: base64 RSA-PSS (SHA-256, MGF1-SHA-256, salt = digest
    length) over ``ts_ms + METHOD + path``. *path* is the full path (``/trade-api/v2/…`` or
    ``/trade-api/ws/v2``); a query string or a whole URL is accepted and the query is never
    signed. REST orders use the same headers."""
    key = private_key if isinstance(private_key, rsa.RSAPrivateKey) else load_private_key(private_key)
    path = urlsplit(path).path if ("?" in path or "://" in path) else path
    ts = str(int(time.time() * 1000) if ts_ms is None else ts_ms)
    sig = key.sign((ts + method.upper() + path).encode(), _PSS, hashes.SHA256())
    return {
        "KALSHI-ACCESS-KEY": key_id,
        "KALSHI-ACCESS-TIMESTAMP": ts,
        "KALSHI-ACCESS-SIGNATURE": base64.b64encode(sig).decode("ascii"),
    }


# -- symbols and parsers ------------------------------------------------------------------------------
def book_symbol(ticker: str) -> str:
    """A market ticker's book symbol: its YES token."""
    return f"{ticker}-YES"


def ticker_of(symbol: str) -> str:
    """The market ticker of a book symbol (``…-YES``)."""
    return symbol[:-4] if symbol.endswith("-YES") else symbol


def _step_units(step: Any) -> int | None:
    try:
        u = units(str(step), PS)
    except VenueError:
        return None
    return u if u > 0 else None


def tick_of(price_ranges: Any, structure: str | None = None) -> int:
    """The book's tick in price units: the finest step of *price_ranges* (else of the named
    *structure*); 0.01 when neither says."""
    steps: list[int] = []
    if isinstance(price_ranges, list):
        for r in price_ranges:
            if isinstance(r, Mapping) and (u := _step_units(r.get("step"))) is not None:
                steps.append(u)
    if not steps and structure:
        if structure in STRUCTURE_RANGES:
            steps = [u for _, _, s in STRUCTURE_RANGES[structure] if (u := _step_units(s)) is not None]
        else:  # center_<a>_edge_<b>_cent
            parts = structure.split("_")
            if len(parts) == 5 and parts[0] == "center" and parts[2] == "edge" and parts[4] == "cent":
                steps = [u for w in (parts[1], parts[3])
                         if w in _STEP_WORDS and (u := _step_units(_STEP_WORDS[w])) is not None]
    return min(steps) if steps else 100


def _dollars(text: Any) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def is_combo(row: Mapping[str, Any]) -> bool:
    """An auto-generated multivariate (combo) market."""
    return bool(row.get("mve_collection_ticker")) or str(row.get("ticker", "")).startswith("KXMVE")


def parse_market(row: Mapping[str, Any], event: Mapping[str, Any] | None = None) -> MarketSpec:
    """One ``GET /markets`` row as a :class:`MarketSpec`, built as the simulator builds them."""
    ticker = str(row["ticker"])
    event_ticker = str(row.get("event_ticker") or "") or None
    status = str(row.get("status") or "")
    outcome = row.get("yes_sub_title") or None
    title = row.get("title") or ""
    if not title:
        ev_title = (event or {}).get("title") or ticker
        title = f"{ev_title}: {outcome}" if outcome else ev_title
    structure = row.get("price_level_structure") or None
    ranges = row.get("price_ranges")
    if not isinstance(ranges, list) or not ranges:
        ranges = [{"start": a, "end": b, "step": s} for a, b, s in STRUCTURE_RANGES.get(structure or "", ())]
    bid = _dollars(row.get("yes_bid_dollars"))
    ask = _dollars(row.get("yes_ask_dollars"))
    volume = _dollars(row.get("volume_fp"))
    extra: dict[str, Any] = {
        "ticker": ticker,
        "event_ticker": event_ticker,
        "market_type": row.get("market_type") or "binary",
        "status": status,
        "price_level_structure": structure or "linear_cent",
        "price_ranges": [dict(r) for r in ranges] if ranges else [{"start": "0.01", "end": "0.99", "step": "0.01"}],
        "yes_sub_title": outcome,
    }
    return MarketSpec(
        venue="kalshi",
        slug=ticker,
        title=str(title),
        instrument_type="prediction",
        book_symbol=book_symbol(ticker),
        event_slug=event_ticker,
        outcome_name=str(outcome) if outcome else None,
        yes_token_id=f"{ticker}-YES",
        no_token_id=f"{ticker}-NO",
        aliases=(ticker,),
        active=status == "active",
        close_time=row.get("close_time") or None,
        tick=tick_of(ranges, structure),
        min_notional=0.0,
        min_order_size=1.0,
        volume=float(volume or 0.0),
        # 0 bid / 1 ask: nobody there.
        listed_best_bid=bid if bid is not None and bid > 0 else None,
        listed_best_ask=ask if ask is not None and 0 < ask < 1 else None,
        listed_liquidity=_dollars(row.get("liquidity_dollars")),
        extra=extra,
    )


def parse_event(row: Mapping[str, Any] | None, event_ticker: str, markets: Sequence[MarketSpec]) -> EventSpec:
    """An event (``GET /events`` row, or None when the venue did not give it) over its listed markets."""
    row = row or {}
    closes = [m.close_time for m in markets if m.close_time]
    title = row.get("title") or (markets[0].title if markets else event_ticker)
    return EventSpec(
        venue="kalshi",
        slug=event_ticker,
        title=str(title),
        markets=tuple(m.slug for m in markets),
        close_time=max(closes) if closes else None,
        multi_outcome=len(markets) > 1,
        category=row.get("category") or None,
    )


def _levels(rows: Any) -> dict[int, int]:
    out: dict[int, int] = {}
    if rows:
        for price, count in rows:
            size = units(count, SS)
            if size > 0:
                out[units(price, PS)] = size
    return out


def _reset(ts_ms: int, symbol: str, yes: Mapping[int, int], no: Mapping[int, int], tick: int | None) -> BookReset:
    bids = tuple(sorted(yes.items(), reverse=True))
    asks = tuple(sorted(((PS - p, s) for p, s in no.items())))
    return BookReset(ts_ms, symbol, bids, asks, tick)


def parse_orderbook(symbol: str, body: Mapping[str, Any], ts_ms: int, tick: int | None = None) -> BookReset:
    """``GET /markets/{ticker}/orderbook`` as the YES book: bids = YES bids, asks = 1 − NO bids."""
    ob = body.get("orderbook_fp")
    if not isinstance(ob, Mapping):
        raise VenueError(f"orderbook for {symbol}: no orderbook_fp in the answer")
    return _reset(ts_ms, symbol, _levels(ob.get("yes_dollars")), _levels(ob.get("no_dollars")), tick)


# -- the WebSocket session, without I/O ---------------------------------------------------------------
@dataclass
class _Channel:
    name: str
    sid: int | None = None
    seq: int = 0
    tickers: set[str] = field(default_factory=set)
    pending: int | None = None  # id of the subscribe / add / delete / unsubscribe in flight


class _LocalBook:
    """One market's levels as the venue keeps them (YES bids, NO bids), in units: deltas are
    relative, our updates absolute."""

    __slots__ = ("no", "symbol", "yes")

    def __init__(self, symbol: str, yes: dict[int, int], no: dict[int, int]) -> None:
        self.symbol = symbol
        self.yes = yes
        self.no = no


class KalshiStream:
    """One WebSocket session's state: subscriptions, sequence numbers and the books they
    feed. Messages in, book events and commands out — no I/O, so it is tested directly.

    ``sync(wanted)`` returns the commands that bring the subscriptions to *wanted* (one
    command per channel in flight); ``on_message(msg)`` returns ``(events, resync)`` —
    *resync* when the events are a snapshot replacing a book that went out of step — and
    leaves commands to send in :attr:`outbox`."""

    def __init__(self, tick: Callable[[str], int | None] | None = None, known: set[str] | None = None,
                 now_ms: Callable[[], int] | None = None) -> None:
        self._tick: Callable[[str], int | None] = tick or (lambda symbol: None)
        self._now_ms: Callable[[], int] = now_ms or (lambda: int(time.time() * 1000))
        self.next_id = 1
        self.book = _Channel("orderbook_delta")
        self.trades = _Channel("trade")
        self.lifecycle_sid: int | None = None
        self.lifecycle_pending: int | None = None
        self.books: dict[str, _LocalBook] = {}  # ticker -> levels, once its snapshot came
        #: Tickers whose book was live before (a new snapshot of one is a resync).
        self.known: set[str] = known if known is not None else set()
        self.refused: dict[str, str] = {}  # ticker -> why the venue refused it
        self.outbox: list[dict[str, Any]] = []
        self.gaps = 0
        self.lifecycle: list[dict[str, Any]] = []  # lifecycle messages for the connector
        self.ready = False  # a first subscription was confirmed
        self._prices: dict[str, int] = {}
        self._sizes: dict[str, int] = {}

    def _cmd(self, cmd: str, params: dict[str, Any]) -> dict[str, Any]:
        out = {"id": self.next_id, "cmd": cmd, "params": params}
        self.next_id += 1
        return out

    def subscribe_lifecycle(self) -> dict[str, Any]:
        cmd = self._cmd("subscribe", {"channels": ["market_lifecycle_v2"]})
        self.lifecycle_pending = cmd["id"]
        return cmd

    def sync(self, wanted: Iterable[str]) -> list[dict[str, Any]]:
        """Commands that move both market channels towards *wanted* (tickers)."""
        want = {t for t in wanted if t not in self.refused}
        out = []
        for ch in (self.book, self.trades):
            if ch.pending is not None:
                continue  # one change at a time; the reply calls sync again
            add = sorted(want - ch.tickers)
            remove = sorted(ch.tickers - want)
            cmd = None
            if ch.sid is None:
                if want:
                    cmd = self._cmd("subscribe", {"channels": [ch.name], "market_tickers": sorted(want)})
                    ch.tickers = set(want)
            elif remove and len(remove) == len(ch.tickers):
                cmd = self._cmd("unsubscribe", {"sids": [ch.sid]})
            elif remove:
                cmd = self._cmd("update_subscription",
                                {"sids": [ch.sid], "market_tickers": remove, "action": "delete_markets"})
                ch.tickers.difference_update(remove)
            elif add:
                cmd = self._cmd("update_subscription",
                                {"sids": [ch.sid], "market_tickers": add, "action": "add_markets"})
                ch.tickers.update(add)
            if cmd is not None:
                ch.pending = cmd["id"]
                out.append(cmd)
            if ch is self.book:
                for t in remove:
                    self.books.pop(t, None)
                    self.known.discard(t)
        return out

    # -- messages ------------------------------------------------------------------------------
    def delta(self, msg: Mapping[str, Any]) -> LevelUpdate | None:
        """An ``orderbook_delta`` as the absolute new level (hot path)."""
        ch = self.book
        if msg.get("sid") != ch.sid:
            return None  # a subscription we left
        seq = msg.get("seq")
        if seq != ch.seq + 1:
            self._gap(seq)
            return None
        ch.seq = seq
        m = msg["msg"]
        book = self.books.get(m["market_ticker"])
        if book is None:
            return None  # not started (or discarded after a gap): its snapshot is coming
        # Prices and sizes repeat: a parsed string is a dict hit (bounded caches).
        text = m["price_dollars"]
        p = self._prices.get(text)
        if p is None:
            p = units(text, PS)
            if len(self._prices) < 20_000:
                self._prices[text] = p
        text = m["delta_fp"]
        q = self._sizes.get(text)
        if q is None:
            q = -units(text[1:], SS) if text[:1] == "-" else units(text, SS)
            if len(self._sizes) < 20_000:
                self._sizes[text] = q
        if m["side"] == "yes":
            levels, side, price = book.yes, Side.BID, p
        else:
            levels, side, price = book.no, Side.ASK, PS - p
        size = levels.get(p, 0) + q
        if size > 0:
            levels[p] = size
        else:
            levels.pop(p, None)
            size = 0
        ts = m.get("ts_ms")
        return LevelUpdate(ts if type(ts) is int else self._now_ms(), book.symbol, side, price, size)

    def _gap(self, seq: Any) -> None:
        """A lost message: discard every book of the subscription, ask for fresh snapshots."""
        ch = self.book
        self.gaps += 1
        if isinstance(seq, int):
            ch.seq = seq
        self.books.clear()
        if ch.sid is not None and ch.tickers:
            self.outbox.append(self._cmd("update_subscription", {
                "sids": [ch.sid], "market_tickers": sorted(ch.tickers), "action": "get_snapshot"}))

    def snapshot(self, msg: Mapping[str, Any]) -> tuple[BookReset | None, bool]:
        ch = self.book
        if msg.get("sid") != ch.sid:
            return None, False
        seq = msg.get("seq")
        if seq != ch.seq + 1:
            self._gap(seq)  # this snapshot is whole and current: it still starts its book
        else:
            ch.seq = seq
        m = msg["msg"]
        ticker = m["market_ticker"]
        if ticker not in ch.tickers:
            return None, False
        symbol = book_symbol(ticker)
        yes, no = _levels(m.get("yes_dollars_fp")), _levels(m.get("no_dollars_fp"))
        self.books[ticker] = _LocalBook(symbol, yes, no)
        resync = ticker in self.known
        self.known.add(ticker)
        ts = m.get("ts_ms")
        return _reset(ts if type(ts) is int else self._now_ms(), symbol, yes, no, self._tick(symbol)), resync

    def trade(self, msg: Mapping[str, Any]) -> Trade | None:
        ch = self.trades
        if msg.get("sid") != ch.sid:
            return None
        seq = msg.get("seq")
        if isinstance(seq, int):
            ch.seq = seq  # a lost print only costs volume: no resync
        m = msg["msg"]
        ticker = m.get("market_ticker")
        if ticker not in ch.tickers:
            return None
        taker = m.get("taker_outcome_side") or m.get("taker_side")
        if taker is None:
            book_side = m.get("taker_book_side")
            taker = "yes" if book_side == "bid" else "no"
        ts = m.get("ts_ms")
        if type(ts) is not int:
            ts = m["ts"] * 1000 if type(m.get("ts")) is int else self._now_ms()
        # A taker buying YES lifts the YES asks; buying NO hits the YES bids.
        return Trade(ts, book_symbol(str(ticker)), Side.ASK if taker == "yes" else Side.BID,
                     units(m["yes_price_dollars"], PS), units(m["count_fp"], SS))

    def _channel(self, sid: Any) -> _Channel | None:
        for ch in (self.book, self.trades):
            if ch.sid is not None and ch.sid == sid:
                return ch
        return None

    def on_message(self, msg: Mapping[str, Any]) -> tuple[list[BookEvent], bool]:
        """Any message: the book events it makes, and whether they resync a book."""
        typ = msg.get("type")
        if typ == "orderbook_delta":
            ev = self.delta(msg)
            return ([ev] if ev is not None else []), False
        if typ == "orderbook_snapshot":
            reset, resync = self.snapshot(msg)
            return ([reset] if reset is not None else []), resync
        if typ == "trade":
            tr = self.trade(msg)
            return ([tr] if tr is not None else []), False
        if typ == "market_lifecycle_v2":
            if isinstance(msg.get("msg"), Mapping):
                self.lifecycle.append(dict(msg["msg"]))
            return [], False
        if typ == "subscribed":
            self._subscribed(msg)
        elif typ == "ok":
            self._ok(msg)
        elif typ == "unsubscribed":
            self._unsubscribed(msg)
        elif typ == "error":
            self._error(msg)
        return [], False

    def _subscribed(self, msg: Mapping[str, Any]) -> None:
        body = msg.get("msg") or {}
        channel, sid = body.get("channel"), body.get("sid")
        if channel == "market_lifecycle_v2":
            self.lifecycle_sid, self.lifecycle_pending = sid, None
        for ch in (self.book, self.trades):
            if ch.name == channel and ch.pending == msg.get("id"):
                ch.sid, ch.seq, ch.pending = sid, 0, None
        self.ready = True

    def _ok(self, msg: Mapping[str, Any]) -> None:
        ch = self._channel(msg.get("sid"))
        for c in (self.book, self.trades):
            if c.pending is not None and c.pending == msg.get("id"):
                c.pending = None
        seq = msg.get("seq")
        # Replies carry the subscription's seq; whether or not they take a number of their
        # own, the next data message follows it.
        if ch is not None and isinstance(seq, int) and seq >= ch.seq:
            if ch is self.book and seq > ch.seq + 1:
                self._gap(seq)
            ch.seq = seq

    def _unsubscribed(self, msg: Mapping[str, Any]) -> None:
        sid = msg.get("sid")
        for ch in (self.book, self.trades):
            if ch.sid is not None and ch.sid == sid:
                if ch is self.book:
                    for t in ch.tickers:
                        self.books.pop(t, None)
                ch.sid, ch.seq, ch.tickers = None, 0, set()
            if ch.pending is not None and ch.pending == msg.get("id"):
                ch.pending = None

    def _error(self, msg: Mapping[str, Any]) -> None:
        body = msg.get("msg") or {}
        code, text = body.get("code"), body.get("msg")
        cid = msg.get("id")
        for ch in (self.book, self.trades):
            if ch.pending is None or ch.pending != cid:
                continue
            ch.pending = None
            bad = body.get("market_ticker")
            if code == 16 and bad:
                # One market the venue does not have (closed since the listing): leave it out.
                self.refused[str(bad)] = f"Kalshi: {text or 'market not found'}"
                ch.tickers.discard(str(bad))
                if ch.sid is None:
                    ch.tickers = set()
                return
            raise VenueError(f"Kalshi refused a {ch.name} command: error {code}: {text}")
        if code in TERMINAL_ERRORS or cid is None or cid == self.lifecycle_pending:
            raise VenueError(f"Kalshi WebSocket error {code}: {text}")
        # An error answering a get_snapshot: the books stay discarded; start over.
        raise VenueError(f"Kalshi refused a command: error {code}: {text}")


class _Connection(ClientConnection):
    """Notes when the last frame of any kind arrived (the venue's pings included)."""

    last_frame = 0.0

    def process_event(self, event: Any) -> None:
        self.last_frame = time.monotonic()
        super().process_event(event)


# -- the connector ---------------------------------------------------------------------------------
class KalshiLive(LiveVenue):
    """Kalshi market data: see the module docstring."""

    reads_per_s = READS_PER_S
    burst = READ_BURST
    #: ``GET /markets`` page size (≤ 1000); tests lower it to exercise paging.
    page_limit = MARKETS_PAGE
    events_page_limit = EVENTS_PAGE
    events_one_by_one = EVENTS_ONE_BY_ONE

    def __init__(self, config: LiveConfig, *, clock: Clock, http: httpx.AsyncClient | None = None) -> None:
        super().__init__(config, clock=clock, http=http)
        self.api = config.api_url.rstrip("/")
        self.ws_path = urlsplit(config.ws_url).path or "/"
        self._key: rsa.RSAPrivateKey | None = None
        self._key_problem: str | None = None
        if config.key_id and config.private_key_pem:
            try:
                self._key = load_private_key(config.private_key_pem)
            except VenueError as exc:
                self._key_problem = str(exc)
        self._ticks: dict[str, int] = {}  # book symbol -> current tick
        self._known: set[str] = set()  # tickers whose book was live (a new snapshot is a resync)
        self._stalled = False
        self._failure: BaseException | None = None
        self.stream: KalshiStream | None = None  # the current WebSocket session (tests read it)
        self.refused: dict[str, str] = {}

    # -- discovery -----------------------------------------------------------------------------
    async def fetch_catalogue(self) -> tuple[list[MarketSpec], list[EventSpec]]:
        cap = self.config.max_markets
        rows: list[Mapping[str, Any]] = []
        cursor: str | None = None
        while cap is None or len(rows) < cap:
            limit = self.page_limit if cap is None else max(1, min(self.page_limit, cap - len(rows)))
            params: dict[str, Any] = {"limit": limit, "status": "open", "mve_filter": "exclude"}
            if cursor:
                params["cursor"] = cursor
            body = await self.get_json(f"{self.api}/markets", params)
            if not isinstance(body, Mapping):
                raise VenueError("GET /markets: not an object")
            page = body.get("markets") or []
            rows.extend(r for r in page if isinstance(r, Mapping) and r.get("ticker") and not is_combo(r))
            cursor = body.get("cursor") or None
            if not cursor or not page:
                break
        if cap is not None:
            rows = rows[:cap]
        by_event: dict[str, list[Mapping[str, Any]]] = {}
        for r in rows:
            by_event.setdefault(str(r.get("event_ticker") or ""), []).append(r)
        event_rows = await self._fetch_events([e for e in by_event if e])
        markets: list[MarketSpec] = []
        events: list[EventSpec] = []
        for ev_ticker, ev_markets in by_event.items():
            ev_row = event_rows.get(ev_ticker)
            specs = [parse_market(r, ev_row) for r in ev_markets]
            markets.extend(specs)
            if ev_ticker:
                events.append(parse_event(ev_row, ev_ticker, specs))
        return markets, events

    async def _fetch_events(self, needed: Sequence[str]) -> dict[str, Mapping[str, Any]]:
        """Event rows for *needed* tickers: the paged listing when many, one by one when few."""
        found: dict[str, Mapping[str, Any]] = {}
        want = set(needed)
        if len(want) > self.events_one_by_one:
            cursor: str | None = None
            while want - found.keys():
                params: dict[str, Any] = {"limit": self.events_page_limit, "status": "open"}
                if cursor:
                    params["cursor"] = cursor
                body = await self.get_json(f"{self.api}/events", params)
                if not isinstance(body, Mapping):
                    raise VenueError("GET /events: not an object")
                page = body.get("events") or []
                for ev in page:
                    if isinstance(ev, Mapping) and ev.get("event_ticker") in want:
                        found[str(ev["event_ticker"])] = ev
                cursor = body.get("cursor") or None
                if not cursor or not page:
                    break
        for ticker in sorted(want - found.keys())[:self.events_one_by_one]:
            try:
                body = await self.get_json(f"{self.api}/events/{quote(ticker, safe='')}")
            except VenueError as exc:  # a title is not worth failing the catalogue for
                self._error(f"event {ticker}: {exc}")
                continue
            ev = body.get("event") if isinstance(body, Mapping) else None
            if isinstance(ev, Mapping):
                found[ticker] = ev
        return found

    def list_markets(self, markets: Sequence[MarketSpec], events: Sequence[EventSpec] = ()) -> int:
        """Also: a market whose tick changed since the last listing gets a TickSizeChange."""
        ts = self.now_ms()
        ticks: list[BookEvent] = []
        for spec in markets:
            old = self._ticks.get(spec.book_symbol)
            if old is not None and old != spec.tick:
                ticks.append(TickSizeChange(ts, spec.book_symbol, spec.tick))
            self._ticks[spec.book_symbol] = spec.tick
        n = super().list_markets(markets, events)
        self.emit(ticks)
        return n

    # -- books -----------------------------------------------------------------------------------
    async def fetch_book(self, book_symbol: str) -> BookReset:
        ticker = ticker_of(book_symbol)
        body = await self.get_json(f"{self.api}/markets/{quote(ticker, safe='')}/orderbook")
        if not isinstance(body, Mapping):
            raise VenueError(f"orderbook for {ticker}: not an object")
        return parse_orderbook(book_symbol, body, self.now_ms(), self._ticks.get(book_symbol))

    async def feed(self) -> None:
        if self._key is None or not self.config.key_id:
            why = "no Kalshi API key" if self._key_problem is None else self._key_problem
            self.stats.note = (f"{why}: order books are polled over REST every "
                               f"{self.config.poll_s:g} s (the WebSocket needs a key)")
            await self._poll()
            return
        try:
            await self._stream()
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status not in (401, 403):
                raise VenueError(f"WebSocket upgrade refused: HTTP {status}") from exc
            self.stats.note = (f"Kalshi refused the API key at the WebSocket upgrade (HTTP {status}: "
                               f"wrong key id or private key, or this machine's clock is off); order "
                               f"books are polled over REST every {self.config.poll_s:g} s instead")
            self._error(f"feed: WebSocket upgrade: HTTP {status}")
            await self._poll(until=time.monotonic() + AUTH_RETRY_S)
            raise VenueError(f"WebSocket upgrade refused (HTTP {status}); trying again") from None

    def _error(self, text: str) -> None:
        self.stats.errors += 1
        self.stats.last_error = text[:300]

    # -- WebSocket -------------------------------------------------------------------------------
    async def _stream(self) -> None:
        assert self._key is not None and self.config.key_id
        headers = kalshi_headers(self.config.key_id, self._key, "GET", self.ws_path)
        self.changed.clear()
        async with connect(self.config.ws_url, additional_headers=headers, create_connection=_Connection,
                           ping_interval=None, compression=None, max_size=2**24, max_queue=1024,
                           open_timeout=self.config.http_timeout_s) as ws:
            assert isinstance(ws, _Connection)
            ws.last_frame = time.monotonic()
            stream = KalshiStream(self._ticks.get, self._known, self.now_ms)
            self.stream = stream
            self._stalled, self._failure = False, None
            await self._send(ws, [stream.subscribe_lifecycle(), *stream.sync(self._wanted_tickers())])
            helpers = [asyncio.create_task(self._follow(ws, stream), name="sequence-kalshi-follow"),
                       asyncio.create_task(self._watch(ws), name="sequence-kalshi-watchdog")]
            try:
                await self._read(ws, stream)
            finally:
                for t in helpers:
                    t.cancel()
                for t in helpers:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await t
                self.stream = None

    def _wanted_tickers(self) -> set[str]:
        return {ticker_of(s) for s in self.wanted}

    async def _send(self, ws: ClientConnection, cmds: Sequence[Mapping[str, Any]]) -> None:
        for cmd in cmds:
            await ws.send(json.dumps(cmd, separators=(",", ":")))

    async def _read(self, ws: _Connection, stream: KalshiStream) -> None:
        recv, loads, delta, emit = ws.recv, json.loads, stream.delta, self.emit
        stats = self.stats
        monotonic = time.monotonic
        while True:
            try:
                raw = await recv()
            except ConnectionClosed:
                if self._stalled:
                    raise Stalled(f"no frame for {self.config.stall_s:g} s on an open socket") from None
                if self._failure is not None:
                    raise self._failure from None
                raise
            stats.messages += 1
            stats.last_message = monotonic()
            msg = loads(raw)
            if msg.get("type") == "orderbook_delta":  # the hot path
                ev = delta(msg)
                if ev is not None:
                    emit([ev])
            else:
                was_ready = stream.ready
                events, resync = stream.on_message(msg)
                if events:
                    first = events[0]
                    if isinstance(first, BookReset):
                        self.reset_book(first, resync=resync)
                    else:
                        emit(events)
                if stream.lifecycle:
                    self._lifecycle(stream)
                if msg.get("type") in ("subscribed", "ok", "unsubscribed", "error"):
                    stream.outbox.extend(stream.sync(self._wanted_tickers()))
                    self.refused = dict(stream.refused)
                if stream.ready and not was_ready:
                    self.stats.note = None
                    self.connected()
            if stream.outbox:
                cmds, stream.outbox = stream.outbox, []
                await self._send(ws, cmds)

    async def _follow(self, ws: _Connection, stream: KalshiStream) -> None:
        """Subscribe additions to and unsubscribe removals from :attr:`wanted` as they happen."""
        try:
            while True:
                await self.changed.wait()
                self.changed.clear()
                await self._send(ws, stream.sync(self._wanted_tickers()))
        except (asyncio.CancelledError, ConnectionClosed):
            raise
        except Exception as exc:  # hand it to the reader: it raises it
            self._failure = exc
            if ws.transport is not None:
                ws.transport.abort()

    async def _watch(self, ws: _Connection) -> None:
        """Replace a socket that stays silent (no data, no ping) for ``stall_s``."""
        stall = self.config.stall_s
        step = max(0.005, stall / 5)
        while True:
            await asyncio.sleep(step)
            if time.monotonic() - ws.last_frame > stall:
                self.stats.stalls += 1
                self._stalled = True
                if ws.transport is not None:
                    ws.transport.abort()
                return

    def _lifecycle(self, stream: KalshiStream) -> None:
        """Relist markets whose tick or state changed (``market_lifecycle_v2``)."""
        msgs, stream.lifecycle = stream.lifecycle, []
        out: list[BookEvent] = []
        ts = self.now_ms()
        for m in msgs:
            ticker = m.get("market_ticker")
            symbol = book_symbol(str(ticker))
            spec = self._listed.get(symbol)
            if spec is None:
                continue  # not in our catalogue (a combo, or past max_markets)
            kind = m.get("event_type")
            extra = dict(spec.extra)
            new = spec
            if kind == "price_level_structure_updated" or m.get("price_level_structure"):
                structure = m.get("price_level_structure") or extra.get("price_level_structure")
                ranges = m.get("price_ranges")
                if not isinstance(ranges, list) or not ranges:
                    ranges = [{"start": a, "end": b, "step": s}
                              for a, b, s in STRUCTURE_RANGES.get(str(structure), ())]
                extra.update(price_level_structure=structure, price_ranges=ranges)
                new = replace(spec, tick=tick_of(ranges, structure), extra=extra)
            elif kind in ("activated", "deactivated") or "is_deactivated" in m:
                off = bool(m.get("is_deactivated", kind == "deactivated"))
                extra["status"] = "inactive" if off else "active"
                new = replace(spec, active=not off, extra=extra)
            elif kind in ("determined", "settled"):
                extra["status"] = "determined" if kind == "determined" else "finalized"
                new = replace(spec, active=False, extra=extra)
            if new == spec:
                continue
            self._listed[symbol] = new
            out.append(MarketListed(ts, symbol, new))
            if new.tick != self._ticks.get(symbol, spec.tick):
                self._ticks[symbol] = new.tick
                out.append(TickSizeChange(ts, symbol, new.tick))
        self.emit(out)

    # -- REST polling (no key) ----------------------------------------------------------------------
    async def _poll(self, until: float | None = None) -> None:
        """Keep :attr:`wanted` books current from REST snapshots, diffed into level updates."""
        self.connected("polling")
        poll_s = self.config.poll_s
        last: dict[str, BookReset] = {}
        due: dict[str, float] = {}
        while until is None or time.monotonic() < until:
            self.changed.clear()
            wanted = set(self.wanted)
            for sym in list(last):
                if sym not in wanted:
                    last.pop(sym)
                    due.pop(sym, None)
            now = time.monotonic()
            for sym in sorted(wanted, key=lambda s: due.get(s, 0.0)):
                if due.get(sym, 0.0) > now:
                    continue
                due[sym] = now + poll_s
                try:
                    snap = await self.fetch_book(sym)
                except VenueError as exc:
                    self._error(f"poll {sym}: {exc}")
                    continue
                self.heard()
                if sym not in self.wanted:
                    continue  # released while we asked
                prev = last.get(sym)
                last[sym] = snap
                if prev is None or prev.tick != snap.tick:
                    self.reset_book(snap, resync=prev is not None)
                else:
                    self.emit(_diff(prev, snap))
            wait = min(due.values(), default=now + poll_s) - time.monotonic()
            if until is not None:
                wait = min(wait, until - time.monotonic())
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), wait)


def _diff(prev: BookReset, new: BookReset) -> list[BookEvent]:
    """Level updates turning *prev* into *new* (absolute sizes, 0 removes)."""
    out: list[BookEvent] = []
    for side, old_levels, new_levels in ((Side.BID, prev.bids, new.bids), (Side.ASK, prev.asks, new.asks)):
        old, cur = dict(old_levels), dict(new_levels)
        for price, size in cur.items():
            if old.get(price) != size:
                out.append(LevelUpdate(new.ts_ms, new.symbol, side, price, size))
        for price in old.keys() - cur.keys():
            out.append(LevelUpdate(new.ts_ms, new.symbol, side, price, 0))
    return out
