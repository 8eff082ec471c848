"""Shared fixtures: a real Postgres database built by ``alembic upgrade head``, a live app
(lifespan run, models loaded, meter writer started) and an HTTP client over ASGI.

The database is created once per session under a random name and dropped at the end; every
table the app maps is emptied after each test that used it. Each test gets a fresh app (its
own caches, limiters, metrics and ``ManualClock``), but the models are built once per session
(``LoadedModules``): building them is most of an app's start-up.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Connection, Engine, create_engine, select, text

from app.clock import ManualClock
from app.config import Settings
from app.db.migrate import alembic_config as alembic_config
from app.db.migrate import upgrade as run_migrations
from app.inference.predictor import LoadedModules
from app.keys.schemas import CreatedKey, Scope
from app.keys.service import create_key
from app.main import create_app
from app.orm import Base, UsageEvent
from app.resources import resources
from tests.stripe_standin.server import StripeStandin

PG_HOST = os.environ.get("TOLLGATE_TEST_PG", "postgres@127.0.0.1:5432")
TEST_SECRET = "test-secret-key-0123456789abcdef"


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    return f"postgresql+psycopg://{PG_HOST}/postgres"


@contextmanager
def scratch_database(admin_url: str, prefix: str) -> Iterator[str]:
    """A new, empty Postgres database under a random name, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql://{PG_HOST}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_url(pg_admin_url: str) -> Iterator[str]:
    with scratch_database(pg_admin_url, "tollgate_test") as url:
        run_migrations(url)
        yield url


@pytest.fixture
def scratch_pg(pg_admin_url: str) -> Iterator[str]:
    """An empty database of the test's own (no migrations run), for tests that build one."""
    with scratch_database(pg_admin_url, "tollgate_scratch") as url:
        yield url


@pytest.fixture
def standin() -> Iterator[StripeStandin]:
    """The local Stripe stand-in (tests/stripe_standin), over HTTP, for one test."""
    with StripeStandin() as server:
        yield server


# Every table the app maps, so that a new table cannot leak rows from one test into the next
# (alembic_version is not mapped, so it is kept).
CLEANED_TABLES = tuple(table.name for table in Base.metadata.sorted_tables)
_DELETE_ALL = text(  # children first; the names come from the metadata
    "; ".join(f'DELETE FROM "{name}"' for name in reversed(CLEANED_TABLES))  # noqa: S608
)
# What TRUNCATE ... RESTART IDENTITY restarts: the sequences owned by the tables' columns.
_RESTART_IDS = text(
    "SELECT setval(s.oid, 1, false) FROM pg_class s "
    "JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid "
    "AND d.deptype IN ('a', 'i') "
    "JOIN pg_class t ON t.oid = d.refobjid "
    "WHERE s.relkind = 'S' AND t.relname = ANY(:tables)"
).bindparams(tables=list(CLEANED_TABLES))


def clean_tables(conn: Connection) -> None:
    """Empty every mapped table (children first) and restart their ids. DELETE, not
    TRUNCATE: TRUNCATE makes new files for every table and index, about 30 times slower on
    tables this small, and this runs after hundreds of tests."""
    conn.execute(_DELETE_ALL)
    conn.execute(_RESTART_IDS)


@pytest.fixture(scope="session")
def pg_engine(pg_url: str) -> Iterator[Engine]:
    engine = create_engine(
        pg_url.replace("postgresql://", "postgresql+psycopg://"), pool_pre_ping=True
    )
    yield engine
    engine.dispose()


@pytest.fixture
def pg_sync(pg_engine: Engine) -> Iterator[object]:
    """A sync engine on the test database, for test set-up and inspection; every mapped
    table is emptied after the test."""
    yield pg_engine
    with pg_engine.begin() as conn:
        clean_tables(conn)


# Uploaded archives go to a scratch model store, never to ./var of the checkout.
TEST_MODEL_STORE = Path(tempfile.gettempdir()) / f"tollgate-test-store-{os.getpid()}"


def make_settings(database_url: str, **overrides: object) -> Settings:
    overrides.setdefault("model_store_dir", TEST_MODEL_STORE)
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


@pytest.fixture(scope="session")
def loaded_modules() -> LoadedModules:
    """Models built once for the whole session and shared by the apps that are given it."""
    return LoadedModules()


@pytest.fixture
def clock() -> ManualClock:
    """The app's clock: real time until a test moves it forward."""
    return ManualClock()


@pytest.fixture
async def app(
    settings: Settings, clock: ManualClock, loaded_modules: LoadedModules
) -> AsyncIterator[FastAPI]:
    application = create_app(settings, clock=clock, modules=loaded_modules)
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
    legacy_staff: bool = False,
) -> CreatedKey:
    """A key, unaudited. Admin and finance keys are the operator account's (the first such
    call makes ``customer`` the operator account; later ones use it whatever ``customer``
    says); ``legacy_staff=True`` makes one of ``customer`` as the migration left it."""
    async with resources(app).sessionmaker() as session, session.begin():
        return await create_key(
            session,
            resources(app).settings.secret_key,
            customer_name=customer,
            scopes=scopes,
            expires_at=expires_at,
            allowed_models=allowed_models,
            legacy_staff=legacy_staff,
        )


def bearer(key: CreatedKey | str) -> dict[str, str]:
    secret = key if isinstance(key, str) else key.secret
    return {"Authorization": f"Bearer {secret}"}


async def ledger(app: FastAPI) -> list[UsageEvent]:
    async with resources(app).sessionmaker() as session:
        return list((await session.scalars(select(UsageEvent).order_by(UsageEvent.id))).all())


@pytest.fixture
async def dev_key(app: FastAPI) -> CreatedKey:
    return await make_key(app)
