"""Keys made for a new customer name from several sessions at once share one customer."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI
from sqlalchemy import func, select

from app.orm import ApiKey, Customer
from tests.conftest import make_key


async def test_concurrent_keys_for_one_new_customer_share_one_row(app: FastAPI) -> None:
    keys = await asyncio.gather(*(make_key(app, "newcomer") for _ in range(12)))
    assert len({k.customer_id for k in keys}) == 1
    async with app.state.sessionmaker() as session:
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
