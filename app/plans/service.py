"""Price plans: versioned definitions, and which version each customer is on when.

A plan is never edited in place: an update writes version n+1. Customers are assigned a
specific version from a moment on (the next period's start by default, or now); invoices
reference the versions they were rated with, so history never changes under them.

Each write (create, new version, archive, assignment) records its audit row in its own
transaction; the API and the CLI call the same functions.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import Actor, record, snapshot
from app.customers.errors import CustomerNotFound
from app.db.session import violates_unique
from app.money.periods import Period
from app.money.pricing import PriceComponent, PricingError
from app.orm import Customer, CustomerPlan, InvoiceLine, Plan, PlanVersion
from app.plans.errors import (
    InvalidPlan,
    PlanConflict,
    PlanInUse,
    PlanNotFound,
)
from app.plans.schemas import Effective, PlanAssign, PlanCreate, PlanDefinition


def _components(definition: PlanDefinition) -> list[dict[str, Any]]:
    out = []
    for i, component in enumerate(definition.components):
        try:
            out.append(PriceComponent.from_dict(component.model_dump(mode="json")).to_dict())
        except PricingError as exc:
            raise InvalidPlan(f"component {i}: {exc}", details={"component": i}) from None
    return out


_VERSION_FIELDS = (
    "version",
    "currency",
    "base_fee",
    "components",
    "requests_per_minute",
    "items_per_minute",
    "spend_cap",
)


def _amount(value: Decimal | None) -> str | None:
    # One spelling whether the version was just written ("3") or read back from its
    # NUMERIC(24, 10) column ("3.0000000000"), so that before and after compare.
    return None if value is None else format(value.normalize(), "f")


def _audited(plan: Plan, version: PlanVersion) -> dict[str, Any]:
    """A version as the audit log keeps it: what it charges, without ids or timestamps."""
    return {
        "name": plan.name,
        **snapshot(version, *_VERSION_FIELDS),
        "base_fee": _amount(version.base_fee),
        "spend_cap": _amount(version.spend_cap),
    }


def _version(plan: Plan, number: int, definition: PlanDefinition) -> PlanVersion:
    return PlanVersion(
        plan_id=plan.id,
        version=number,
        currency=definition.currency.lower(),
        base_fee=definition.base_fee,
        components=_components(definition),
        requests_per_minute=definition.requests_per_minute,
        items_per_minute=definition.items_per_minute,
        spend_cap=definition.spend_cap,
    )


async def create_plan(
    session: AsyncSession, actor: Actor, data: PlanCreate
) -> tuple[Plan, list[PlanVersion]]:
    if await session.scalar(select(exists().where(Plan.name == data.name))):
        raise PlanConflict(f"a plan named {data.name!r} already exists")
    plan = Plan(name=data.name)
    session.add(plan)
    try:
        await session.flush()
    except IntegrityError as exc:
        # A concurrent create of the same name committed after the check above.
        if violates_unique(exc, "plans", "name"):
            raise PlanConflict(f"a plan named {data.name!r} already exists") from None
        raise
    version = _version(plan, 1, data)
    session.add(version)
    await session.flush()
    await record(session, actor, "plan.create", "plan", plan.id, after=_audited(plan, version))
    return plan, [version]


async def get_plan(session: AsyncSession, plan_id: int) -> tuple[Plan, list[PlanVersion]]:
    plan = await session.get(Plan, plan_id)
    if plan is None:
        raise PlanNotFound(f"plan {plan_id} does not exist")
    versions = list(
        await session.scalars(
            select(PlanVersion).where(PlanVersion.plan_id == plan_id).order_by(PlanVersion.version)
        )
    )
    return plan, versions


async def list_plans(session: AsyncSession) -> list[tuple[Plan, list[PlanVersion]]]:
    plans = list(await session.scalars(select(Plan).order_by(Plan.id)))
    versions = list(await session.scalars(select(PlanVersion).order_by(PlanVersion.version)))
    by_plan: dict[int, list[PlanVersion]] = {}
    for v in versions:
        by_plan.setdefault(v.plan_id, []).append(v)
    return [(p, by_plan.get(p.id, [])) for p in plans]


async def update_plan(
    session: AsyncSession, actor: Actor, plan_id: int, definition: PlanDefinition
) -> tuple[Plan, list[PlanVersion]]:
    """Write the definition as the plan's next version; nothing existing changes."""
    plan, versions = await get_plan(session, plan_id)
    if plan.archived_at is not None:
        raise PlanConflict("an archived plan cannot be changed")
    version = _version(plan, versions[-1].version + 1, definition)
    session.add(version)
    await session.flush()
    await record(
        session,
        actor,
        "plan.update",
        "plan",
        plan.id,
        before=_audited(plan, versions[-1]),
        after=_audited(plan, version),
    )
    return plan, [*versions, version]


