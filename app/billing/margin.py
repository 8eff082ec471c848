"""Cost, margin and break-even.

Cost comes from the ledger: compute seconds per device (all rows, billable or not: failed
work still burns the device) times the configured hourly rate, plus configured fixed monthly
costs. Revenue comes from the period's finalized and paid invoices in the cost currency.
Break-even: with a one-off investment C, a yearly upkeep M (a running cost: M/12 a month),
monthly revenue R and monthly operating cost O, the payback period is C / (R - O - M/12)
months, none when R - O - M/12 <= 0 (the upkeep alone is never covered); and the monthly
revenue needed to recover C within a horizon of H months while paying the upkeep is
O + M/12 + C/H.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.billing.repository import LINE_MODEL
from app.db.sums import joined, split_sum
from app.money.periods import Period
from app.money.pricing import to_minor
from app.orm import Invoice, InvoiceLine, Plan, PlanVersion, UsageEvent
from app.plans.service import plan_segments

_HOUR_US = Decimal(3_600_000_000)
_BILLED = ("finalized", "paid")


@dataclass(frozen=True, slots=True)
class CostRates:
    currency: str
    gpu_hour: Decimal
    cpu_hour: Decimal
    fixed_monthly: Decimal

    def compute_cost(self, device: str | None, compute_us: int) -> Decimal:
        rate = self.gpu_hour if device == "cuda" else self.cpu_hour
        return Decimal(compute_us) / _HOUR_US * rate


@dataclass
class MarginRow:
    key: str
    revenue_minor: int = 0
    compute_seconds: Decimal = Decimal(0)
    cost: Decimal = Decimal(0)


def break_even_months(
    investment: Decimal, yearly_upkeep: Decimal, revenue: Decimal, operating_cost: Decimal
) -> Decimal | None:
    """Months until the monthly surplus, after operating cost and a twelfth of the yearly
    upkeep, has paid back the investment: C / (R - O - M/12); None when there is no
    surplus (it never pays back)."""
    surplus = revenue - operating_cost - yearly_upkeep / 12
    if surplus <= 0:
        return None
    return (investment / surplus).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def required_monthly_revenue(
    investment: Decimal, yearly_upkeep: Decimal, operating_cost: Decimal, horizon_months: int
) -> Decimal:
    """The monthly revenue that pays operating cost and upkeep and recovers the investment
    within ``horizon_months``: O + M/12 + C/H."""
    return operating_cost + yearly_upkeep / 12 + investment / horizon_months


async def margin_rows(
    session: AsyncSession, period: Period, rates: CostRates
) -> tuple[dict[str, MarginRow], dict[str, MarginRow]]:
    """(by model, by plan) revenue and compute cost for the period."""
    by_model: dict[str, MarginRow] = defaultdict(lambda: MarginRow(""))
    by_plan: dict[str, MarginRow] = defaultdict(lambda: MarginRow(""))
    in_period = (UsageEvent.created_at >= period.start, UsageEvent.created_at < period.end)

    # Rows that ran on a device: a request refused before the forward (an unknown model,
    # a variant this server cannot run) cost nothing and names no served model.
    usage = await session.execute(
        select(UsageEvent.model, UsageEvent.device, func.sum(UsageEvent.compute_us))
        .where(*in_period, UsageEvent.compute_us > 0)
        .group_by(UsageEvent.model, UsageEvent.device)
    )
    for model, device, compute_us in usage.all():
        row = by_model[model or "(unknown)"]
        row.compute_seconds += Decimal(int(compute_us or 0)) / 1_000_000
        row.cost += rates.compute_cost(device, int(compute_us or 0))

    revenue = await session.execute(
        select(LINE_MODEL, Plan.name, PlanVersion.version, *split_sum(InvoiceLine.amount_minor))
        .join(Invoice, Invoice.id == InvoiceLine.invoice_id)
        .join(PlanVersion, PlanVersion.id == InvoiceLine.plan_version_id)
        .join(Plan, Plan.id == PlanVersion.plan_id)
        .where(
            Invoice.period == str(period),
            Invoice.status.in_(_BILLED),
            Invoice.currency == rates.currency,
        )
        .group_by(LINE_MODEL, Plan.name, PlanVersion.version)
    )
    for model, plan, number, high, low in revenue.all():
        amount = joined(high, low)
        by_model[model].revenue_minor += amount
        by_plan[f"{plan} v{number}"].revenue_minor += amount

    # Compute cost by plan: each invoiced customer's usage under each plan segment.
    invoiced = await session.scalars(
        select(Invoice.customer_id).where(
            Invoice.period == str(period), Invoice.status.in_(_BILLED)
        )
    )
    for customer_id in invoiced.all():
        for version, start, end in await plan_segments(
            session, customer_id, period.start, period.end
        ):
            plan_name = await session.scalar(select(Plan.name).where(Plan.id == version.plan_id))
            segment = await session.execute(
                select(UsageEvent.device, func.sum(UsageEvent.compute_us))
                .where(
                    UsageEvent.customer_id == customer_id,
                    UsageEvent.created_at >= start,
                    UsageEvent.created_at < end,
                )
                .group_by(UsageEvent.device)
            )
            row = by_plan[f"{plan_name} v{version.version}"]
            for device, compute_us in segment.all():
                row.compute_seconds += Decimal(int(compute_us or 0)) / 1_000_000
                row.cost += rates.compute_cost(device, int(compute_us or 0))

    for key, row in by_model.items():
        row.key = key
    for key, row in by_plan.items():
        row.key = key
    return dict(by_model), dict(by_plan)


def cost_minor(cost: Decimal, currency: str) -> int:
    return to_minor(cost, currency)
