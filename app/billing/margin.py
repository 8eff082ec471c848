"""Cost, margin and break-even, one section per currency.

One section per currency with revenue or attributed cost in the period, plus every currency
with cost rates and the currency of the break-even's C and M. Revenue is the revenue
report's (:func:`app.billing.repository.revenue`: finalized and paid invoices, so whatever
that report deducts, this one does), per currency; no currency is ever dropped and none is
converted into another.

Cost comes from the ledger: the device time of every row that ran a forward (billable or
not: failed work still burns the device) times an hourly rate, plus fixed monthly costs.
A row's cost belongs to the currency of the plan its customer was on when it was served
(the plan segment in force at ``created_at``); rows of customers without a plan belong to the
cost currency (``TOLLGATE_COST_CURRENCY``) under the plan key ``(no plan)``. The cost
currency's rates are ``TOLLGATE_COST_GPU_HOUR``, ``_CPU_HOUR`` and ``_FIXED_MONTHLY``; any
other currency's come from ``TOLLGATE_COST_RATES``. A currency without rates shows its revenue
and compute time, with cost and margin null and a note: no exchange rate is ever invented.

``by_model`` names what the revenue report names (:data:`LINE_MODEL`: the model, ``(base
fee)``, ``(all models)``); the cost of a billable row goes to its model, the cost of work
that no invoice charges for (non-billable rows such as failed requests, and usage of
customers without a plan) to one row ``(not billed)``, never to the name the request gave.
Rows that never ran a forward (compute time 0: an unknown model, a variant this server cannot
run) cost nothing and are not listed.

Break-even: with a one-off investment C, a yearly upkeep M (a running cost: M/12 a month),
monthly revenue R and monthly operating cost O, the payback period is C / (R - O - M/12)
months, none when R - O - M/12 <= 0 (the upkeep alone is never covered); and the monthly
revenue needed to recover C within a horizon of H months while paying the upkeep is
O + M/12 + C/H. C and M are given in one currency (default: the cost currency) and apply to
that currency's section; the other sections' break-even has C = M = 0 (their operating cost
only).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import Subquery, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.billing.report_schemas import (
    BreakEven,
    CostRatesOut,
    MarginLine,
    MarginReport,
    MarginSection,
    RevenueReport,
)
from app.billing.repository import revenue
from app.config import Settings
from app.db.memo import SETTLED, settled
from app.db.sums import joined, split_sum
from app.money.display import minor_string
from app.money.periods import Period
from app.money.pricing import minor_exponent, to_minor
from app.orm import CustomerPlan, Plan, PlanVersion, UsageEvent

_HOUR_US = Decimal(3_600_000_000)

NOT_BILLED = "(not billed)"
"""``by_model`` key of the cost of work no invoice charges for."""
NO_PLAN = "(no plan)"
"""``by_plan`` key of the usage of customers without a plan (in the cost currency)."""


@dataclass(frozen=True, slots=True)
class CostRates:
    currency: str
    gpu_hour: Decimal
    cpu_hour: Decimal
    fixed_monthly: Decimal

    def compute_cost(self, device: str | None, compute_us: int) -> Decimal:
        rate = self.gpu_hour if device == "cuda" else self.cpu_hour
        return Decimal(compute_us) / _HOUR_US * rate


@dataclass(frozen=True, slots=True)
class CostModel:
    """The cost rates per currency; ``currency`` is the cost currency (always rated)."""

    currency: str
    rates: dict[str, CostRates]

    @classmethod
    def from_settings(cls, settings: Settings) -> CostModel:
        rates = {
            settings.cost_currency: CostRates(
                settings.cost_currency,
                settings.cost_gpu_hour,
                settings.cost_cpu_hour,
                settings.cost_fixed_monthly,
            )
        }
        for currency, r in settings.cost_rates.items():
            rates[currency] = CostRates(currency, r.gpu_hour, r.cpu_hour, r.fixed_monthly)
        return cls(settings.cost_currency, rates)


@dataclass
class MarginRow:
    key: str
    revenue_minor: int = 0
    compute_us: int = 0
    cost: Decimal = Decimal(0)
    """Exact compute cost; meaningful only where the section's currency has rates."""

    @property
    def compute_seconds(self) -> Decimal:
        return Decimal(self.compute_us).scaleb(-6)


