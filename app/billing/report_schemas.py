"""Shapes of the finance reports (revenue, margin and break-even)."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, Field


class RevenueRow(BaseModel):
    key: str
    currency: str
    amount_minor: int


class RevenueReport(BaseModel):
    period: str
    by_plan: list[RevenueRow]
    by_customer: list[RevenueRow]
    by_model: list[RevenueRow]
    total: list[RevenueRow]


class MarginLine(BaseModel):
    key: str
    revenue_minor: int
    compute_seconds: Decimal
    cost_minor: int
    margin_minor: int


class BreakEven(BaseModel):
    investment: Decimal
    yearly_upkeep: Decimal
    monthly_revenue_minor: int
    monthly_operating_cost_minor: int
    months: Decimal | None = Field(
        description="Payback period C / (R - O - M/12) in months; null when it never pays back"
    )
    horizon_months: int
    required_monthly_revenue_minor: int = Field(
        description="O + M/12 + C/H: the monthly revenue that recovers C within H months"
    )


class MarginReport(BaseModel):
    period: str
    currency: str
    revenue_minor: int
    compute_cost_minor: int
    fixed_cost_minor: int
    operating_cost_minor: int
    margin_minor: int
    by_model: list[MarginLine]
    by_plan: list[MarginLine]
    break_even: BreakEven
