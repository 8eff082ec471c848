"""Admin pages for customers: search, create, and one customer's page (plan, billing
details, keys, usage, spend against cap, suspend and reactivate)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import RedirectResponse, Response

from app.clock.deps import ClockDep
from app.console.deps import AdminUser, ConsoleUser
from app.console.staff_common import (
    AdminForm,
    PageNumber,
    Pager,
    attempt,
    chart,
    text,
    validation_messages,
)
from app.console.web import render, secure
from app.customers import service
from app.customers.errors import CustomerNotFound
from app.customers.schemas import BILLING_FIELDS, CustomerCreate, CustomerUpdate
from app.db.session import SessionDep
from app.errors import AppError
from app.keys import admin as keys
from app.metering.repository import customer_usage_by_day_and_model
from app.money.display import plain
from app.orm import Customer
from app.plans import service as plans
from app.plans.schemas import Effective, PlanAssign
from app.portal.service import billing_plan, spend
from app.validation import DbId

router = APIRouter(include_in_schema=False)

USAGE_DAYS = 30


async def _list_page(
    request: Request,
    user: ConsoleUser,
    session: AsyncSession,
    *,
    q: str | None,
    status: str | None,
    page: int,
    errors: list[str] | None = None,
    form: dict[str, Any] | None = None,
    status_code: int = 200,
) -> Response:
    pager = Pager(request, page, 0)
    rows, total = await service.search_customers(
        session, query=q, status=status, offset=pager.offset, limit=pager.per_page
    )
    return render(
        request,
        "staff/customers.html",
        {
            "user": user,
            "customers": rows,
            "pager": Pager(request, page, total),
            "q": q or "",
            "status": status or "",
            "errors": errors or [],
            "form": form or {},
        },
        status_code,
    )


@router.get("/customers")
async def customers(
    request: Request,
    user: AdminUser,
    session: SessionDep,
    page: PageNumber = 1,
    q: Annotated[str | None, Query(max_length=200)] = None,
    status: Annotated[str | None, Query(pattern="^(active|suspended)?$")] = None,
) -> Response:
    """Customers whose name contains ``q`` (any case), optionally of one status, 50 a page."""
    return await _list_page(
        request, user, session, q=(q or "").strip() or None, status=status or None, page=page
    )


@router.post("/customers")
async def create_customer(request: Request, user: AdminForm, session: SessionDep) -> Response:
    """The "New customer" form: name and email, through the audited service."""
    form = await request.form()
    given = {"name": text(form, "name"), "email": text(form, "email")}
    try:
        data = CustomerCreate.model_validate({k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        return await _list_page(
            request, user, session, q=None, status=None, page=1,
            errors=validation_messages(exc), form=given, status_code=422,
        )  # fmt: skip
    customer, error = await attempt(session, service.create_customer(session, user.principal, data))
    if error is not None or customer is None:
        return await _list_page(
            request, user, session, q=None, status=None, page=1,
            errors=[_message(error)], form=given, status_code=_status(error),
        )  # fmt: skip
    return secure(RedirectResponse(f"/console/customers/{customer.id}", status_code=303))


def _message(error: AppError | None) -> str:
    return error.message if error is not None else "the change was refused"


def _status(error: AppError | None) -> int:
    return error.status_code if error is not None else 409


async def _customer_page(
    request: Request,
    user: ConsoleUser,
    session: AsyncSession,
    customer_id: int,
    now: Any,
    *,
    errors: list[str] | None = None,
    form: dict[str, Any] | None = None,
    notice: str | None = None,
    status_code: int = 200,
) -> Response:
    customer = await session.get(Customer, customer_id)
    if customer is None:
        return render(
            request,
            "error.html",
            {
                "user": user,
                "title": "Not found",
                "message": f"customer {customer_id} does not exist",
            },
            404,
        )
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - timedelta(days=USAGE_DAYS - 1)
    usage = await customer_usage_by_day_and_model(session, customer_id, start, now)
    labels = [(start + timedelta(days=i)).date().isoformat() for i in range(USAGE_DAYS)]
    models = sorted({u.model for u in usage})
    per = {(u.day, u.model): u for u in usage}
    datasets = [
        {
            "label": model or "(no model)",
            "data": [per[(d, model)].requests if (d, model) in per else 0 for d in labels],
        }
        for model in models
    ]
    spent, spend_error = await attempt(session, spend(session, customer_id, now), read_only=True)
    details = form or {
        name: (plain(v) if name == "tax_rate" and v is not None else v)
        for name, v in ((n, getattr(customer, n)) for n in ("name", "email", *BILLING_FIELDS))
    }
    return render(
        request,
        "staff/customer.html",
        {
            "user": user,
            "customer": customer,
            "plan": await billing_plan(session, customer_id, now),
            "plans": [
                (p, v) for p, v in await plans.list_plans(session) if v and not p.archived_at
            ],
            "keys": await keys.list_keys(session, customer_id),
            "now": now,
            "usage": usage,
            "usage_chart": chart(labels, datasets, stacked=True),
            "usage_days": USAGE_DAYS,
            "spend": spent,
            "spend_error": spend_error.message if spend_error else None,
            "details": details,
            "errors": errors or [],
            "notice": notice,
        },
        status_code,
    )


@router.get("/customers/{customer_id}")
async def customer_page(
    request: Request, user: AdminUser, session: SessionDep, clock: ClockDep, customer_id: DbId
) -> Response:
    return await _customer_page(request, user, session, customer_id, clock.now())


def _details_form(form: Any) -> dict[str, Any]:
    out: dict[str, Any] = {name: text(form, name) for name in ("name", "email", *BILLING_FIELDS)}
    out["tax_exempt"] = form.get("tax_exempt") == "on"
    return out


@router.post("/customers/{customer_id}")
async def update_customer(
    request: Request, user: AdminForm, session: SessionDep, clock: ClockDep, customer_id: DbId
) -> Response:
    """The billing details form: every field is sent, a blank one clears its value."""
    form = _details_form(await request.form())
    try:
        data = CustomerUpdate.model_validate(form)
    except ValidationError as exc:
        return await _customer_page(
            request, user, session, customer_id, clock.now(),
            errors=validation_messages(exc), form=form, status_code=422,
        )  # fmt: skip
    _, error = await attempt(
        session, service.update_customer(session, user.principal, customer_id, data)
    )
    if error is not None:
        if isinstance(error, CustomerNotFound):
            return await _customer_page(request, user, session, customer_id, clock.now())
        return await _customer_page(
            request, user, session, customer_id, clock.now(),
            errors=[error.message], form=form, status_code=error.status_code,
        )  # fmt: skip
    return secure(RedirectResponse(f"/console/customers/{customer_id}", status_code=303))


async def _status_change(
    request: Request,
    user: ConsoleUser,
    session: AsyncSession,
    customer_id: int,
    now: Any,
    suspend: bool,
) -> Response:
    change = service.suspend_customer if suspend else service.reactivate_customer
    _, error = await attempt(session, change(session, user.principal, customer_id))
    if error is not None:
        return await _customer_page(
            request, user, session, customer_id, now,
            errors=[error.message], status_code=error.status_code,
        )  # fmt: skip
    return secure(RedirectResponse(f"/console/customers/{customer_id}", status_code=303))


@router.post("/customers/{customer_id}/suspend")
async def suspend_customer(
    request: Request, user: AdminForm, session: SessionDep, clock: ClockDep, customer_id: DbId
) -> Response:
    return await _status_change(request, user, session, customer_id, clock.now(), True)


@router.post("/customers/{customer_id}/reactivate")
async def reactivate_customer(
    request: Request, user: AdminForm, session: SessionDep, clock: ClockDep, customer_id: DbId
) -> Response:
    return await _status_change(request, user, session, customer_id, clock.now(), False)


@router.post("/customers/{customer_id}/plan")
async def assign_plan(
    request: Request, user: AdminForm, session: SessionDep, clock: ClockDep, customer_id: DbId
) -> Response:
    """Put the customer on a plan (its latest version) from the next period or now."""
    form = await request.form()
    try:
        data = PlanAssign.model_validate(
            {
                "plan_id": text(form, "plan_id"),
                "effective": text(form, "effective") or Effective.next_period,
            }
        )
    except ValidationError as exc:
        return await _customer_page(
            request, user, session, customer_id, clock.now(),
            errors=validation_messages(exc), status_code=422,
        )  # fmt: skip
    _, error = await attempt(
        session, plans.assign_plan(session, user.principal, customer_id, data, now=clock.now())
    )
    if error is not None:
        return await _customer_page(
            request, user, session, customer_id, clock.now(),
            errors=[error.message], status_code=error.status_code,
        )  # fmt: skip
    return secure(RedirectResponse(f"/console/customers/{customer_id}", status_code=303))
