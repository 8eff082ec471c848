"""Shapes of the finance reports (revenue, margin and break-even).

Every integer ``X_minor`` amount comes with ``X``, the same amount as a decimal string at
its currency's exponent ("49.00", "1250" for JPY); exact decimals that are not settled
amounts (compute seconds, C, M, months) are plain decimal strings (no exponent)."""

from __future__ import annotations

from pydantic import BaseModel, Field, computed_field

from app.money.display import PlainDecimal, minor_string


class RevenueRow(BaseModel):
    key: str
    currency: str
    amount_minor: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def amount(self) -> str:
        """``amount_minor`` at the currency's exponent."""
        return minor_string(self.amount_minor, self.currency)


class RevenueReport(BaseModel):
    period: str
    by_plan: list[RevenueRow]
    by_customer: list[RevenueRow]
    by_model: list[RevenueRow]
    total: list[RevenueRow] = Field(description="Per currency: invoiced less credited")
    invoiced: list[RevenueRow] = Field(
        default=[], description="Per currency: the invoices' subtotals, before credit notes"
    )
    credited: list[RevenueRow] = Field(
        default=[],
        description="Per currency: what credit notes on these invoices took off (before tax)",
    )


class MarginLine(BaseModel):
    key: str
    revenue_minor: int
    revenue: str
    compute_seconds: PlainDecimal
    cost_minor: int | None = Field(description="Compute cost; null without cost rates")
    cost: str | None
    margin_minor: int | None = Field(description="revenue - cost; null without cost rates")
    margin: str | None


class CostRatesOut(BaseModel):
    """The rates a section's cost was computed with, in its currency."""

    gpu_hour: PlainDecimal
    cpu_hour: PlainDecimal
    fixed_monthly: PlainDecimal


class BreakEven(BaseModel):
    investment: PlainDecimal = Field(description="C, one-off, in the section's currency")
    yearly_upkeep: PlainDecimal = Field(description="M, a yearly running cost (M/12 a month)")
    monthly_revenue_minor: int = Field(description="R: the period's revenue")
    monthly_revenue: str
    monthly_operating_cost_minor: int | None = Field(
        description="O: the period's compute and fixed cost; null without cost rates"
    )
    monthly_operating_cost: str | None
    months: PlainDecimal | None = Field(
        description="Payback period C / (R - O - M/12) in months; null when it never pays "
        "back (R - O - M/12 <= 0) or without cost rates"
    )
    horizon_months: int
    required_monthly_revenue_minor: int | None = Field(
        description="O + M/12 + C/H: the monthly revenue that recovers C within H months; "
        "null without cost rates"
    )
    required_monthly_revenue: str | None
    note: str | None = None


class MarginSection(BaseModel):
    currency: str
    cost_rates: CostRatesOut | None = Field(
        description="null: no cost rates for this currency (cost and margin are then null)"
    )
    note: str | None = None
    revenue_minor: int
    revenue: str
    compute_seconds: PlainDecimal
    compute_cost_minor: int | None
    compute_cost: str | None
    fixed_cost_minor: int | None
    fixed_cost: str | None
    operating_cost_minor: int | None
    operating_cost: str | None
    margin_minor: int | None
    margin: str | None
    by_model: list[MarginLine]
    by_plan: list[MarginLine]
    break_even: BreakEven


class MarginReport(BaseModel):
    period: str
    cost_currency: str = Field(description="TOLLGATE_COST_CURRENCY: where unplanned usage goes")
    investment_currency: str = Field(
        description="The currency of investment C and yearly upkeep M (the `currency` query)"
    )
    sections: list[MarginSection] = Field(
        description="One per currency with revenue or cost in the period, every currency "
        "with cost rates and the investment currency; sorted by currency"
    )
