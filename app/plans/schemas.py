from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from pydantic import BaseModel, Field


class TierIn(BaseModel):
    up_to: Decimal | None = Field(description="Inclusive upper bound in units; null = unbounded")
    unit_price: Decimal = Decimal(0)
    flat_fee: Decimal = Decimal(0)


class ComponentIn(BaseModel):
    unit: str = Field(description="request | item | compute_second")
    pricing: str = Field(description="per_unit | package | graduated | volume")
    unit_price: Decimal | None = None
    package_size: Decimal | None = None
    tiers: list[TierIn] = []
    included: Decimal = Decimal(0)
    model: str | None = None
    variant: str | None = None


class PlanDefinition(BaseModel):
    currency: str = Field(min_length=3, max_length=3, pattern="^[A-Za-z]{3}$")
    base_fee: Decimal = Field(default=Decimal(0), ge=0, description="Per calendar month")
    components: list[ComponentIn] = []
    requests_per_minute: int | None = Field(default=None, gt=0)
    items_per_minute: int | None = Field(default=None, gt=0)
    spend_cap: Decimal | None = Field(default=None, ge=0)


class PlanCreate(PlanDefinition):
    name: str = Field(min_length=1, max_length=200)


class PlanVersionOut(BaseModel):
    id: int
    version: int
    currency: str
    base_fee: Decimal
    components: list[ComponentIn]
    requests_per_minute: int | None
    items_per_minute: int | None
    spend_cap: Decimal | None
    created_at: datetime


class PlanOut(BaseModel):
    id: int
    name: str
    archived: bool
    current: PlanVersionOut
    versions: list[int]


class PlanList(BaseModel):
    data: list[PlanOut]


class Effective(StrEnum):
    next_period = "next_period"
    immediately = "immediately"


class PlanAssign(BaseModel):
    plan_id: int
    version: int | None = Field(default=None, description="Default: the plan's latest version")
    effective: Effective = Effective.next_period


class CustomerPlanOut(BaseModel):
    customer_id: int
    plan_id: int
    plan_name: str
    version: int
    plan_version_id: int
    effective_from: datetime
