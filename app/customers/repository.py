from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.orm import Customer


async def get_or_create_customer(session: AsyncSession, name: str) -> Customer:
    customer = await session.scalar(select(Customer).where(Customer.name == name))
    if customer is None:
        customer = Customer(name=name)
        session.add(customer)
        await session.flush()
    return customer
