"""Shared fixtures: a real Postgres database built by ``alembic upgrade head``, a live app
(lifespan run, models loaded, meter writer started) and an HTTP client over ASGI.

The database is created once per session under a random name and dropped at the end; tables
are truncated after each test that used it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import datetime

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import create_engine, select, text

from app.config import Settings
from app.db.migrate import alembic_config as alembic_config
from app.db.migrate import upgrade as run_migrations
from app.keys.schemas import CreatedKey, Scope
from app.keys.service import create_key
from app.main import create_app
from app.orm import UsageEvent

PG_HOST = os.environ.get("TOLLGATE_TEST_PG", "postgres@127.0.0.1:5432")
TEST_SECRET = "test-secret-key-0123456789abcdef"


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    return f"postgresql+psycopg://{PG_HOST}/postgres"


@pytest.fixture(scope="session")
def pg_url(pg_admin_url: str) -> Iterator[str]:
    name = f"tollgate_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(pg_admin_url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = f"postgresql://{PG_HOST}/{name}"
    try:
        run_migrations(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def pg_sync(pg_url: str) -> Iterator[object]:
    """A sync engine on the test database, for test set-up and inspection."""
    engine = create_engine(
        pg_url.replace("postgresql://", "postgresql+psycopg://"), pool_pre_ping=True
    )
    yield engine
    with engine.begin() as conn:
        conn.execute(
            text(
                "TRUNCATE audit_log, stripe_events, invoice_lines, invoices, invoice_sequences, "
                "customer_plans, plan_versions, plans, usage_events, api_keys, customers "
                "RESTART IDENTITY CASCADE"
            )
        )
    engine.dispose()


def make_settings(database_url: str, **overrides: object) -> Settings:
    return Settings(
        env="test",
        database_url=database_url,
        secret_key=TEST_SECRET,
        device="cpu",
        **overrides,  # type: ignore[arg-type]
    )


@pytest.fixture
def settings(pg_url: str, pg_sync: object) -> Settings:
    return make_settings(pg_url)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tollgate.test") as c:
        yield c


async def make_key(
    app: FastAPI,
    customer: str = "acme",
    scopes: Sequence[Scope] = (Scope.predict,),
    *,
    expires_at: datetime | None = None,
    allowed_models: list[str] | None = None,
) -> CreatedKey:
    async with app.state.sessionmaker() as session, session.begin():
        return await create_key(
            session,
            app.state.settings.secret_key,
            customer_name=customer,
            scopes=scopes,
            expires_at=expires_at,
            allowed_models=allowed_models,
        )


def bearer(key: CreatedKey | str) -> dict[str, str]:
    secret = key if isinstance(key, str) else key.secret
    return {"Authorization": f"Bearer {secret}"}


async def ledger(app: FastAPI) -> list[UsageEvent]:
    async with app.state.sessionmaker() as session:
        return list((await session.scalars(select(UsageEvent).order_by(UsageEvent.id))).all())


@pytest.fixture
async def dev_key(app: FastAPI) -> CreatedKey:
    return await make_key(app)
