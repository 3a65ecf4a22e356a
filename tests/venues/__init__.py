"""Protocol-faithful local venue servers (Kalshi, Polymarket, Coinbase) for the
live connectors' tests and ``bench/live_feed.py``: REST + WebSocket on
loopback, speaking the venues' documented wire formats (VENUES.md) and
checking what the venues check."""
