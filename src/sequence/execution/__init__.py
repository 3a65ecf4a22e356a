"""Execution: the graph engine that runs the trading model against live books.

* :mod:`.engine` — :class:`~.engine.TradingEngine`: submits, activates and
  cancels graphs, matches their orders in the books (paper orders against the
  live book, venue orders in the simulated venue's book), re-matches when a
  book changes, and restores working orders after a restart;
* :mod:`.writer` — the single thread that commits each decision step in one
  transaction, in order.

Above the store (it writes through :class:`~sequence.store.trading.TradingStore`)
and below the API (:mod:`sequence.api.routes.trading` calls it).
"""
