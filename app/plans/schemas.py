from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from app.money.display import PlainDecimal
from app.validation import DbId, PerMinute, Text


def _not_a_float(value: object) -> object:
    # JSON numbers with a fraction or an exponent arrive as binary floats, whose digits
    # past the 15th or so are already gone: refuse them rather than store a different price.
    if isinstance(value, bool):
        raise ValueError("must be a decimal amount, not a boolean")
    if isinstance(value, float):
        raise ValueError(
            'give decimal amounts as strings (e.g. "0.0004") or integers; a JSON number with '
            "a fraction or an exponent is read as a binary float and can lose digits"
        )
    return value


def _no_negative_zero(value: Decimal) -> Decimal:
    # "-0" is zero; stored as written it would read back (and print on invoices) as -0.
    return value.copy_abs() if value.is_zero() else value


Amount = Annotated[
    Decimal,
    BeforeValidator(_not_a_float),
    Field(max_digits=24, decimal_places=10),
    AfterValidator(_no_negative_zero),
]
"""Money in major units, bounded to the NUMERIC(24, 10) columns that hold prices
(``plan_versions.base_fee``/``spend_cap``, ``invoice_lines.unit_price``): finite, at most
10 decimal places and 14 digits before the point (below 10^14). Outside that: 422."""

Quantity = Annotated[
    Decimal,
    BeforeValidator(_not_a_float),
    Field(max_digits=24, decimal_places=6),
    AfterValidator(_no_negative_zero),
]
"""A quantity of units (tier bounds, package sizes, included quantities), bounded like
``invoice_lines.quantity`` NUMERIC(24, 6): finite, at most 6 decimal places (a compute
microsecond) and 18 digits before the point. Outside that: 422."""


class TierIn(BaseModel):
    up_to: Quantity | None = Field(description="Inclusive upper bound in units; null = unbounded")
    unit_price: Amount = Decimal(0)
    flat_fee: Amount = Decimal(0)


class ComponentIn(BaseModel):
    unit: str = Field(description="request | item | compute_second")
    pricing: str = Field(description="per_unit | package | graduated | volume")
    unit_price: Amount | None = None
    package_size: Quantity | None = None
    tiers: list[TierIn] = []
    included: Quantity = Decimal(0)
    # as long as the invoice line's columns (app/orm/billing.py)
    model: Text | None = Field(default=None, min_length=1, max_length=128)
    variant: Text | None = Field(default=None, min_length=1, max_length=32)


class TierOut(BaseModel):
    up_to: PlainDecimal | None
    unit_price: PlainDecimal
    flat_fee: PlainDecimal


class ComponentOut(BaseModel):
    """A stored component as read back: no input bounds, so that a version written before
    they existed still reads."""

    unit: str
    pricing: str
    unit_price: PlainDecimal | None
    package_size: PlainDecimal | None
    tiers: list[TierOut]
    included: PlainDecimal
    model: str | None
    variant: str | None


# A plan: 29 EUR a month, 1,000 requests included, then 0.002 EUR per request; 0.0004 EUR
# per item of the cnn model over 10,000 a month; capped at 500 EUR of usage.
_PLAN_EXAMPLE: dict[str, Any] = {
    "currency": "eur",
    "base_fee": "29.00",
    "components": [
        {"unit": "request", "pricing": "per_unit", "unit_price": "0.002", "included": "1000"},
        {
            "unit": "item",
            "pricing": "graduated",
            "model": "cnn",
            "tiers": [
                {"up_to": "10000", "unit_price": "0"},
                {"up_to": None, "unit_price": "0.0004"},
            ],
        },
    ],
    "requests_per_minute": 600,
    "spend_cap": "500",
}


class PlanDefinition(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_PLAN_EXAMPLE]})

    currency: str = Field(min_length=3, max_length=3, pattern="^[A-Za-z]{3}$")
    base_fee: Amount = Field(default=Decimal(0), ge=0, description="Per calendar month")
    components: list[ComponentIn] = []
    requests_per_minute: PerMinute | None = None
    items_per_minute: PerMinute | None = None
    spend_cap: Amount | None = Field(default=None, ge=0)


class PlanCreate(PlanDefinition):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "Starter", **_PLAN_EXAMPLE}]}
    )

    name: Text = Field(min_length=1, max_length=200)


class PlanVersionOut(BaseModel):
    id: int
    version: int
    currency: str
    # Plain decimal strings ("49", "0.0015"), never the column's "49.0000000000".
    # allow_inf_nan: a non-finite amount stored before inputs were bounded still reads.
    base_fee: PlainDecimal = Field(allow_inf_nan=True)
    components: list[ComponentOut]
    requests_per_minute: int | None
    items_per_minute: int | None
    spend_cap: PlainDecimal | None = Field(allow_inf_nan=True)
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
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"plan_id": 1, "effective": "immediately"}]}
    )

    plan_id: DbId
    version: int | None = Field(
        default=None, strict=True, ge=1, description="Default: the plan's latest version"
    )
    effective: Effective = Effective.next_period


class CustomerPlanOut(BaseModel):
    customer_id: int
    plan_id: int
    plan_name: str
    version: int
    plan_version_id: int
    effective_from: datetime
