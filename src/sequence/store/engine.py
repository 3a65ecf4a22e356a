"""Old name of :mod:`sequence.store.db`, kept while callers move to it."""

from __future__ import annotations

from sequence.store.db import (
    MIGRATIONS_DIR,
    Database,
    alembic_config,
    create_engine,
    normalize_url,
    upgrade,
)

__all__ = ["MIGRATIONS_DIR", "Database", "alembic_config", "create_engine", "normalize_url", "upgrade"]
