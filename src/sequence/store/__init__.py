"""The storage layer: the only code that speaks SQL.

``db`` (engine, transactions, migrations), ``tables``, and one module of verbs
per aggregate — ``keys``, ``strategies``, ``runs``, ``logs`` (together the
:class:`~sequence.store.store.Store`) and ``trading`` (the
:class:`~sequence.store.trading.TradingStore`).
"""
