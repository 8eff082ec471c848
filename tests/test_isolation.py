"""Tests share one database: what one test writes must be gone before the next one starts."""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy import Engine, text

from app.resources import resources
from tests.conftest import CLEANED_TABLES, clean_tables, make_key


def _rows(conn: object, table: str) -> int:
    count = f'SELECT count(*) FROM "{table}"'  # noqa: S608 - a name from the metadata
    return int(conn.execute(text(count)).scalar_one())  # type: ignore[attr-defined]


def test_every_table_the_migrations_create_is_emptied_between_tests(pg_engine: Engine) -> None:
    """A table added by a migration but not mapped (so not emptied) fails here. The monthly
    partitions of ``usage_events`` are emptied through it, so they are not listed."""
    with pg_engine.connect() as conn:
        tables = set(
            conn.execute(
                text(
                    "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')"
                    " AND NOT c.relispartition"
                )
            ).scalars()
        )
    assert tables - {"alembic_version"} == set(CLEANED_TABLES)


async def test_cleanup_empties_every_table_and_restarts_ids(app: FastAPI, pg_sync: Engine) -> None:
    # The app's catalog sync reports its replica in the background (model_replicas): a
    # report committing after the cleanup below would be a row this test did not write.
    # Between tests the app is shut down (and its replica row removed) before the cleanup.
    await resources(app).catalog_sync.stop()
    await make_key(app, "leaky")
    with pg_sync.begin() as conn:
        conn.execute(text("INSERT INTO invoice_sequences (year, last_number) VALUES (2026, 7)"))
        assert _rows(conn, "customers") == 1 and _rows(conn, "api_keys") == 1
        clean_tables(conn)
    with pg_sync.begin() as conn:
        assert {name: _rows(conn, name) for name in CLEANED_TABLES} == dict.fromkeys(
            CLEANED_TABLES, 0
        )
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        new_id = conn.execute(
            text(
                "INSERT INTO customers (name, status, created_at) "
                "VALUES ('x', 'active', now()) RETURNING id"
            )
        ).scalar_one()
    assert new_id == 1
