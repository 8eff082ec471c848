"""Alembic environment: runs migrations through the app's own async engine.

Two ways in: ``app.db.migrate.alembic_config`` (``tollgate migrate``, the tests; no ini file,
the URL in ``config.attributes["database_url"]``) and the developer's ``alembic`` command with
the top-level ``alembic.ini`` (the URL from TOLLGATE_DATABASE_URL, logging from the ini).
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection

from app.config import get_settings
from app.db.engine import build_engine, normalize_url
from app.orm import Base
from app.orm.usage import PARTITION_NAME

config = context.config
if config.config_file_name is not None:  # the alembic command with alembic.ini
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _url() -> str:
    return normalize_url(config.attributes.get("database_url") or get_settings().database_url)


def _include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """The ledger's partitions are not mapped: they are the partitioned table's storage."""
    return not (type_ == "table" and name is not None and PARTITION_NAME.match(name))


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_name=_include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    engine = build_engine(_url(), pool_size=1)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_configure)
            await conn.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
