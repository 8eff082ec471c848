from __future__ import annotations

from app.errors import AppError, NotFound, Unprocessable


class PlanNotFound(NotFound):
    type = "plan_not_found"


class PlanInUse(AppError):
    status_code = 409
    type = "plan_in_use"


class PlanConflict(AppError):
    status_code = 409
    type = "plan_conflict"


class InvalidPlan(Unprocessable):
    type = "invalid_plan"
