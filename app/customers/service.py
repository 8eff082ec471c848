"""Customers: create, update, suspend and reactivate, each audited. A suspended customer's
keys get 403 ``customer_suspended`` within the key cache TTL."""

from __future__ import annotations

from sqlalchemy import exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import Actor, record, snapshot
from app.auth.principal import Principal
from app.customers import repository
from app.customers.errors import CustomerNotFound
from app.customers.schemas import CustomerCreate, CustomerUpdate
from app.db.session import violates_unique
from app.errors import AppError
from app.orm import Customer

_FIELDS = ("name", "email", "status", "stripe_customer_id")


class CustomerConflict(AppError):
    status_code = 409
    type = "customer_conflict"


async def _name_taken(session: AsyncSession, name: str, except_id: int | None = None) -> bool:
    stmt = exists().where(Customer.name == name)
    if except_id is not None:
        stmt = stmt.where(Customer.id != except_id)
    return bool(await session.scalar(select(stmt)))


async def _flush_name(session: AsyncSession, name: str) -> None:
    """Flush, turning the loser of a concurrent race for ``name`` into a 409: the check
    before the write cannot see a row that another transaction has not committed yet."""
    try:
        await session.flush()
    except IntegrityError as exc:
        if violates_unique(exc, "customers", "name"):
            raise CustomerConflict(f"a customer named {name!r} already exists") from None
        raise


async def create_customer(session: AsyncSession, actor: Actor, data: CustomerCreate) -> Customer:
    if await _name_taken(session, data.name):
        raise CustomerConflict(f"a customer named {data.name!r} already exists")
    customer = Customer(name=data.name, email=data.email)
    session.add(customer)
    await _flush_name(session, data.name)
    await _record_created(session, actor, customer)
    return customer


async def ensure_customer(session: AsyncSession, actor: Actor, name: str) -> Customer:
    """The customer called ``name``; created (and the creation audited) if missing. For the
    CLI's ``keys create --customer NAME``, which bootstraps an empty database."""
    customer, created = await repository.get_or_insert_customer(session, name)
    if created:
        await _record_created(session, actor, customer)
    return customer


async def _record_created(session: AsyncSession, actor: Actor, customer: Customer) -> None:
    after = snapshot(customer, *_FIELDS)
    await record(session, actor, "customer.create", "customer", customer.id, after=after)


async def get_customer(session: AsyncSession, customer_id: int) -> Customer:
    customer = await session.get(Customer, customer_id)
    if customer is None:
        raise CustomerNotFound(f"customer {customer_id} does not exist")
    return customer


async def list_customers(session: AsyncSession, status: str | None = None) -> list[Customer]:
    stmt = select(Customer).order_by(Customer.id)
    if status is not None:
        stmt = stmt.where(Customer.status == status)
    return list(await session.scalars(stmt))


async def update_customer(
    session: AsyncSession, actor: Actor, customer_id: int, data: CustomerUpdate
) -> Customer:
    customer = await get_customer(session, customer_id)
    before = snapshot(customer, *_FIELDS)
    if data.name is not None and data.name != customer.name:
        if await _name_taken(session, data.name, customer_id):
            raise CustomerConflict(f"a customer named {data.name!r} already exists")
        customer.name = data.name
    if "email" in data.model_fields_set:
        customer.email = data.email
    await _flush_name(session, customer.name)
    await record(
        session,
        actor,
        "customer.update",
        "customer",
        customer_id,
        before=before,
        after=snapshot(customer, *_FIELDS),
    )
    return customer


class OwnCustomer(AppError):
    status_code = 409
    type = "own_customer"


async def suspend_customer(session: AsyncSession, actor: Actor, customer_id: int) -> Customer:
    """Every key of the customer gets 403 ``customer_suspended`` within the key cache TTL.

    A key may not suspend its own customer: that would stop the key doing it, and if it is
    the operator's customer, every admin key with it (409 ``own_customer``). The CLI, run by
    whoever holds the database, can."""
    if isinstance(actor, Principal) and actor.customer_id == customer_id:
        raise OwnCustomer(
            "a key cannot suspend its own customer (it would lock itself, and every admin "
            "key of that customer, out); use `tollgate customers suspend` to do it on purpose"
        )
    return await set_status(session, actor, customer_id, "suspended")


async def reactivate_customer(session: AsyncSession, actor: Actor, customer_id: int) -> Customer:
    return await set_status(session, actor, customer_id, "active")


async def set_status(
    session: AsyncSession, actor: Actor, customer_id: int, status: str
) -> Customer:
    customer = await get_customer(session, customer_id)
    before = snapshot(customer, *_FIELDS)
    customer.status = status
    await session.flush()
    action = "customer.suspend" if status == "suspended" else "customer.reactivate"
    await record(
        session,
        actor,
        action,
        "customer",
        customer_id,
        before=before,
        after=snapshot(customer, *_FIELDS),
    )
    return customer
