from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.orm import Customer


async def get_operator(session: AsyncSession) -> Customer | None:
    """The operator account (there is at most one)."""
    return await session.scalar(
        select(Customer).where(Customer.is_operator).order_by(Customer.id).limit(1)
    )


async def get_or_create_customer(session: AsyncSession, name: str) -> Customer:
    """The customer called ``name``, created if missing, in the caller's transaction."""
    customer, _ = await get_or_insert_customer(session, name)
    return customer


async def get_or_insert_customer(session: AsyncSession, name: str) -> tuple[Customer, bool]:
    """The customer called ``name`` and whether this call inserted it. Two sessions creating
    the same new name at once both get the one row: the insert does nothing on a name
    conflict (on Postgres it waits for the other transaction first) and the row is read
    back; only the session whose insert wrote the row is told it created it."""
    query = select(Customer).where(Customer.name == name)
    customer = await session.scalar(query)
    if customer is not None:
        return customer, False
    insert = postgres_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    result = await session.execute(
        insert(Customer)
        .values(name=name, status="active")
        .on_conflict_do_nothing(index_elements=[Customer.name])
    )
    customer = await session.scalar(query)
    assert customer is not None  # inserted here, or committed by the session that won
    return customer, int(result.rowcount) == 1  # type: ignore[attr-defined]


async def find_customer(session: AsyncSession, ref: str) -> Customer | None:
    """The customer a person typed: its id (digits) or its exact name (names are unique);
    None when there is none. Both lookups use a unique index."""
    ref = ref.strip()
    if ref.isdigit() and len(ref) <= 18:
        found = await session.get(Customer, int(ref))
        if found is not None:
            return found
    return await session.scalar(select(Customer).where(Customer.name == ref))
