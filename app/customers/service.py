"""Customers: create, update, suspend and reactivate, each audited. A suspended customer's
keys get 403 ``customer_suspended`` within the key cache TTL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import exists, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from app.audit.service import Actor, record, snapshot
from app.auth.principal import Principal
from app.customers import repository
from app.customers.errors import CustomerNotFound
from app.customers.schemas import BILLING_FIELDS, BillingDetails, CustomerCreate, CustomerUpdate
from app.db.session import violates_unique
from app.errors import AppError, Unprocessable
from app.money.display import plain
from app.orm import Customer

_FIELDS = ("name", "email", "status", "stripe_customer_id", *BILLING_FIELDS)


class InvalidTaxTreatment(Unprocessable):
    type = "invalid_tax_treatment"


def customer_record(customer: Customer) -> dict[str, Any]:
    """The customer as the CLI prints it: id, account fields, operator flag and billing
    details (the tax rate as in the audit log)."""
    return {
        **snapshot(customer, "id", "created_at", "is_operator"),
        **_snapshot(customer),
    }


def _snapshot(customer: Customer) -> dict[str, Any]:
    """The audited fields; the tax rate as its significant digits ("19", not "19.0000")."""
    data = snapshot(customer, *_FIELDS)
    if customer.tax_rate is not None:
        data["tax_rate"] = plain(customer.tax_rate)
    return data


def _set_billing_details(customer: Customer, data: BillingDetails) -> None:
    """Copy the billing details that were sent (``null`` clears one), then check the tax
    treatment that results: a rate or an exemption, never both, and an exemption says why."""
    for name in BILLING_FIELDS:
        if name in data.model_fields_set:
            value = getattr(data, name)
            setattr(customer, name, bool(value) if name == "tax_exempt" else value)
    if customer.tax_exempt and customer.tax_rate is not None:
        raise InvalidTaxTreatment(
            "a customer has a tax rate or is tax exempt, not both: send tax_rate null to "
            "exempt it, or tax_exempt false to give it a rate",
            details={"tax_rate": plain(customer.tax_rate), "tax_exempt": True},
        )
    if customer.tax_exempt and not customer.tax_note:
        raise InvalidTaxTreatment(
            'a tax-exempt customer needs a tax_note saying why (e.g. "Reverse charge"); '
            "the invoice shows it instead of a tax line"
        )


class CustomerConflict(AppError):
    status_code = 409
    type = "customer_conflict"


class OperatorExists(AppError):
    status_code = 409
    type = "operator_exists"


async def get_operator(session: AsyncSession) -> Customer | None:
    """The operator account: the customer whose keys may hold admin and finance (one at
    most)."""
    return await repository.get_operator(session)


async def _lock_operator(session: AsyncSession) -> Customer | None:
    """The operator account, read while holding a lock that every writer of the operator
    flag takes, so that two commands cannot both find none and both create one. On
    Postgres a transaction-scoped advisory lock; SQLite has one writer at a time."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _OPERATOR_LOCK})
    return await get_operator(session)


# An arbitrary constant: the advisory lock taken by whoever creates the operator account.
_OPERATOR_LOCK = 0x7467_6F70  # "tgop"


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


async def create_customer(
    session: AsyncSession, actor: Actor, data: CustomerCreate, *, operator: bool = False
) -> Customer:
    """A new customer; ``operator``: the operator account, whose keys may hold admin and
    finance (only from the CLI, and only while there is none: 409 ``operator_exists``)."""
    if operator:
        existing = await _lock_operator(session)
        if existing is not None:
            raise OperatorExists(
                f"the operator account already exists: {existing.name!r} (id {existing.id}); "
                f"issue staff keys with `tollgate keys create --operator --scope admin`"
            )
    if await _name_taken(session, data.name):
        raise CustomerConflict(f"a customer named {data.name!r} already exists")
    customer = Customer(name=data.name, email=data.email, tax_exempt=False, is_operator=operator)
    _set_billing_details(customer, data)
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


@dataclass(frozen=True, slots=True)
class OperatorAccount:
    """What ``ensure_operator_account`` found or did."""

    customer: Customer | None  # None: not created, the name belongs to a customer
    created: bool


