from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from app.metering.schemas import GroupBy, UsageBucket, UsageCell
from app.orm import UsageEvent


@dataclass(frozen=True, slots=True)
class ModelTotals:
    model: str
    variant: str  # "" for the base model
    requests: int
    items: int
    compute_us: int

    @property
    def ref(self) -> str:
        """The model as called: ``cnn`` or ``cnn:int8``."""
        return f"{self.model}:{self.variant}" if self.variant else self.model


def _day(dialect: str) -> ColumnElement[Any]:
    if dialect == "sqlite":
        return func.strftime("%Y-%m-%d", UsageEvent.created_at)
    # Connections run with timezone=UTC, so the cast buckets by UTC day.
    return func.to_char(func.date_trunc("day", UsageEvent.created_at), "YYYY-MM-DD")


def _variant() -> ColumnElement[str]:
    """The row's variant, "" for the base model (stored as NULL)."""
    return func.coalesce(UsageEvent.variant, "")


def model_ref() -> ColumnElement[str]:
    """The model as called, variants apart: ``cnn`` or ``cnn:int8`` (the ledger keeps the
    name and the variant in two columns; a report by model must not merge variants)."""
    model = func.coalesce(UsageEvent.model, "")
    variant = _variant()
    return case((variant == "", model), else_=model + ":" + variant)


def _measures() -> tuple[ColumnElement[Any], ...]:
    """What every usage aggregate sums, labelled: requests, billable (requests), errors
    (status >= 400), items, compute_us."""
    return (
        func.count().label("requests"),
        func.sum(case((UsageEvent.billable, 1), else_=0)).label("billable"),
        func.sum(case((UsageEvent.status_code >= 400, 1), else_=0)).label("errors"),
        func.coalesce(func.sum(UsageEvent.items.cast(Integer)), 0).label("items"),
        func.coalesce(func.sum(UsageEvent.compute_us), 0).label("compute_us"),
    )


async def usage_buckets(
    session: AsyncSession, customer_id: int, start: datetime, end: datetime, group_by: GroupBy
) -> list[UsageBucket]:
    dialect = session.get_bind().dialect.name
    keys = {GroupBy.day: _day(dialect), GroupBy.model: model_ref(), GroupBy.variant: _variant()}
    key = keys[group_by]
    stmt = (
        select(
            key.label("key"),
            *_measures(),
        )
        .where(
            UsageEvent.customer_id == customer_id,
            UsageEvent.created_at >= start,
            UsageEvent.created_at < end,
        )
        .group_by(key)
        .order_by(key)
    )
    rows = (await session.execute(stmt)).all()
    return [
        UsageBucket(
            key=str(r.key),
            requests=int(r.requests),
            billable_requests=int(r.billable or 0),
            errors=int(r.errors or 0),
            items=int(r.items),
            compute_us=int(r.compute_us),
            compute_ms=int(r.compute_us) / 1000,
        )
        for r in rows
    ]


async def usage_cells(
    session: AsyncSession, customer_id: int, start: datetime, end: datetime
) -> list[UsageCell]:
    """The customer's usage in ``[start, end)`` by UTC day, model and variant, aggregated in
    SQL on the (customer_id, created_at) index: one row per cell, never per request."""
    day = _day(session.get_bind().dialect.name)
    model = func.coalesce(UsageEvent.model, "")
    variant = _variant()
    stmt = (
        select(
            day.label("day"),
            model.label("model"),
            variant.label("variant"),
            *_measures(),
        )
        .where(
            UsageEvent.customer_id == customer_id,
            UsageEvent.created_at >= start,
            UsageEvent.created_at < end,
        )
        .group_by(day, model, variant)
        .order_by(day, model, variant)
    )
    return [
        UsageCell(
            day=str(r.day),
            model=str(r.model),
            variant=str(r.variant),
            requests=int(r.requests),
            billable_requests=int(r.billable or 0),
            errors=int(r.errors or 0),
            items=int(r.items),
            compute_us=int(r.compute_us),
        )
        for r in (await session.execute(stmt)).all()
    ]


async def billable_totals(
    session: AsyncSession, start: datetime, end: datetime
) -> list[ModelTotals]:
    """Billable requests, items and compute time per model and variant in ``[start, end)``,
    all customers together (the ledger behind tollgate_billable_month_to_date)."""
    variant = _variant()
    stmt = (
        select(
            UsageEvent.model,
            variant.label("variant"),
            func.count().label("requests"),
            func.coalesce(func.sum(UsageEvent.items.cast(Integer)), 0).label("items"),
            func.coalesce(func.sum(UsageEvent.compute_us), 0).label("compute_us"),
        )
        .where(
            UsageEvent.billable.is_(True),
            UsageEvent.created_at >= start,
            UsageEvent.created_at < end,
        )
        .group_by(UsageEvent.model, variant)
    )
    return [
        ModelTotals(r.model or "", str(r.variant), int(r.requests), int(r.items), int(r.compute_us))
        for r in (await session.execute(stmt)).all()
    ]


@dataclass(frozen=True, slots=True)
class DayTotals:
    day: str
    requests: int
    billable_requests: int
    errors: int
    items: int


async def totals_by_day(session: AsyncSession, start: datetime, end: datetime) -> list[DayTotals]:
    """Requests, billable requests, errors and items per UTC day in ``[start, end)``, all
    customers together (the console's overview), days without usage left out."""
    day = _day(session.get_bind().dialect.name)
    stmt = (
        select(
            day.label("day"),
            *_measures()[:4],
        )
        .where(UsageEvent.created_at >= start, UsageEvent.created_at < end)
        .group_by(day)
        .order_by(day)
    )
    return [
        DayTotals(
            str(r.day), int(r.requests), int(r.billable or 0), int(r.errors or 0), int(r.items)
        )
        for r in (await session.execute(stmt)).all()
    ]


@dataclass(frozen=True, slots=True)
class DayModelTotals:
    day: str
    model: str  # as called, variants apart: cnn, cnn:int8
    requests: int
    items: int


async def customer_usage_by_day_and_model(
    session: AsyncSession, customer_id: int, start: datetime, end: datetime
) -> list[DayModelTotals]:
    """A customer's requests and items per UTC day and model (as called: variants apart)
    in ``[start, end)``."""
    day = _day(session.get_bind().dialect.name)
    model = model_ref()
    stmt = (
        select(
            day.label("day"),
            model.label("model"),
            func.count().label("requests"),
            func.coalesce(func.sum(UsageEvent.items.cast(Integer)), 0).label("items"),
        )
        .where(
            UsageEvent.customer_id == customer_id,
            UsageEvent.created_at >= start,
            UsageEvent.created_at < end,
        )
        .group_by(day, model)
        .order_by(day, model)
    )
    return [
        DayModelTotals(str(r.day), str(r.model), int(r.requests), int(r.items))
        for r in (await session.execute(stmt)).all()
    ]
