"""The schema comes only from migrations, and the ORM never drifts from them."""

from __future__ import annotations

from alembic import command
from sqlalchemy import create_engine, inspect

from tests.conftest import alembic_config, run_migrations


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
