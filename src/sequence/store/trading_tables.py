"""Trading tables (graphs, nodes, orders, fills), on the shared metadata."""

from __future__ import annotations