@dataclass
class CurrencyMargin:
    """One currency's revenue and (where it has rates) cost for a period."""

    currency: str
    rates: CostRates | None
    revenue_minor: int = 0
    by_model: dict[str, MarginRow] = field(default_factory=dict)
    by_plan: dict[str, MarginRow] = field(default_factory=dict)

    def row(self, table: dict[str, MarginRow], key: str) -> MarginRow:
        return table.setdefault(key, MarginRow(key))

    @property
    def compute_us(self) -> int:
        return sum(r.compute_us for r in self.by_plan.values())

    @property
    def compute_cost(self) -> Decimal | None:
        if self.rates is None:
            return None
        return sum((r.cost for r in self.by_plan.values()), Decimal(0))


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


def _plan_segments() -> Subquery:
    """Every customer's plan history as [since, until) rows (until null: still in force);
    of assignments at the same instant the later one wins, as in ``plan_version_at``."""
    return select(
        CustomerPlan.customer_id,
        CustomerPlan.plan_version_id,
        CustomerPlan.effective_from.label("since"),
        func.lead(CustomerPlan.effective_from)
        .over(
            partition_by=CustomerPlan.customer_id,
            order_by=(CustomerPlan.effective_from, CustomerPlan.id),
        )
        .label("until"),
    ).subquery("segments")


async def margin_by_currency(
    session: AsyncSession,
    period: Period,
    costs: CostModel,
    also: Iterable[str] = (),
    *,
    now: datetime | None = None,
    income: RevenueReport | None = None,
) -> dict[str, CurrencyMargin]:
    """The period's margin, one section per currency with revenue or attributed cost, plus
    every currency with cost rates (its fixed costs are a cost) and those in ``also``.
    Given ``now``, the usage side of a period that ended before ``now - SETTLED`` is read
    once per process (its ledger rows are final; revenue is always read live)."""
    sections: dict[str, CurrencyMargin] = {}

    def section(currency: str) -> CurrencyMargin:
        if currency not in sections:
            sections[currency] = CurrencyMargin(currency, costs.rates.get(currency))
        return sections[currency]

    for currency in (*costs.rates, *also):
        section(currency)

    report = income if income is not None else await revenue(session, period)
    for total in report.total:
        section(total.currency).revenue_minor += total.amount_minor
    for line in report.by_model:
        s = section(line.currency)
        s.row(s.by_model, line.key).revenue_minor += line.amount_minor
    for line in report.by_plan:
        s = section(line.currency)
        s.row(s.by_plan, line.key).revenue_minor += line.amount_minor

    segments = _plan_segments()
    seg = segments.c
    stmt = (
        select(
            PlanVersion.currency,
            Plan.name,
            PlanVersion.version,
            UsageEvent.model,
            UsageEvent.billable,
            UsageEvent.device,
            *split_sum(UsageEvent.compute_us),
        )
        .select_from(UsageEvent)
        .outerjoin(
            segments,
            and_(
                seg.customer_id == UsageEvent.customer_id,
                seg.since <= UsageEvent.created_at,
                or_(seg.until.is_(None), UsageEvent.created_at < seg.until),
            ),
        )
        .outerjoin(PlanVersion, PlanVersion.id == seg.plan_version_id)
        .outerjoin(Plan, Plan.id == PlanVersion.plan_id)
        .where(
            UsageEvent.created_at >= period.start,
            UsageEvent.created_at < period.end,
            # Only rows that ran a forward cost anything (and name a served model).
            UsageEvent.compute_us > 0,
        )
        .group_by(
            PlanVersion.currency,
            Plan.name,
            PlanVersion.version,
            UsageEvent.model,
            UsageEvent.billable,
            UsageEvent.device,
        )
    )

    async def usage() -> list[tuple[Any, ...]]:
        return [tuple(row) for row in (await session.execute(stmt)).all()]

    if now is not None and period.end + SETTLED <= now:
        rows = await settled(session, ("margin.usage", str(period)), usage)
    else:
        rows = await usage()
    for currency, plan, version, model, billable, device, high, low in rows:
        compute_us = joined(high, low)
        on_plan = currency is not None
        s = section(currency if on_plan else costs.currency)
        cost = s.rates.compute_cost(device, compute_us) if s.rates else Decimal(0)
        model_key = (model or "(unknown)") if billable and on_plan else NOT_BILLED
        plan_key = f"{plan} v{version}" if on_plan else NO_PLAN
        for row in (s.row(s.by_model, model_key), s.row(s.by_plan, plan_key)):
            row.compute_us += compute_us
            row.cost += cost
    return dict(sorted(sections.items()))