async def archive_plan(session: AsyncSession, actor: Actor, plan_id: int, *, now: datetime) -> None:
    """Archive a plan nobody uses. In use: any customer assigned to any of its versions (now
    or from a future date), or any invoice line rated with one. History stays readable."""
    plan, versions = await get_plan(session, plan_id)
    ids = [v.id for v in versions]
    assigned = await session.scalar(
        select(func.count()).select_from(CustomerPlan).where(CustomerPlan.plan_version_id.in_(ids))
    )
    invoiced = await session.scalar(
        select(func.count()).select_from(InvoiceLine).where(InvoiceLine.plan_version_id.in_(ids))
    )
    if assigned or invoiced:
        raise PlanInUse(
            f"plan {plan.name!r} is in use",
            details={"customer_assignments": assigned, "invoice_lines": invoiced},
        )
    if plan.archived_at is not None:
        return  # archived already: nothing to change or record
    plan.archived_at = now
    await session.flush()
    await record(session, actor, "plan.archive", "plan", plan.id, after={"name": plan.name})


async def assign_plan(
    session: AsyncSession,
    actor: Actor,
    customer_id: int,
    data: PlanAssign,
    *,
    now: datetime,
) -> tuple[CustomerPlan, Plan, PlanVersion]:
    """Put a customer on a plan version from the next period (default) or from now.

    An immediate change splits the current period: each part is rated under its own version.
    Both parts must bill in the same currency, since an invoice has one currency.
    """
    # Assignments of one customer take turns: on Postgres the customer row is locked (FOR NO
    # KEY UPDATE, which leaves foreign-key checks of other writers alone) until commit, so
    # the next one sees, and supersedes, what the previous one wrote. SQLite has one writer.
    customer = await session.scalar(
        select(Customer).where(Customer.id == customer_id).with_for_update(key_share=True)
    )
    if customer is None:
        raise CustomerNotFound(f"customer {customer_id} does not exist")
    plan, versions = await get_plan(session, data.plan_id)
    if plan.archived_at is not None:
        raise PlanConflict("an archived plan cannot be assigned")
    if data.version is None:
        version = versions[-1]
    else:
        match = [v for v in versions if v.version == data.version]
        if not match:
            raise PlanNotFound(f"plan {plan.id} has no version {data.version}")
        version = match[0]
    effective = (
        now if data.effective is Effective.immediately else Period.containing(now).next().start
    )
    if data.effective is Effective.immediately:
        current = await plan_version_at(session, customer_id, now)
        if current is not None and current.currency != version.currency:
            raise PlanConflict(
                "an immediate change must keep the currency "
                f"({current.currency} → {version.currency}); change it from the next period"
            )
    # A later assignment supersedes pending ones that would start at or after it.
    await session.execute(
        delete(CustomerPlan)
        .where(CustomerPlan.customer_id == customer_id, CustomerPlan.effective_from >= effective)
        .execution_options(synchronize_session=False)
    )
    assignment = CustomerPlan(
        customer_id=customer_id, plan_version_id=version.id, effective_from=effective
    )
    session.add(assignment)
    await session.flush()
    await record(
        session,
        actor,
        "customer.plan",
        "customer",
        customer_id,
        after={
            "plan_id": plan.id,
            "version": version.version,
            **snapshot(assignment, "plan_version_id", "effective_from"),
        },
    )
    return assignment, plan, version


async def plan_version_at(
    session: AsyncSession, customer_id: int, moment: datetime
) -> PlanVersion | None:
    return await session.scalar(
        select(PlanVersion)
        .join(CustomerPlan, CustomerPlan.plan_version_id == PlanVersion.id)
        .where(CustomerPlan.customer_id == customer_id, CustomerPlan.effective_from <= moment)
        .order_by(CustomerPlan.effective_from.desc(), CustomerPlan.id.desc())
        .limit(1)
    )


async def plan_segments(
    session: AsyncSession, customer_id: int, start: datetime, end: datetime
) -> list[tuple[PlanVersion, datetime, datetime]]:
    """The plan versions in force over [start, end), as consecutive (version, from, to)."""
    first = await plan_version_at(session, customer_id, start)
    rows = (
        await session.execute(
            select(CustomerPlan.effective_from, PlanVersion)
            .join(PlanVersion, PlanVersion.id == CustomerPlan.plan_version_id)
            .where(
                CustomerPlan.customer_id == customer_id,
                CustomerPlan.effective_from > start,
                CustomerPlan.effective_from < end,
            )
            .order_by(CustomerPlan.effective_from, CustomerPlan.id)
        )
    ).all()
    changes: list[tuple[datetime, PlanVersion | None]] = [(start, first)]
    changes += [(at, version) for at, version in rows]
    segments = []
    for i, (at, version) in enumerate(changes):
        until = changes[i + 1][0] if i + 1 < len(changes) else end
        if version is not None and until > at:
            segments.append((version, at, until))
    return segments
