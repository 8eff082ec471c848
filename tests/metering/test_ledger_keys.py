"""Issue 17: the ledger's foreign keys live on its rollups (migration ledger_keys_on_rollups).

The integrity promised by the old keys on ``usage_events`` must still hold, on both
databases and on both write paths (the writer's one-statement Postgres insert and
``insert_usage``): a row naming an unknown customer or key writes nothing at all, and a
customer or key with usage cannot be deleted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import asdict, replace
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.engine import build_engine
from app.metering.rollups import insert_usage
from app.metering.writer import LedgerUnavailable, MeterWriter
from app.observability.metrics import Metrics
from tests.conftest import alembic_config, run_migrations
from tests.metering.ledger_writer_proc import row

BEFORE = "e5f607182930"  # ledger_partitions: the revision before the keys moved

_SEED = (
    "INSERT INTO customers (id, name, status, created_at) VALUES "
    "(1, 'one', 'active', CURRENT_TIMESTAMP), (2, 'two', 'active', CURRENT_TIMESTAMP)",
    "INSERT INTO api_keys (id, customer_id, prefix, last_four, hash, scopes, created_at) VALUES "
    "(1, 1, 'tg_keys0001', 'abcd', '1', '[\"predict\"]', CURRENT_TIMESTAMP), "
    "(2, 2, 'tg_keys0002', 'abcd', '2', '[\"predict\"]', CURRENT_TIMESTAMP)",
)
_KEYS_SQL = text(
    "SELECT c.conrelid::regclass::text, c.confrelid::regclass::text FROM pg_constraint c "
    "WHERE c.contype = 'f' AND c.conrelid::regclass::text LIKE 'usage_%' ORDER BY 1, 2"
)
_METHOD = text(
    "SELECT am.amname FROM pg_class i JOIN pg_am am ON am.oid = i.relam "
    "WHERE i.relname = 'ix_usage_events_created_at'"
)
_PARTITION_METHODS = text(
    "SELECT DISTINCT am.amname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
    "JOIN pg_am am ON am.oid = i.relam JOIN pg_inherits h ON h.inhrelid = x.indrelid "
    "WHERE h.inhparent = 'usage_events'::regclass AND x.indkey::text = "
    "(SELECT attnum::text FROM pg_attribute WHERE attrelid = 'usage_events'::regclass "
    "AND attname = 'created_at')"
)

_COUNTS = text("SELECT (SELECT count(*) FROM usage_events), (SELECT count(*) FROM usage_hourly)")


@pytest.fixture(params=["postgresql", "sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database with customers 1 and 2, each with its key (1 and 2)."""
    if request.param == "postgresql":
        url: str = request.getfixturevalue("scratch_pg")
    else:
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
    run_migrations(url)
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        for stmt in _SEED:
            conn.execute(text(stmt))
    engine.dispose()
    return url


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = build_engine(db_url, pool_size=2)
    yield engine
    await engine.dispose()


async def _counts(engine: AsyncEngine) -> tuple[int, int]:
    async with engine.connect() as conn:
        ledger, rollups = (await conn.execute(_COUNTS)).one()
    return ledger, rollups


@pytest.mark.parametrize(
    "change", [{"api_key_id": 99}, {"customer_id": 99}], ids=["unknown-key", "unknown-customer"]
)
async def test_insert_usage_refuses_an_unknown_key_or_customer(
    db: AsyncEngine, change: dict[str, int]
) -> None:
    good = asdict(row(0)) | {"api_key_id": 1, "customer_id": 1}
    bad = asdict(row(1)) | {"api_key_id": 1, "customer_id": 1} | change
    with pytest.raises(IntegrityError):
        async with db.begin() as conn:
            await insert_usage(conn, [good, bad])
    assert await _counts(db) == (0, 0)  # neither row, nor any rollup
    async with db.begin() as conn:
        assert await insert_usage(conn, [good]) == 1
    assert await _counts(db) == (1, 1)


@pytest.mark.parametrize(
    "change", [{"api_key_id": 99}, {"customer_id": 99}], ids=["unknown-key", "unknown-customer"]
)
async def test_the_writer_refuses_an_unknown_key_or_customer(
    db: AsyncEngine, change: dict[str, int]
) -> None:
    """The meter's hot path (on Postgres its one-statement insert) answers 503 for such a
    row and writes none of it; a row naming a known key after it is committed as usual."""
    writer = MeterWriter(db, Metrics(), lanes=1)
    writer.start()
    try:
        with pytest.raises(LedgerUnavailable):
            await writer.record(replace(row(1), **({"api_key_id": 1, "customer_id": 1} | change)))
        assert await _counts(db) == (0, 0)
        await writer.record(replace(row(2), api_key_id=2, customer_id=2))
    finally:
        await writer.stop()
    assert await _counts(db) == (1, 1)


async def test_a_key_with_usage_cannot_be_deleted(db: AsyncEngine) -> None:
    async with db.begin() as conn:
        await insert_usage(conn, [asdict(row(0)) | {"api_key_id": 1, "customer_id": 1}])
    with pytest.raises(IntegrityError):
        async with db.begin() as conn:
            await conn.execute(text("DELETE FROM api_keys WHERE id = 1"))
    async with db.begin() as conn:  # key 2 has no usage: it can go
        await conn.execute(text("DELETE FROM api_keys WHERE id = 2"))
    assert await _counts(db) == (1, 1)


