from __future__ import annotations

from app.errors import AppError, NotFound


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
