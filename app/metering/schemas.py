from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel


class GroupBy(StrEnum):
    day = "day"
    model = "model"


class UsageBucket(BaseModel):
    key: str
    requests: int
    billable_requests: int
    errors: int
    items: int
    compute_ms: float


class UsageReport(BaseModel):
    customer_id: int
    start: datetime
    end: datetime
    group_by: GroupBy
    data: list[UsageBucket]
    total: UsageBucket
