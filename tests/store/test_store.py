"""The store as a whole: its schema, and the one object callers import (store/store.py)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from sequence.store import db, engine, errors, keys, logs, runs, strategies
from sequence.store import store as facade
from sequence.store import tables as t
from sequence.store.store import Store


def test_migrations_produce_the_declared_schema(store: Store) -> None:
    with store.db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), t.metadata)
    assert diff == []


def test_store_is_every_aggregate_in_one_object_under_the_old_names() -> None:
    for mixin in (keys.KeysStore, strategies.StrategiesStore, runs.RunsStore, logs.LogsStore):
        assert issubclass(Store, mixin)
        verbs = {n for n in vars(mixin) if not n.startswith("_")}
        assert verbs and all(getattr(Store, v) is getattr(mixin, v) for v in verbs)
    # What callers import from store.store is the same object as where it lives now.
    assert (facade.NotFound, facade.Conflict, facade.StaleWrite) == (errors.NotFound, errors.Conflict, errors.StaleWrite)
    assert (facade.Principal, facade.ExitReport, facade.LogColumns) == (keys.Principal, runs.ExitReport, logs.LogColumns)
    assert engine.Database is db.Database and engine.normalize_url is db.normalize_url
