"""Engine construction for both backends (asyncpg for Postgres, aiosqlite for SQLite)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as AsyncSession


def normalize_url(url: str) -> str:
    """Accept plain ``postgresql://`` / ``sqlite://`` URLs and pick the async driver."""
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres", "postgresql+psycopg2", "postgresql+psycopg"):
        u = u.set(drivername="postgresql+asyncpg")
    elif u.drivername == "sqlite":
        u = u.set(drivername="sqlite+aiosqlite")
    return u.render_as_string(hide_password=False)


def build_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    url = normalize_url(url)
    u = make_url(url)
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 5}
    else:
        kwargs.update(
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_timeout=5,
            # Timestamps are always UTC; the statement timeout keeps a stuck database from
            # holding a request forever.
            connect_args={
                "server_settings": {"timezone": "UTC", "application_name": "tollgate"},
                "command_timeout": 10,
                "timeout": 5,
            },
        )
    engine = create_async_engine(url, **kwargs)
    if u.get_backend_name() == "sqlite":
        _configure_sqlite(engine)
    return engine


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=5000")
        cur.close()


def build_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


async def ping(engine: AsyncEngine, timeout_s: float = 2.0) -> None:
    """Raise unless the database answers ``SELECT 1`` within ``timeout_s`` (readiness)."""
    async with asyncio.timeout(timeout_s):
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
