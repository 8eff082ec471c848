from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Integer, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from app.metering.rollups import hour_of
from app.metering.schemas import GroupBy, UsageBucket, UsageCell
from app.orm import UsageEvent, UsageHourly


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


Source = type[UsageEvent] | type[UsageHourly]


def _day(dialect: str, at: ColumnElement[datetime]) -> ColumnElement[Any]:
    if dialect == "sqlite":
        return func.strftime("%Y-%m-%d", at)
    # Connections run with timezone=UTC, so the cast buckets by UTC day.
    return func.to_char(func.date_trunc("day", at), "YYYY-MM-DD")


def _time(source: Source) -> ColumnElement[datetime]:
    return (UsageEvent.created_at if source is UsageEvent else UsageHourly.hour).expression


def _variant(source: Source = UsageEvent) -> ColumnElement[str]:
    """The row's variant, "" for the base model (NULL in the ledger, "" in the rollups)."""
    return func.coalesce(source.variant, "")


def _model(source: Source = UsageEvent) -> ColumnElement[str]:
    return func.coalesce(source.model, "")


def model_ref(source: Source = UsageEvent) -> ColumnElement[str]:
    """The model as called, variants apart: ``cnn`` or ``cnn:int8`` (the ledger keeps the
    name and the variant in two columns; a report by model must not merge variants)."""
    model = _model(source)
    variant = _variant(source)
    return case((variant == "", model), else_=model + ":" + variant)


def _measures(source: Source) -> tuple[ColumnElement[Any], ...]:
    """What every usage aggregate sums: requests, billable (requests), errors (status >=
    400), items, compute_us; counted from ledger rows or summed from rollups."""
    if source is UsageHourly:
        return (
            func.sum(UsageHourly.requests),
            func.sum(case((UsageHourly.billable, UsageHourly.requests), else_=0)),
            func.sum(UsageHourly.errors),
            func.sum(UsageHourly.items),
            func.sum(UsageHourly.compute_us),
        )
    return (
        func.count(),
        func.sum(case((UsageEvent.billable, 1), else_=0)),
        func.sum(case((UsageEvent.status_code >= 400, 1), else_=0)),
        func.coalesce(func.sum(UsageEvent.items.cast(Integer)), 0),
        func.coalesce(func.sum(UsageEvent.compute_us), 0),
    )


@dataclass(slots=True)
class Sums:
    requests: int = 0
    billable: int = 0
    errors: int = 0
    items: int = 0
    compute_us: int = 0

    def add(self, values: Sequence[Any]) -> None:
        self.requests += int(values[0] or 0)
        self.billable += int(values[1] or 0)
        self.errors += int(values[2] or 0)
        self.items += int(values[3] or 0)
        self.compute_us += int(values[4] or 0)


def _ceil_hour(at: datetime) -> datetime:
    hour = hour_of(at)
    return hour if hour == at else hour + timedelta(hours=1)


def windows(start: datetime, end: datetime) -> list[tuple[Source, datetime, datetime]]:
    """``[start, end)`` split into whole UTC hours (read from the rollups) and the partial
    hours at either edge (read from the ledger's rows, on its (customer_id, created_at)
    index): exact for any bounds, and the rows read are at most two hours' worth."""
    first, last = _ceil_hour(start), hour_of(end)
    if first >= last:
        return [(UsageEvent, start, end)] if start < end else []
    parts: list[tuple[Source, datetime, datetime]] = [(UsageHourly, first, last)]
    if start < first:
        parts.append((UsageEvent, start, first))
    if last < end:
        parts.append((UsageEvent, last, end))
    return parts


async def sum_usage(
    session: AsyncSession,
    start: datetime,
    end: datetime,
    keys: Callable[[Source, str], Sequence[ColumnElement[Any]]],
    *,
    customer_id: int | None = None,
    billable_only: bool = False,
) -> dict[tuple[Any, ...], Sums]:
    """Usage in ``[start, end)`` summed per ``keys`` (built for each source: the ledger or
    its hourly rollups, and the dialect), optionally for one customer and billable rows
    only. What every usage report, billing and the spend cap read: its cost grows with
    customers x hours, not with requests."""
    dialect = session.get_bind().dialect.name
    out: dict[tuple[Any, ...], Sums] = {}
    for source, lo, hi in windows(start, end):
        at = _time(source)
        group = keys(source, dialect)
        stmt = select(*group, *_measures(source)).where(at >= lo, at < hi).group_by(*group)
        if customer_id is not None:
            stmt = stmt.where(source.customer_id == customer_id)
        if billable_only:
            stmt = stmt.where(source.billable.is_(True))
        for r in (await session.execute(stmt)).all():
            out.setdefault(tuple(r[: len(group)]), Sums()).add(r[len(group) :])
    return out


async def usage_buckets(
    session: AsyncSession, customer_id: int, start: datetime, end: datetime, group_by: GroupBy
) -> list[UsageBucket]:
    def keys(source: Source, dialect: str) -> list[ColumnElement[Any]]:
        if group_by is GroupBy.day:
            return [_day(dialect, _time(source))]
        return [model_ref(source) if group_by is GroupBy.model else _variant(source)]

    sums = await sum_usage(session, start, end, keys, customer_id=customer_id)
    return [
        UsageBucket(
            key=str(key),
            requests=v.requests,
            billable_requests=v.billable,
            errors=v.errors,
            items=v.items,
            compute_us=v.compute_us,
            compute_ms=v.compute_us / 1000,
        )
        for (key,), v in sorted(sums.items())
    ]


async def usage_cells(
    session: AsyncSession, customer_id: int, start: datetime, end: datetime
) -> list[UsageCell]:
    """The customer's usage in ``[start, end)`` by UTC day, model and variant: one row per
    cell, never per request."""

    def keys(source: Source, dialect: str) -> list[ColumnElement[Any]]:
        return [_day(dialect, _time(source)), _model(source), _variant(source)]

    sums = await sum_usage(session, start, end, keys, customer_id=customer_id)
    return [
        UsageCell(
            day=str(day),
            model=str(model),
            variant=str(variant),
            requests=v.requests,
            billable_requests=v.billable,
            errors=v.errors,
            items=v.items,
            compute_us=v.compute_us,
        )
        for (day, model, variant), v in sorted(sums.items())
    ]


async def billable_totals(
    session: AsyncSession, start: datetime, end: datetime
) -> list[ModelTotals]:
    """Billable requests, items and compute time per model and variant in ``[start, end)``,
    all customers together (the ledger behind tollgate_billable_month_to_date)."""

    def keys(source: Source, dialect: str) -> list[ColumnElement[Any]]:
        return [_model(source), _variant(source)]

    sums = await sum_usage(session, start, end, keys, billable_only=True)
    return [
        ModelTotals(str(model), str(variant), v.requests, v.items, v.compute_us)
        for (model, variant), v in sums.items()
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

    def keys(source: Source, dialect: str) -> list[ColumnElement[Any]]:
        return [_day(dialect, _time(source))]

    sums = await sum_usage(session, start, end, keys)
    return [
        DayTotals(str(day), v.requests, v.billable, v.errors, v.items)
        for (day,), v in sorted(sums.items())
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

    def keys(source: Source, dialect: str) -> list[ColumnElement[Any]]:
        return [_day(dialect, _time(source)), model_ref(source)]

    sums = await sum_usage(session, start, end, keys, customer_id=customer_id)
    return [
        DayModelTotals(str(day), str(model), v.requests, v.items)
        for (day, model), v in sorted(sums.items())
    ]
