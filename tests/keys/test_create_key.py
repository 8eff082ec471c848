"""Keys made for a new customer name from several sessions at once share one customer, and
the customer is created inside the caller's transaction on both databases."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from app.customers.repository import get_or_create_customer
from app.db.engine import build_engine, build_sessionmaker
from app.orm import ApiKey, Customer
from app.resources import resources
from tests.conftest import make_key, run_migrations


async def test_concurrent_keys_for_one_new_customer_share_one_row(app: FastAPI) -> None:
    keys = await asyncio.gather(*(make_key(app, "newcomer") for _ in range(12)))
    assert len({k.customer_id for k in keys}) == 1
    async with resources(app).sessionmaker() as session:
        customers = await session.scalar(
            select(func.count()).select_from(Customer).where(Customer.name == "newcomer")
        )
        key_rows = await session.scalar(
            select(func.count())
            .select_from(ApiKey)
            .where(ApiKey.customer_id == keys[0].customer_id)
        )
    assert customers == 1
    assert key_rows == 12


@pytest.fixture(params=["postgres", "sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        request.getfixturevalue("pg_sync")  # tables truncated after the test
        url: str = request.getfixturevalue("pg_url")
        return url
    url = f"sqlite+aiosqlite:///{tmp_path}/tollgate.db"
    run_migrations(url)
    return url


async def test_a_new_customer_is_rolled_back_with_its_transaction(db_url: str) -> None:
    engine = build_engine(db_url)
    sessions = build_sessionmaker(engine)
    try:
        async with sessions() as session:
            created = await get_or_create_customer(session, "fleeting")
            assert created.id is not None
            assert (await get_or_create_customer(session, "fleeting")).id == created.id
            await session.rollback()
        async with sessions() as session:
            assert await session.scalar(select(Customer).where(Customer.name == "fleeting")) is None
    finally:
        await engine.dispose()
