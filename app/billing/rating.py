"""Rating: a customer's period of ledger usage → invoice lines, exactly.

Preview and close call the same function, so a preview of a period equals the invoice that
closing it writes. Usage is aggregated in SQL (billable rows only), per plan segment: when a
customer changes plan mid-period, each part is rated under its own version, and the base fee
and included quantities are prorated by the share of the month each part covers. Each line
is rounded once, ROUND_HALF_UP, to the currency's minor unit (``pricing.to_minor``).

A version whose charges cannot be computed exactly, or whose lines would not fit the
invoice columns, is refused with :class:`PlanNotRatable` (409) instead of a 500 or a
database error; plan inputs are bounded at the API, so only older versions can get there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from app.billing.errors import PlanNotRatable
from app.metering.repository import Source, sum_usage
from app.money.periods import Period
from app.money.pricing import (
    PriceComponent,
    Pricing,
    PricingError,
    Unit,
    describe,
    rate,
    to_minor,
)
from app.orm import InvoiceLine, PlanVersion
from app.orm.base import WIDE, ExactNumeric
from app.plans.service import plan_segments
from app.validation import INT64_MAX

_MICRO = Decimal(1_000_000)
# Display scales, equal to the invoice_lines column scales, so that a preview and the stored
# invoice read the same. Amounts in minor units are computed from the exact values.
_Q6 = Decimal("0.000001")
_Q10 = Decimal("0.0000000001")


def _q(value: Decimal, scale: Decimal) -> Decimal:
    return value.quantize(scale, rounding=ROUND_HALF_UP, context=WIDE)


def _check_fits(line: RatedLine) -> RatedLine:
    """Raise PricingError unless the line fits its invoice_lines row exactly."""
    for name in ("quantity", "billable_quantity", "unit_price", "amount"):
        value = getattr(line, name)
        column_type = InvoiceLine.__table__.c[name].type
        assert isinstance(column_type, ExactNumeric)
        if value is not None and not column_type.fits(value):
            raise PricingError(f"the {line.kind} line's {name} ({value:.6E}) is too large")
    if abs(line.amount_minor) > INT64_MAX:
        raise PricingError(f"the {line.kind} line's amount ({line.amount:.6E}) is too large")
    return line


@dataclass(frozen=True, slots=True)
class UsageAggregate:
    model: str | None
    variant: str | None
    requests: int
    items: int
    compute_us: int


@dataclass(frozen=True, slots=True)
class RatedLine:
    plan_version_id: int
    kind: str  # base_fee | usage
    description: str
    unit: str | None
    model: str | None
    variant: str | None
    quantity: Decimal
    billable_quantity: Decimal
    unit_price: Decimal | None
    amount: Decimal
    amount_minor: int
    period_start: datetime
    period_end: datetime


@dataclass(frozen=True, slots=True)
class RatedInvoice:
    customer_id: int
    period: Period
    currency: str
    lines: tuple[RatedLine, ...]

    @property
    def subtotal_minor(self) -> int:
        """Before tax: the tax depends on the customer's treatment (``drafts.py``)."""
        return sum(line.amount_minor for line in self.lines)


async def aggregate_usage(
    session: AsyncSession, customer_id: int, start: datetime, end: datetime
) -> list[UsageAggregate]:
    """The customer's billable usage in ``[start, end)`` per model and variant, read from the
    hourly rollups (and the ledger's rows for partial hours at the edges): the same sums as
    the raw rows, at a cost that grows with hours, not requests. The rollups store a NULL
    model or variant as "", mapped back to None here."""

    def keys(source: Source, dialect: str) -> list[ColumnElement[Any]]:
        return [func.coalesce(source.model, ""), func.coalesce(source.variant, "")]

    sums = await sum_usage(session, start, end, keys, customer_id=customer_id, billable_only=True)
    return [
        UsageAggregate(m or None, v or None, s.requests, s.items, s.compute_us)
        for (m, v), s in sums.items()
    ]


async def aggregate_usage_by_customer(
    session: AsyncSession, start: datetime, end: datetime
) -> dict[int, list[UsageAggregate]]:
    """:func:`aggregate_usage` for every customer at once, in one query over the rollups
    (closing a period reads the month once instead of once per customer). A customer
    without billable usage in the window is absent."""

    def keys(source: Source, dialect: str) -> list[ColumnElement[Any]]:
        return [
            source.customer_id.expression,
            func.coalesce(source.model, ""),
            func.coalesce(source.variant, ""),
        ]

    by_customer: dict[int, list[UsageAggregate]] = {}
    sums = await sum_usage(session, start, end, keys, billable_only=True)
    for (customer, m, v), s in sums.items():
        by_customer.setdefault(int(customer), []).append(
            UsageAggregate(m or None, v or None, s.requests, s.items, s.compute_us)
        )
    return by_customer


BASE_VARIANT = "fp32"


def variant_matches(component_variant: str | None, row_variant: str | None) -> bool:
    """A component without a variant filter prices every variant; ``"fp32"`` prices only
    the uncompressed model (rows without a variant); any other name prices that variant."""
    if component_variant is None:
        return True
    if component_variant == BASE_VARIANT:
        return row_variant is None
    return component_variant == row_variant


