"""Recording book events as JSON Lines, and reading them back.

Format (one JSON value per line; ``.gz`` paths are gzip-compressed)::

    {"type": "header", "format": "sequence.market.recording", "version": 1,
     "start_ms": 1795564800000, "symbols": ["KXBTCD-26NOV30-T98000-YES", ...],
     "catalogue": {"markets": [...], "events": [...]}, "meta": {...}}
    {"type": "book", "symbol": 0, "tick_size": 0.01, "bids": [[0.41, 120.0], ...], "asks": [...]}
    ...one "book" line per book: the state when recording began...
    [1795564800123, "L", 0, "b", 0.42, 35.0]     level: ts_ms, L, symbol index, b|a, price, size (0 removes)
    [1795564800123, "X", 0, "a", 0.43, 5.0]      trade: ts_ms, X, symbol index, side hit, price, size
    [1795564800456, "T", 17, 0.001]              tick size change: ts_ms, T, symbol index, new tick
    [1795564800789, "R", 3, 0.01, [[0.41, 120.0]], [[0.44, 9.0]]]
                                                 book reset (a live venue's snapshot): ts_ms, R,
                                                 symbol index, tick (null: unchanged), bids, asks
    [1795564801000, "M", 42, {...spec...}, {...event...} | null]
                                                 market listed while recording (live catalogue):
                                                 ts_ms, M, its new symbol index, spec, event

Version 2 added the ``R`` and ``M`` rows (recordings of live venues); a
version 1 file is read as before.

Symbols are indexes into the header's ``symbols`` list (Polymarket token ids
are 77 characters; repeating them would triple the file). Prices and sizes are
decimals in venue units, written from exact integer units, so reading them
back with ``round(x * scale)`` is lossless.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import IO, Any, Literal

from .book import Book, Side
from .catalogue import Catalogue, EventSpec, MarketSpec, spec_from_json, spec_json
from .events import BookEvent, BookReset, LevelUpdate, MarketListed, TickSizeChange, Trade

FORMAT = "sequence.market.recording"
VERSION = 2
READABLE_VERSIONS = (1, 2)
_SIDE_CODE = {Side.BID: "b", Side.ASK: "a"}
_CODE_SIDE = {"b": Side.BID, "a": Side.ASK}


def _open(path: Path, mode: Literal["r", "w"]) -> IO[str]:
    if path.suffix == ".gz":
        if mode == "w":
            return gzip.open(path, "wt", encoding="utf-8")
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, mode, encoding="utf-8")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class RecordingError(ValueError):
    """The file is not a recording this version can read."""


class Recorder:
    """Appends book events to a recording. Made by ``MarketService.record``; close it to finish."""

    def __init__(
        self,
        path: str | Path,
        *,
        catalogue: Catalogue,
        books: Mapping[str, Book],
        start_ms: int,
        volumes: Mapping[str, float] | None = None,
        meta: Mapping[str, Any] | None = None,
        flush_every_s: float = 0.5,
        only: set[str] | None = None,
    ) -> None:
        self.path = Path(path)
        #: Record only these book symbols (None: every book, and markets listed later).
        self._only = only
        self._symbols = {sym: i for i, sym in enumerate(books)}
        #: (price scale, size scale) of every recorded symbol, grown by MarketListed rows.
        self._scales = {sym: (b.price_scale, b.size_scale) for sym, b in books.items()}
        self._f = _open(self.path, "w")
        self._flush_every = flush_every_s
        self._last_flush = time.monotonic()
        self.events_written = 0
        self.closed = False
        self._f.write(
            _dumps(
                {
                    "type": "header",
                    "format": FORMAT,
                    "version": VERSION,
                    "start_ms": start_ms,
                    "symbols": list(books),
                    "catalogue": catalogue.to_json(),
                    "meta": dict(meta or {}),
                }
            )
            + "\n"
        )
        for sym, book in books.items():
            ps, ss = book.price_scale, book.size_scale
            self._f.write(
                _dumps(
                    {
                        "type": "book",
                        "symbol": self._symbols[sym],
                        "tick_size": book.tick / ps,
                        "volume": (volumes or {}).get(sym),
                        "bids": [[p / ps, s / ss] for p, s in book.iter_levels(Side.BID)],
                        "asks": [[p / ps, s / ss] for p, s in book.iter_levels(Side.ASK)],
                    }
                )
                + "\n"
            )
        self._f.flush()

    def write(self, events: Iterable[BookEvent]) -> None:
        if self.closed:
            return
        lines = []
        symbols, scales = self._symbols, self._scales
        for ev in events:
            if isinstance(ev, MarketListed):
                line = self._listed(ev)
                if line is not None:
                    lines.append(line)
                continue
            idx = symbols.get(ev.symbol)
            if idx is None:
                continue
            ps, ss = scales[ev.symbol]
            if isinstance(ev, LevelUpdate):
                row: list[Any] = [ev.ts_ms, "L", idx, _SIDE_CODE[ev.side], ev.price / ps, ev.size / ss]
            elif isinstance(ev, Trade):
                row = [ev.ts_ms, "X", idx, _SIDE_CODE[ev.side], ev.price / ps, ev.size / ss]
            elif isinstance(ev, BookReset):
                row = [ev.ts_ms, "R", idx, None if ev.tick is None else ev.tick / ps,
                       [[p / ps, q / ss] for p, q in ev.bids], [[p / ps, q / ss] for p, q in ev.asks]]  # fmt: skip
            else:
                row = [ev.ts_ms, "T", idx, ev.tick / ps]
            lines.append(_dumps(row))
        if lines:
            self._f.write("\n".join(lines) + "\n")
            self.events_written += len(lines)
        now = time.monotonic()
        if now - self._last_flush >= self._flush_every:
            self._f.flush()
            self._last_flush = now

    def _listed(self, ev: MarketListed) -> str | None:
        if self._only is not None and ev.symbol not in self._only:
            return None
        idx = self._symbols.get(ev.symbol)
        if idx is None:
            idx = self._symbols[ev.symbol] = len(self._symbols)
        self._scales[ev.symbol] = (ev.spec.price_scale, ev.spec.size_scale)
        event = None if ev.event is None else ev.event.to_json()
        return _dumps([ev.ts_ms, "M", idx, spec_json(ev.spec), event])

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._f.close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RecordingReader:
    """Reads a recording: header, initial books, then events lazily."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._f = _open(self.path, "r")
        try:
            header = json.loads(self._f.readline())
        except ValueError as exc:
            self._f.close()
            raise RecordingError(f"{self.path}: not a recording ({exc})") from exc
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            self._f.close()
            raise RecordingError(f"{self.path}: not a {FORMAT} file")
        if header.get("version") not in READABLE_VERSIONS:
            self._f.close()
            raise RecordingError(f"{self.path}: unsupported version {header.get('version')!r}")
        self.header = header
        self.start_ms: int = header["start_ms"]
        self.symbols: list[str] = header["symbols"]
        catalogue = Catalogue.from_json(header["catalogue"])
        specs = {m.book_symbol: m for m in catalogue}
        self.books: dict[str, Book] = {}
        for sym in self.symbols:
            spec = specs[sym]
            self.books[sym] = Book(
                sym, tick=spec.tick, price_scale=spec.price_scale, size_scale=spec.size_scale
            )
        self._pending: str | None = None
        volumes: dict[str, float] = {}
        while True:
            line = self._f.readline()
            if not line:
                break
            if not line.startswith("{"):
                self._pending = line
                break
            rec = json.loads(line)
            book = self.books[self.symbols[rec["symbol"]]]
            if rec.get("volume") is not None:
                volumes[book.symbol] = rec["volume"]
            book.set_tick(book.price_units(rec["tick_size"]))
            for side, key in ((Side.BID, "bids"), (Side.ASK, "asks")):
                for price, size in rec[key]:
                    book.set_level(side, book.price_units(price), book.size_units(size))
            book.touch(self.start_ms)
        #: The recorded catalogue, with each market's volume as of the recording's start.
        self.catalogue = Catalogue(
            tuple(
                replace(m, volume=volumes[m.book_symbol]) if m.book_symbol in volumes else m
                for m in catalogue
            ),
            catalogue.events,
        )

    def events(self) -> Iterator[BookEvent]:
        """The recorded events in order (each call continues where the last stopped)."""
        symbols, books = self.symbols, self.books
        while True:
            if self._pending is not None:
                line, self._pending = self._pending, None
            else:
                line = self._f.readline()
            if not line:
                return
            if not line.strip():
                continue
            row = json.loads(line)
            kind = row[1]
            if kind == "M":
                yield self._listed(row)
                continue
            sym = symbols[row[2]]
            book = books[sym]
            if kind == "L":
                yield LevelUpdate(row[0], sym, _CODE_SIDE[row[3]], book.price_units(row[4]),
                                  book.size_units(row[5]))  # fmt: skip
            elif kind == "X":
                yield Trade(row[0], sym, _CODE_SIDE[row[3]], book.price_units(row[4]),
                            book.size_units(row[5]))  # fmt: skip
            elif kind == "T":
                yield TickSizeChange(row[0], sym, book.price_units(row[3]))
            elif kind == "R":
                pu, su = book.price_units, book.size_units
                yield BookReset(row[0], sym,
                                tuple((pu(p), su(q)) for p, q in row[4]),
                                tuple((pu(p), su(q)) for p, q in row[5]),
                                None if row[3] is None else pu(row[3]))  # fmt: skip
            else:
                raise RecordingError(f"{self.path}: unknown event kind {kind!r}")

    def _listed(self, row: list[Any]) -> MarketListed:
        ts_ms, _, idx, spec_data, event_data = row
        spec: MarketSpec = spec_from_json(spec_data)
        sym = spec.book_symbol
        if idx == len(self.symbols):
            self.symbols.append(sym)
        elif idx > len(self.symbols) or self.symbols[idx] != sym:
            raise RecordingError(f"{self.path}: market row {idx} out of order")
        if sym not in self.books:
            self.books[sym] = Book(sym, tick=spec.tick, price_scale=spec.price_scale, size_scale=spec.size_scale)
        event = None if event_data is None else EventSpec.from_json(event_data)
        return MarketListed(ts_ms, sym, spec, event)

    def close(self) -> None:
        self._f.close()
