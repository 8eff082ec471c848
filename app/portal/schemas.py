from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from app.money.display import PlainDecimal


class TierPrice(BaseModel):
    up_to: PlainDecimal | None
    unit_price: PlainDecimal
    flat_fee: PlainDecimal


class PriceComponentOut(BaseModel):
    """One price of the plan: what a unit (request, item, compute second) costs, after the
    quantity included each month."""

    unit: str
    pricing: str = Field(description="per_unit | package | graduated | volume")
    unit_price: PlainDecimal | None
    package_size: PlainDecimal | None
    tiers: list[TierPrice]
    included: PlainDecimal
    model: str | None
    variant: str | None


class PlanTerm(BaseModel):
    """A plan version the customer is on from ``effective_from``, with its prices."""

    plan_id: int
    plan_name: str
    version: int
    plan_version_id: int
    effective_from: datetime
    currency: str
    base_fee: PlainDecimal = Field(description="Per calendar month (prorated for part of one)")
    components: list[PriceComponentOut]
    spend_cap: PlainDecimal | None = Field(
        description="The most the period's usage charges (base fee excluded) may reach"
    )
    requests_per_minute: int | None
    items_per_minute: int | None


class BillingPlan(BaseModel):
    customer_id: int
    current: PlanTerm | None = Field(description="In force now; null: no plan yet")
    scheduled: list[PlanTerm] = Field(description="Assigned from a later moment, in order")


class Spend(BaseModel):
    """Usage charges so far this period against the plan's spend cap, as the cap is
    enforced: the base fee is not part of it, and usage before the current plan version took
    effect this period is not counted."""

    customer_id: int
    period: str
    currency: str
    plan_version_id: int
    since: datetime = Field(description="Start of the counted usage")
    spend_minor: int
    spend: str
    spend_exact: PlainDecimal = Field(description="Unrounded, as compared with the cap")
    spend_cap_minor: int | None
    spend_cap: str | None
    remaining_minor: int | None = Field(description="Cap minus spend, never below 0")
    remaining: str | None
