from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field


class GroupBy(StrEnum):
    day = "day"
    model = "model"


class UsageBucket(BaseModel):
    key: str
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
    group_by: GroupBy
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
