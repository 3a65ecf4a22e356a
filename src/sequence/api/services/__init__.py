"""The coordinator's business logic, called by the routes (which keep only HTTP).

* :mod:`.deploy` — deploy or redeploy a strategy's bundle; start, stop, delete;
* :mod:`.claims` — where a claim is decided: the long poll, the claim spec, heartbeats,
  started and exit reports;
* :mod:`.logs` — a run's lines: ingest from runners, pages, follow, the stream channel;
* :mod:`.layers` — dependency layers: the runners' wheel target, locks, wheel uploads, collection;
* :mod:`.rotation` — re-sealing every secret under a new credential key.
"""
