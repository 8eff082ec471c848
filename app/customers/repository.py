from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.session import violates_unique
from app.orm import Customer


async def get_or_create_customer(session: AsyncSession, name: str) -> Customer:
    """The customer called ``name``, created if missing. Two sessions creating the same new
    name at once both get the one row: the loser's insert is undone to a savepoint and the
    winner's row is read instead."""
    query = select(Customer).where(Customer.name == name)
    customer = await session.scalar(query)
    if customer is not None:
        return customer
    try:
        async with session.begin_nested():
            customer = Customer(name=name)
            session.add(customer)
    except IntegrityError as exc:
        if not violates_unique(exc, "customers", "name"):
            raise
        winner = await session.scalar(query)
        if winner is None:  # the winner rolled back after all: nothing to share
            raise
        return winner
    return customer