async def test_a_customer_with_usage_cannot_be_deleted(db: AsyncEngine) -> None:
    """Customer 1's usage is recorded under customer 2's key, so that once customer 1's own
    key is gone, only the usage references customer 1."""
    async with db.begin() as conn:
        await insert_usage(conn, [asdict(row(0)) | {"api_key_id": 2, "customer_id": 1}])
        await conn.execute(text("DELETE FROM api_keys WHERE id = 1"))
    with pytest.raises(IntegrityError):
        async with db.begin() as conn:
            await conn.execute(text("DELETE FROM customers WHERE id = 1"))
    assert await _counts(db) == (1, 1)


def test_migration_moves_the_keys_and_makes_the_time_index_brin(scratch_pg: str) -> None:
    """Postgres: rows kept; the ledger (and every partition) holds no foreign key, the
    rollups hold both; the time index is BRIN. Downgrade puts all of it back."""
    run_migrations(scratch_pg, BEFORE)
    engine = create_engine(scratch_pg.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        for stmt in _SEED:
            conn.execute(text(stmt))
        conn.execute(
            text(
                "INSERT INTO usage_events (request_id, api_key_id, customer_id, endpoint, items, "
                "compute_us, latency_us, status_code, billable, created_at) SELECT 'r-' || i, "
                "1 + i % 2, 1 + i % 2, 'x', 1, i, 1, 200, true, "
                "now() - make_interval(hours => i) FROM generate_series(1, 500) i"
            )
        )
    with engine.connect() as conn:
        before = conn.execute(_KEYS_SQL).all()
        assert conn.scalar(_METHOD) == "btree"
    assert {t for t, _ in before if t != "usage_events"}  # the partitions carry the keys too
    assert ("usage_events", "customers") in before

    run_migrations(scratch_pg)
    with engine.connect() as conn:
        assert conn.execute(_KEYS_SQL).all() == [
            ("usage_hourly", "api_keys"),
            ("usage_hourly", "customers"),
        ]
        assert conn.scalar(_METHOD) == "brin"
        assert conn.execute(_PARTITION_METHODS).scalars().all() == ["brin"]
        assert conn.scalar(text("SELECT count(*) FROM usage_events")) == 500
    command.check(alembic_config(scratch_pg))

    command.downgrade(alembic_config(scratch_pg), BEFORE)
    with engine.connect() as conn:
        assert conn.execute(_KEYS_SQL).all() == before
        assert conn.scalar(_METHOD) == "btree"
        assert conn.scalar(text("SELECT count(*) FROM usage_events")) == 500
    engine.dispose()


def test_an_interrupted_run_is_completed_by_the_next(scratch_pg: str) -> None:
    """The index is built outside a transaction, so a killed migration leaves work half done:
    one key moved, the new parent index, one partition's index attached, another's built but
    not attached, and a partition the partition job created meanwhile. Running the migration
    again finishes it, with one index on created_at per partition."""
    run_migrations(scratch_pg, BEFORE)
    engine = create_engine(
        scratch_pg.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
    )
    with engine.connect() as conn:
        for stmt in _SEED:
            conn.execute(text(stmt))
        parts = conn.scalars(
            text(
                "SELECT c.relname FROM pg_inherits h JOIN pg_class c ON c.oid = h.inhrelid "
                "WHERE h.inhparent = 'usage_events'::regclass ORDER BY c.relname"
            )
        ).all()
        for stmt in (
            "ALTER TABLE usage_hourly ADD CONSTRAINT fk_usage_hourly_api_key_id_api_keys "
            "FOREIGN KEY (api_key_id) REFERENCES api_keys (id)",
            "ALTER TABLE usage_events DROP CONSTRAINT fk_usage_events_api_key_id_api_keys",
            "CREATE INDEX ix_usage_events_created_at_brin ON ONLY usage_events USING brin "
            "(created_at)",
            f"CREATE INDEX {parts[0]}_created_at_brin ON {parts[0]} USING brin (created_at)",
            f"ALTER INDEX ix_usage_events_created_at_brin ATTACH PARTITION "
            f"{parts[0]}_created_at_brin",
            f"CREATE INDEX {parts[1]}_created_at_brin ON {parts[1]} USING brin (created_at)",
            "CREATE TABLE usage_events_p2031_01 PARTITION OF usage_events "
            "FOR VALUES FROM ('2031-01-01 00:00:00+00') TO ('2031-02-01 00:00:00+00')",
        ):
            conn.execute(text(stmt))

    run_migrations(scratch_pg)
    with engine.connect() as conn:
        assert conn.execute(_KEYS_SQL).all() == [
            ("usage_hourly", "api_keys"),
            ("usage_hourly", "customers"),
        ]
        assert conn.scalar(_METHOD) == "brin"
        assert conn.scalar(
            text("SELECT indisvalid FROM pg_index WHERE indexrelid = "
                 "'ix_usage_events_created_at'::regclass")
        )  # fmt: skip
        per_partition = conn.execute(
            text(
                "SELECT c.relname, count(x.indexrelid) FROM pg_inherits h "
                "JOIN pg_class c ON c.oid = h.inhrelid "
                "LEFT JOIN pg_index x ON x.indrelid = c.oid AND x.indkey::text = "
                "(SELECT attnum::text FROM pg_attribute WHERE attrelid = c.oid "
                "AND attname = 'created_at') "
                "WHERE h.inhparent = 'usage_events'::regclass GROUP BY 1 ORDER BY 1"
            )
        ).all()
        assert conn.execute(_PARTITION_METHODS).scalars().all() == ["brin"]
    engine.dispose()
    assert "usage_events_p2031_01" in dict(per_partition)
    assert {n for _, n in per_partition} == {1}
    command.check(alembic_config(scratch_pg))
