"""The schema comes only from migrations, and the ORM never drifts from them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text

from tests.conftest import PG_HOST, alembic_config, run_migrations


@pytest.fixture
def scratch_pg(pg_admin_url: str) -> Iterator[str]:
    name = f"tollgate_mig_{uuid.uuid4().hex[:8]}"
    admin = create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql://{PG_HOST}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_postgres_upgrade_check_downgrade(scratch_pg: str) -> None:
    run_migrations(scratch_pg)
    command.check(alembic_config(scratch_pg))  # raises if the ORM and migrations differ
    command.downgrade(alembic_config(scratch_pg), "base")
    engine = create_engine(scratch_pg.replace("postgresql://", "postgresql+psycopg://"))
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    engine.dispose()
    run_migrations(scratch_pg)


def test_sqlite_upgrade_and_check(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    run_migrations(url)
    command.check(alembic_config(url))
