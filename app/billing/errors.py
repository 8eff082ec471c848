from __future__ import annotations

from app.errors import AppError, BadRequest, NotFound


class InvoiceNotFound(NotFound):
    type = "invoice_not_found"


class PeriodNotClosable(AppError):
    status_code = 409
    type = "period_not_closable"


class NoPlan(NotFound):
    type = "no_plan"


class CloseConflict(AppError):
    status_code = 409
    type = "close_conflict"


class MalformedEvent(BadRequest):
    """A correctly signed webhook whose body is not a well-formed Stripe event."""

    type = "malformed_event"


class PlanNotRatable(AppError):
    """A plan version whose charges cannot be computed exactly or do not fit an invoice
    (possible only for versions written before plan amounts were bounded at the API)."""

    status_code = 409
    type = "plan_not_ratable"
