from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field


class GroupBy(StrEnum):
    """How a usage report is bucketed. ``model``: by the model as called, variants apart
    (``cnn``, ``cnn:int8``); ``variant``: by variant name across models, ``""`` for the base
    (uncompressed) models; ``day``: by UTC day."""

    day = "day"
    model = "model"
    variant = "variant"


class UsageBucket(BaseModel):
    key: str = Field(
        description='The bucket: a UTC day (YYYY-MM-DD); a model as called ("cnn", '
        '"cnn:int8"); or a variant name ("int8"; "" for the base models); "total" for the '
        "total"
    )
    requests: int
    billable_requests: int
    errors: int
    items: int
    compute_us: int = Field(description="Device time, exact, in microseconds")
    compute_ms: float = Field(description="The same in milliseconds")


class UsageReport(BaseModel):
    customer_id: int
    start: datetime
    end: datetime
    group_by: GroupBy = Field(
        description='day, model (name or name:variant, variants apart) or variant ("" for '
        "the base models)"
    )
    data: list[UsageBucket]
    total: UsageBucket


class UsageCell(BaseModel):
    """One UTC day's usage of one model variant (``model`` and ``variant`` "" when the
    request named none)."""

    day: str = Field(description="YYYY-MM-DD, UTC")
    model: str
    variant: str
    requests: int
    billable_requests: int
    errors: int
    items: int
    compute_us: int


class UsageBreakdown(BaseModel):
    """A customer's usage in [start, end) by UTC day, model and variant."""

    customer_id: int
    start: datetime
    end: datetime
    cells: list[UsageCell]