async def ensure_operator_account(
    session: AsyncSession, actor: Actor, name: str
) -> OperatorAccount:
    """The operator account, created (and audited) under ``name`` if there is none: run by
    ``tollgate migrate``. A customer already called ``name`` is never made the operator (its
    keys would become staff keys): then nothing changes and ``customer`` is None."""
    existing = await _lock_operator(session)
    if existing is not None:
        return OperatorAccount(existing, created=False)
    if await _name_taken(session, name):
        return OperatorAccount(None, created=False)
    customer = Customer(name=name, is_operator=True)
    session.add(customer)
    await _flush_name(session, name)
    await _record_created(session, actor, customer)
    return OperatorAccount(customer, created=True)


async def _record_created(session: AsyncSession, actor: Actor, customer: Customer) -> None:
    after = {**_snapshot(customer), "is_operator": customer.is_operator}
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


def _like_pattern(text: str) -> str:
    """``text`` as a LIKE pattern matching it anywhere, its wildcards taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def search_customers(
    session: AsyncSession,
    *,
    query: str | None = None,
    status: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[Customer], int]:
    """One page of customers whose name contains ``query`` (case-insensitive), optionally
    of one status, by name; and how many match in all (the console's customer list)."""
    conditions: list[ColumnElement[bool]] = []
    if query:
        conditions.append(Customer.name.ilike(_like_pattern(query), escape="\\"))
    if status is not None:
        conditions.append(Customer.status == status)
    total = await session.scalar(select(func.count()).select_from(Customer).where(*conditions))
    rows = await session.scalars(
        select(Customer).where(*conditions).order_by(Customer.name).offset(offset).limit(limit)
    )
    return list(rows), int(total or 0)


async def update_customer(
    session: AsyncSession, actor: Actor, customer_id: int, data: CustomerUpdate
) -> Customer:
    customer = await get_customer(session, customer_id)
    before = _snapshot(customer)
    if data.name is not None and data.name != customer.name:
        if await _name_taken(session, data.name, customer_id):
            raise CustomerConflict(f"a customer named {data.name!r} already exists")
        customer.name = data.name
    if "email" in data.model_fields_set:
        customer.email = data.email
    _set_billing_details(customer, data)
    await _flush_name(session, customer.name)
    await record(
        session,
        actor,
        "customer.update",
        "customer",
        customer_id,
        before=before,
        after=_snapshot(customer),
    )
    return customer


class OwnCustomer(AppError):
    status_code = 409
    type = "own_customer"


class OperatorAccountSuspend(AppError):
    status_code = 409
    type = "operator_account"


async def suspend_customer(session: AsyncSession, actor: Actor, customer_id: int) -> Customer:
    """Every key of the customer gets 403 ``customer_suspended`` within the key cache TTL.

    Through the API a key may not suspend its own customer: that would stop the key doing
    it (409 ``own_customer``). Nor the operator account, whichever key asks (a legacy staff
    key of a customer could otherwise lock every operator key out: 409 ``operator_account``).
    The CLI, run by whoever holds the database, can do both."""
    if isinstance(actor, Principal) and actor.customer_id == customer_id:
        raise OwnCustomer(
            "a key cannot suspend its own customer (it would lock itself, and every admin "
            "key of that customer, out); use `tollgate customers suspend` to do it on purpose"
        )
    if isinstance(actor, Principal) and (await get_customer(session, customer_id)).is_operator:
        raise OperatorAccountSuspend(
            "the operator account cannot be suspended through the API (every admin and "
            "finance key would stop); use `tollgate customers suspend` to do it on purpose"
        )
    return await set_status(session, actor, customer_id, "suspended")


async def reactivate_customer(session: AsyncSession, actor: Actor, customer_id: int) -> Customer:
    return await set_status(session, actor, customer_id, "active")


async def set_status(
    session: AsyncSession, actor: Actor, customer_id: int, status: str
) -> Customer:
    customer = await get_customer(session, customer_id)
    before = _snapshot(customer)
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
        after=_snapshot(customer),
    )
    return customer
