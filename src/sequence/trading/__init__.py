"""The trading model, pure: no I/O, no store, no event loop.

* :mod:`.graphs` — graphs and nodes (one model, the ``(state, event) → state``
  tables ``GRAPH`` and ``NODE``), triggers and outcomes;
* :mod:`.validation` — a ``POST /v1/graphs`` body into nodes and edges;
* :mod:`.matching` — the matching core: orders and a timestamp in, events out
  (this is where an order is matched);
* :mod:`.fees` and :mod:`.positions` — exact fees per venue, positions and P&L
  as a fold over fills;
* :mod:`.wire` — what the API sends for graphs, nodes, fills and positions.

It reads the market's books (:mod:`sequence.market`); the graph engine that
drives it over the store and the stream is :mod:`sequence.execution`.
"""