def line_target(model: str | None, variant: str | None) -> str:
    """What a usage line prices, as its description names it: the model and the variant
    (``cnn, variant int8``; ``cnn, variant fp32 (base)``), ``all variants`` when the component
    has no variant filter, so an invoice never leaves open which variant was billed; "" for
    a component that prices every model and variant."""
    if variant is None:
        return f"{model}, all variants" if model else ""
    named = f"variant {variant}" + (" (base)" if variant == BASE_VARIANT else "")
    return f"{model}, {named}" if model else f"all models, {named}"


def _quantity(component: PriceComponent, usage: list[UsageAggregate]) -> Decimal:
    matching = [
        u
        for u in usage
        if (component.model is None or u.model == component.model)
        and variant_matches(component.variant, u.variant)
    ]
    if component.unit is Unit.request:
        return Decimal(sum(u.requests for u in matching))
    if component.unit is Unit.item:
        return Decimal(sum(u.items for u in matching))
    return Decimal(sum(u.compute_us for u in matching)) / _MICRO


def rate_segment(
    version: PlanVersion,
    start: datetime,
    end: datetime,
    period: Period,
    usage: list[UsageAggregate],
) -> list[RatedLine]:
    share = Decimal(int((end - start).total_seconds())) / Decimal(
        int((period.end - period.start).total_seconds())
    )
    whole = share == 1
    suffix = "" if whole else f" ({start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC)"
    lines: list[RatedLine] = []
    if version.base_fee:
        if not version.base_fee.is_finite():  # only a row written before inputs were bounded
            raise PricingError(f"the base fee is {version.base_fee}")
        amount = version.base_fee * share
        lines.append(
            _check_fits(
                RatedLine(
                    plan_version_id=version.id,
                    kind="base_fee",
                    description="Monthly base fee" + ("" if whole else f", prorated{suffix}"),
                    unit=None,
                    model=None,
                    variant=None,
                    quantity=_q(share, _Q6),
                    billable_quantity=_q(share, _Q6),
                    unit_price=_q(version.base_fee, _Q10),
                    amount=_q(amount, _Q10),
                    amount_minor=to_minor(amount, version.currency),
                    period_start=start,
                    period_end=end,
                )
            )
        )
    for raw in version.components:
        component = PriceComponent.from_dict(raw)
        if not whole and component.included:
            component = replace(component, included=component.included * share)
        quantity = _quantity(component, usage)
        amount = rate(component, quantity)
        target = line_target(component.model, component.variant)
        lines.append(
            _check_fits(
                RatedLine(
                    plan_version_id=version.id,
                    kind="usage",
                    description=(f"{target}: " if target else "") + describe(component) + suffix,
                    unit=component.unit.value,
                    model=component.model,
                    variant=component.variant,
                    quantity=_q(quantity, _Q6),
                    billable_quantity=_q(max(Decimal(0), quantity - component.included), _Q6),
                    unit_price=(
                        _q(component.unit_price, _Q10)
                        if component.pricing is Pricing.per_unit
                        and component.unit_price is not None
                        else None
                    ),
                    amount=_q(amount, _Q10),
                    amount_minor=to_minor(amount, version.currency),
                    period_start=start,
                    period_end=end,
                )
            )
        )
    return lines


async def rate_customer(
    session: AsyncSession,
    customer_id: int,
    period: Period,
    *,
    period_usage: Mapping[int, list[UsageAggregate]] | None = None,
) -> RatedInvoice | None:
    """The customer's invoice for the period as of now; None if no plan was in force.

    ``period_usage``: every customer's usage over the whole period, read once
    (:func:`aggregate_usage_by_customer`) by a caller rating many customers; used for a
    segment that spans the whole period, while a plan change's segments read their own."""
    segments = await plan_segments(session, customer_id, period.start, period.end)
    if not segments:
        return None
    currencies = {version.currency for version, _, _ in segments}
    if len(currencies) != 1:  # assign_plan refuses this; guard against hand-edited data
        raise PlanNotRatable(
            f"customer {customer_id} has plans in several currencies in {period}",
            details={"customer_id": customer_id},
        )
    lines: list[RatedLine] = []
    for version, start, end in segments:
        if period_usage is not None and (start, end) == (period.start, period.end):
            usage = period_usage.get(customer_id, [])
        else:
            usage = await aggregate_usage(session, customer_id, start, end)
        try:
            lines += rate_segment(version, start, end, period, usage)
        except (PricingError, ArithmeticError) as exc:  # ArithmeticError: decimal signals
            reason = str(exc) if isinstance(exc, PricingError) else "an amount is not exact"
            raise PlanNotRatable(
                f"customer {customer_id} cannot be invoiced for {period} under plan version "
                f"{version.id}: {reason}",
                details={"customer_id": customer_id, "plan_version_id": version.id},
            ) from exc
    rated = RatedInvoice(customer_id, period, currencies.pop(), tuple(lines))
    if abs(rated.subtotal_minor) > INT64_MAX:
        raise PlanNotRatable(
            f"customer {customer_id}'s invoice for {period} is too large to record",
            details={"customer_id": customer_id},
        )
    return rated
