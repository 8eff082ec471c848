"""Issue 17: the ledger's foreign keys live on its rollups (migration ledger_keys_on_rollups).

The integrity promised by the old keys on ``usage_events`` must still hold, on both
databases and on both write paths (the writer's one-statement Postgres insert and
``insert_usage``): a row naming an unknown customer or key writes nothing at all, and a
customer or key with usage cannot be deleted."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, replace
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text
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
# Foreign keys on the ledger, its partitions and the rollups: (table, referenced, validated).
_KEYS_SQL = text(
    "SELECT c.conrelid::regclass::text, c.confrelid::regclass::text, c.convalidated "
    "FROM pg_constraint c "
    "WHERE c.contype = 'f' AND c.conrelid::regclass::text LIKE 'usage_%' ORDER BY 1, 2"
)
_MOVED = [("usage_hourly", "api_keys", True), ("usage_hourly", "customers", True)]
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


def test_migration_moves_the_keys_both_ways(scratch_pg: str) -> None:
    """Postgres: rows kept; the ledger (and every partition) holds no foreign key, the
    rollups hold both, validated. Downgrade puts them back."""
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
    assert {t for t, _, _ in before if t != "usage_events"}  # the partitions carry the keys too
    assert ("usage_events", "customers", True) in before

    run_migrations(scratch_pg)
    with engine.connect() as conn:
        assert conn.execute(_KEYS_SQL).all() == _MOVED
        assert conn.scalar(text("SELECT count(*) FROM usage_events")) == 500
    command.check(alembic_config(scratch_pg))

    command.downgrade(alembic_config(scratch_pg), BEFORE)
    with engine.connect() as conn:
        assert conn.execute(_KEYS_SQL).all() == before
        assert conn.scalar(text("SELECT count(*) FROM usage_events")) == 500
    engine.dispose()


def test_an_interrupted_run_is_completed_by_the_next(scratch_pg: str) -> None:
    """The keys are validated after their move is committed, outside a transaction: a run
    killed in between leaves them moved but NOT VALID, and the version not bumped. Running
    the migration again validates them."""
    run_migrations(scratch_pg, BEFORE)
    engine = create_engine(
        scratch_pg.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
    )
    with engine.connect() as conn:
        for stmt in _SEED:
            conn.execute(text(stmt))
        for suffix, column, target in (
            ("api_key_id_api_keys", "api_key_id", "api_keys"),
            ("customer_id_customers", "customer_id", "customers"),
        ):
            conn.execute(
                text(
                    f"ALTER TABLE usage_hourly ADD CONSTRAINT fk_usage_hourly_{suffix} "
                    f"FOREIGN KEY ({column}) REFERENCES {target} (id) NOT VALID"
                )
            )
            conn.execute(text(f"ALTER TABLE usage_events DROP CONSTRAINT fk_usage_events_{suffix}"))
        assert {v for _, _, v in conn.execute(_KEYS_SQL)} == {False}

    run_migrations(scratch_pg)
    with engine.connect() as conn:
        assert conn.execute(_KEYS_SQL).all() == _MOVED
    engine.dispose()
    command.check(alembic_config(scratch_pg))


def test_sqlite_ledger_holds_no_keys_and_rollups_hold_both(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    run_migrations(url)
    engine = create_engine(url)
    keys = {t: inspect(engine).get_foreign_keys(t) for t in ("usage_events", "usage_hourly")}
    engine.dispose()
    assert keys["usage_events"] == []
    assert sorted(
        (k["constrained_columns"], k["referred_table"]) for k in keys["usage_hourly"]
    ) == [
        (["api_key_id"], "api_keys"),
        (["customer_id"], "customers"),
    ]


_WRITES = {
    "usage_events": "INSERT INTO usage_events (request_id, api_key_id, customer_id, endpoint, "
    "items, compute_us, latency_us, status_code, billable, created_at) "
    "VALUES ('midway', 1, 1, 'x', 1, 5, 1, 200, true, now())",
    "usage_hourly": "INSERT INTO usage_hourly (customer_id, hour, api_key_id, model, version, "
    "variant, billable, requests, errors, items, compute_us) "
    "VALUES (1, date_trunc('hour', now()), 1, '', '', '', true, 1, 0, 1, 5)",
    "customers": "SELECT count(*) FROM customers",  # e.g. a console request's first read
}


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("usage_events", "usage_hourly"),
        ("usage_hourly", "usage_events"),
        ("customers", "usage_hourly"),
    ],
)
def test_the_key_move_lets_a_writer_midway_finish(scratch_pg: str, first: str, second: str) -> None:
    """The meter's statement takes usage_events and usage_hourly in an order that depends on
    its plan, and other transactions read a customer before writing usage. One holding its
    first lock when the migration starts must finish, and so must the migration: no deadlock
    in any order (earlier versions of this migration deadlocked in the last two)."""
    run_migrations(scratch_pg, BEFORE)
    engine = create_engine(scratch_pg.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        for stmt in _SEED:
            conn.execute(text(stmt))
    writer = engine.connect()
    writer.execute(text(_WRITES[first]))
    errors: list[BaseException] = []

    def migrate() -> None:
        try:
            run_migrations(scratch_pg)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=migrate)
    thread.start()
    with engine.connect() as watcher:  # wait until the migration is trying for its locks
        seen = False
        for _ in range(2000):
            seen = bool(
                watcher.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                        "AND query LIKE 'LOCK TABLE %'"
                    )
                )
            )
            watcher.rollback()  # pg_stat_activity is a snapshot per transaction
            if seen:
                break
            time.sleep(0.005)
        assert seen
    writer.execute(text(_WRITES[second]))  # may wait for one of the migration's attempts
    writer.commit()
    writer.close()
    thread.join(60)
    assert not thread.is_alive()
    assert errors == []
    with engine.connect() as conn:
        assert conn.execute(_KEYS_SQL).all() == _MOVED
        written = {first, second}
        assert conn.execute(_COUNTS).one() == ("usage_events" in written, 1)
    engine.dispose()


def test_the_drill_migrates_under_eight_writers_without_an_error(
    scratch_pg: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """scripts/drill_online_migration.py on a small ledger: the migration succeeds while eight
    writers commit the meter's statement nonstop, and none of their commits fails."""
    from scripts import drill_online_migration
    from tests.conftest import PG_HOST

    run_migrations(scratch_pg, BEFORE)
    engine = create_engine(scratch_pg.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO customers (id, name, status, created_at) "
                "SELECT i, 'c' || i, 'active', now() FROM generate_series(1, 100) i"
            )
        )
        conn.execute(
            text(
                "INSERT INTO api_keys (id, customer_id, prefix, last_four, hash, scopes, "
                "created_at) SELECT i, i, 'tg_dr' || lpad(i::text, 6, '0'), 'abcd', i::text, "
                "'[\"predict\"]', now() FROM generate_series(1, 100) i"
            )
        )
    monkeypatch.setattr(drill_online_migration, "PG", PG_HOST)
    result = asyncio.run(drill_online_migration.drill(scratch_pg.rsplit("/", 1)[1], 8, 0.001))
    assert result.migration_rc == 0
    assert result.errors == []
    assert len(result.commits) > 8
    with engine.connect() as conn:
        assert conn.execute(_KEYS_SQL).all() == _MOVED
        ledger, rollups = conn.execute(
            text("SELECT (SELECT count(*) FROM usage_events), "
                 "(SELECT sum(requests) FROM usage_hourly)")
        ).one()  # fmt: skip
    engine.dispose()
    assert ledger == rollups == 3 * len(result.commits)