@dataclass(frozen=True, slots=True)
class BreakEvenInput:
    """C and M in ``currency``, and the horizon H in months."""

    currency: str
    investment: Decimal = Decimal(0)
    yearly_upkeep: Decimal = Decimal(0)
    horizon_months: int = 12


def _money(amount_minor: int | None, currency: str) -> str | None:
    return None if amount_minor is None else minor_string(amount_minor, currency)


def _line(row: MarginRow, currency: str, rated: bool) -> MarginLine:
    cost = to_minor(row.cost, currency) if rated else None
    margin = None if cost is None else row.revenue_minor - cost
    return MarginLine(
        key=row.key,
        revenue_minor=row.revenue_minor,
        revenue=minor_string(row.revenue_minor, currency),
        compute_seconds=row.compute_seconds,
        cost_minor=cost,
        cost=_money(cost, currency),
        margin_minor=margin,
        margin=_money(margin, currency),
    )


def _break_even(s: CurrencyMargin, operating_minor: int | None, given: BreakEvenInput) -> BreakEven:
    currency = s.currency
    mine = currency == given.currency
    investment = given.investment if mine else Decimal(0)
    upkeep = given.yearly_upkeep if mine else Decimal(0)
    notes = []
    if not mine:
        notes.append(
            f"investment and yearly upkeep are given in {given.currency.upper()}; this "
            f"break-even covers the {currency.upper()} operating cost only (C = M = 0)"
        )
    months = required = None
    if operating_minor is None:
        notes.append(f"no cost rates for {currency.upper()}: no break-even")
    else:
        exponent = minor_exponent(currency)
        r = Decimal(s.revenue_minor).scaleb(-exponent)
        o = Decimal(operating_minor).scaleb(-exponent)
        months = break_even_months(investment, upkeep, r, o)
        required = to_minor(
            required_monthly_revenue(investment, upkeep, o, given.horizon_months), currency
        )
    return BreakEven(
        investment=investment,
        yearly_upkeep=upkeep,
        monthly_revenue_minor=s.revenue_minor,
        monthly_revenue=minor_string(s.revenue_minor, currency),
        monthly_operating_cost_minor=operating_minor,
        monthly_operating_cost=_money(operating_minor, currency),
        months=months,
        horizon_months=given.horizon_months,
        required_monthly_revenue_minor=required,
        required_monthly_revenue=_money(required, currency),
        note="; ".join(notes) or None,
    )


def _section(s: CurrencyMargin, given: BreakEvenInput) -> MarginSection:
    currency = s.currency
    rates = s.rates
    compute = fixed = operating = margin = None
    if rates is not None:
        compute = to_minor(s.compute_cost or Decimal(0), currency)
        fixed = to_minor(rates.fixed_monthly, currency)
        operating = compute + fixed
        margin = s.revenue_minor - operating
    return MarginSection(
        currency=currency,
        cost_rates=None
        if rates is None
        else CostRatesOut(
            gpu_hour=rates.gpu_hour, cpu_hour=rates.cpu_hour, fixed_monthly=rates.fixed_monthly
        ),
        note=None
        if rates is not None
        else f"no cost rates for {currency.upper()} (TOLLGATE_COST_RATES): cost and margin "
        "unknown, never converted from another currency",
        revenue_minor=s.revenue_minor,
        revenue=minor_string(s.revenue_minor, currency),
        compute_seconds=Decimal(s.compute_us).scaleb(-6),
        compute_cost_minor=compute,
        compute_cost=_money(compute, currency),
        fixed_cost_minor=fixed,
        fixed_cost=_money(fixed, currency),
        operating_cost_minor=operating,
        operating_cost=_money(operating, currency),
        margin_minor=margin,
        margin=_money(margin, currency),
        by_model=[_line(s.by_model[k], currency, rates is not None) for k in sorted(s.by_model)],
        by_plan=[_line(s.by_plan[k], currency, rates is not None) for k in sorted(s.by_plan)],
        break_even=_break_even(s, operating, given),
    )


async def margin_report(
    session: AsyncSession,
    period: Period,
    costs: CostModel,
    given: BreakEvenInput,
    *,
    now: datetime | None = None,
    income: RevenueReport | None = None,
) -> MarginReport:
    """The margin report: a section per currency (see the module's docstring); ``income``:
    the period's revenue report when the caller has it already."""
    sections = await margin_by_currency(
        session, period, costs, also=(given.currency,), now=now, income=income
    )
    return MarginReport(
        period=str(period),
        cost_currency=costs.currency,
        investment_currency=given.currency,
        sections=[_section(s, given) for s in sections.values()],
    )
