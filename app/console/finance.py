"""Finance pages of the console: invoices (filters, pages, documents), previews, closing a
month (a dry run first, then a confirmation), void and credit notes, Stripe sync and
reconciliation.

Each page calls the function behind the matching ``/finance`` route (``app.billing.endpoints``,
``app.billing.corrections_endpoints``), as ``/v1/billing`` does for customers, so the
console shows what the API returns and writes what the API writes (audited, as the signed-in
key). A refusal of the service (an :class:`AppError`: 409, 422, ...) is shown on the page
with its message; the reports are in :mod:`app.console.finance_reports`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import RedirectResponse, Response

from app.billing import corrections_endpoints as credit_routes
from app.billing import endpoints as finance_routes
from app.billing.credit_schemas import CreditNoteCreate, VoidIn
from app.billing.deps import stripe_gateway
from app.billing.repository import invoice_page
from app.billing.schemas import InvoiceOut
from app.clock.deps import ClockDep
from app.console import finance_reports
from app.console.deps import Csrf, FinanceUser
from app.console.web import render, secure
from app.customers.repository import find_customer
from app.db.session import SessionDep
from app.errors import AppError
from app.money.periods import Period
from app.money.pricing import minor_exponent
from app.validation import DbId

router = APIRouter(prefix="/console", include_in_schema=False)
router.include_router(finance_reports.router)  # /console/reports

PER_PAGE = 50
STATUSES = ("draft", "finalized", "paid", "void", "uncollectible")
_DONE = {
    "voided": "The invoice is void. Stripe learns of it on the next sync.",
    "credited": "The credit note is issued. Stripe gets it on the next sync.",
}


def _problem(exc: ValidationError) -> str:
    """A pydantic refusal in words (the form's fields, not JSON paths)."""
    return "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())


def _previous(period: Period) -> Period:
    year, month = (period.year, period.month - 1) if period.month > 1 else (period.year - 1, 12)
    return Period(year, month)


def _page_number(text: str) -> int:
    return int(text) if text.isdigit() and 0 < len(text) < 7 and int(text) > 0 else 1


def _not_found(request: Request, user: FinanceUser, message: str) -> Response:
    return render(
        request, "error.html", {"user": user, "title": "Not found", "message": message}, 404
    )


# ----------------------------------------------------------------------------- invoices


@router.get("/billing")
async def billing(
    request: Request,
    user: FinanceUser,
    session: SessionDep,
    clock: ClockDep,
    customer: str = "",
    period: str = "",
    status: str = "",
    page: str = "1",
) -> Response:
    """Invoices, newest first, 50 a page, filtered by customer (id or name), period, status;
    with the forms that preview an invoice, close a month and reach Stripe."""
    errors: list[str] = []
    filters: dict[str, Any] = {}
    customer, period, status = customer.strip()[:200], period.strip()[:7], status.strip()
    if customer:
        found = await find_customer(session, customer)
        if found is None:
            errors.append(f"No customer has the id or name {customer!r}.")
        else:
            filters["customer_id"] = found.id
    if period:
        try:
            filters["period"] = Period.parse(period)
        except AppError as exc:
            errors.append(exc.message)
    if status:
        if status in STATUSES:
            filters["status"] = status
        else:
            errors.append(f"Status must be one of {', '.join(STATUSES)}.")
    number = _page_number(page)
    result = None
    if not errors:
        result = await invoice_page(
            session, offset=(number - 1) * PER_PAGE, limit=PER_PAGE, **filters
        )
    total = result.total if result else 0
    query = {k: v for k, v in (("customer", customer), ("period", period), ("status", status)) if v}
    now = Period.containing(clock.now())
    return render(
        request,
        "finance/billing.html",
        {
            "user": user,
            "errors": errors,
            "rows": result.rows if result else [],
            "total": total,
            "page": number,
            "pages": max(1, -(-total // PER_PAGE)),
            "query": query,
            "link": lambda n: "/console/billing?" + urlencode({**query, "page": n}),
            "statuses": STATUSES,
            "this_period": str(now),
            "last_period": str(_previous(now)),
            "stripe_enabled": stripe_gateway(request) is not None,
        },
        400 if errors else 200,
    )


async def _invoice_context(
    request: Request, user: FinanceUser, session: AsyncSession, invoice_id: int
) -> dict[str, Any]:
    invoice = await finance_routes.get_invoice(user.principal, request, session, invoice_id)
    credits = await credit_routes.invoice_credits(user.principal, session, invoice_id)
    return {"user": user, "invoice": invoice, "credits": credits}


async def _document(
    request: Request, user: FinanceUser, make: Callable[[], Awaitable[Response]]
) -> Response:
    """A document from the ``/finance`` route's own function; the 404 page when missing."""
    try:
        return secure(await make())
    except AppError as exc:
        return _not_found(request, user, exc.message)


@router.get("/billing/invoices/{invoice_id}.pdf")
async def invoice_pdf(
    request: Request, user: FinanceUser, session: SessionDep, invoice_id: DbId
) -> Response:
    """The PDF sent to the customer (``GET /finance/invoices/{id}.pdf``'s own function)."""
    return await _document(
        request, user, lambda: finance_routes.invoice_pdf(user.principal, session, invoice_id)
    )


@router.get("/billing/invoices/{invoice_id}.csv")
async def invoice_csv(
    request: Request, user: FinanceUser, session: SessionDep, invoice_id: DbId
) -> Response:
    return await _document(
        request, user, lambda: finance_routes.invoice_csv(user.principal, session, invoice_id)
    )


@router.get("/billing/credit-notes/{credit_note_id}.pdf")
async def credit_note_pdf(
    request: Request, user: FinanceUser, session: SessionDep, credit_note_id: DbId
) -> Response:
    return await _document(
        request,
        user,
        lambda: credit_routes.credit_note_pdf_route(user.principal, session, credit_note_id),
    )


@router.get("/billing/credit-notes/{credit_note_id}.csv")
async def credit_note_csv(
    request: Request, user: FinanceUser, session: SessionDep, credit_note_id: DbId
) -> Response:
    return await _document(
        request,
        user,
        lambda: credit_routes.credit_note_csv_route(user.principal, session, credit_note_id),
    )


@router.get("/billing/invoices/{invoice_id}")
async def invoice(
    request: Request, user: FinanceUser, session: SessionDep, invoice_id: DbId, done: str = ""
) -> Response:
    """One invoice: parties, lines, totals, Stripe state, credit notes, documents, and the
    void and credit note forms."""
    try:
        context = await _invoice_context(request, user, session, invoice_id)
    except AppError as exc:
        return _not_found(request, user, exc.message)
    return render(request, "finance/invoice.html", {**context, "notice": _DONE.get(done)})


async def _refused(
    request: Request,
    user: FinanceUser,
    session: AsyncSession,
    invoice_id: int,
    message: str,
    status_code: int,
    form: dict[str, str],
) -> Response:
    """The invoice page again, with what the service refused and the form as it was sent."""
    await session.rollback()
    try:
        context = await _invoice_context(request, user, session, invoice_id)
    except AppError as exc:
        return _not_found(request, user, exc.message)
    context.update(error=message, form=form)
    return render(request, "finance/invoice.html", context, status_code)


@router.post("/billing/invoices/{invoice_id}/void")
async def void_invoice(
    request: Request,
    user: FinanceUser,
    _: Csrf,
    session: SessionDep,
    clock: ClockDep,
    invoice_id: DbId,
    reason: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    """Void an issued, unpaid invoice without credit notes
    (``POST /finance/invoices/{id}/void``)."""
    try:
        body = VoidIn(reason=reason)
        await credit_routes.void_invoice(user.principal, session, clock, invoice_id, body)
    except ValidationError as exc:
        return await _refused(
            request, user, session, invoice_id, f"Void: {_problem(exc)}", 422, {"reason": reason}
        )
    except AppError as exc:
        return await _refused(
            request, user, session, invoice_id, exc.message, exc.status_code, {"reason": reason}
        )
    target = f"/console/billing/invoices/{invoice_id}?done=voided"
    return secure(RedirectResponse(target, status_code=303))


def _minor_units(amount: str, currency: str) -> int:
    """An amount typed in the invoice's currency ("12.50") as minor units, exactly."""
    try:
        value = Decimal(amount.strip())
    except InvalidOperation:
        raise ValueError(f"the amount {amount!r} is not a number") from None
    minor = value.scaleb(minor_exponent(currency)) if value.is_finite() else value
    if not minor.is_finite() or minor != minor.to_integral_value() or minor <= 0:
        raise ValueError(
            f"the amount must be positive, with at most {minor_exponent(currency)} decimals"
        )
    return int(minor)


@router.post("/billing/invoices/{invoice_id}/credit-notes")
async def credit_invoice(
    request: Request,
    user: FinanceUser,
    _: Csrf,
    session: SessionDep,
    clock: ClockDep,
    invoice_id: DbId,
    reason: Annotated[str, Form(max_length=1000)] = "",
    amount: Annotated[str, Form(max_length=40)] = "",
    line: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    """Issue a credit note, before tax, on the invoice as a whole or on one of its lines
    (``POST /finance/invoices/{id}/credit-notes``)."""
    form = {"reason": reason, "amount": amount, "line": line}
    try:
        shown = await finance_routes.get_invoice(user.principal, request, session, invoice_id)
        minor = _minor_units(amount, shown.currency)
        target: dict[str, Any] = (
            {"lines": [{"invoice_line_position": int(line), "amount_minor": minor}]}
            if line.isdigit()
            else {"amount_minor": minor}
        )
        body = CreditNoteCreate.model_validate({"reason": reason, **target})
        await credit_routes.create_credit_note(user.principal, session, clock, invoice_id, body)
    except ValueError as exc:  # pydantic's ValidationError too
        message = _problem(exc) if isinstance(exc, ValidationError) else str(exc)
        return await _refused(
            request, user, session, invoice_id, f"Credit note: {message}", 422, form
        )
    except AppError as exc:
        return await _refused(
            request, user, session, invoice_id, exc.message, exc.status_code, form
        )
    target_url = f"/console/billing/invoices/{invoice_id}?done=credited"
    return secure(RedirectResponse(target_url, status_code=303))


# ----------------------------------------------------------------------------- preview


@router.get("/billing/preview")
async def preview(
    request: Request,
    user: FinanceUser,
    session: SessionDep,
    clock: ClockDep,
    customer: str = "",
    period: str = "",
) -> Response:
    """Any customer's invoice for a period to date (``GET /finance/invoices/preview``)."""
    customer, period = customer.strip()[:200], period.strip()[:7]
    context: dict[str, Any] = {"user": user, "customer": customer, "period": period}
    draft: InvoiceOut | None = None
    status = 200
    if customer:
        found = await find_customer(session, customer)
        if found is None:
            context["error"], status = f"No customer has the id or name {customer!r}.", 404
        else:
            try:
                draft = await finance_routes.preview_invoice(
                    user.principal, request, session, clock, found.id, period or None
                )
            except AppError as exc:
                context["error"], status = exc.message, exc.status_code
    context["draft"] = draft
    return render(request, "finance/preview.html", context, status)


# ----------------------------------------------------------------------------- close


async def _dry_run(
    request: Request, user: FinanceUser, session: AsyncSession, clock: ClockDep, period: str
) -> dict[str, Any]:
    """What a close would write now (``POST /finance/periods/{p}/close?dry_run=true``)."""
    result = await finance_routes.close_period(
        user.principal, request, session, clock, period, True
    )
    return {"result": result, "closable": clock.now() >= result.closable_from}


@router.get("/billing/close")
async def close_preview(
    request: Request, user: FinanceUser, session: SessionDep, clock: ClockDep, period: str = ""
) -> Response:
    """The dry run of a close, and the form that confirms it. Writes nothing."""
    period = period.strip()[:7]
    context: dict[str, Any] = {"user": user, "period": period}
    status = 200
    if period:
        try:
            context.update(await _dry_run(request, user, session, clock, period))
        except AppError as exc:
            context["error"], status = exc.message, exc.status_code
    return render(request, "finance/close.html", context, status)


@router.post("/billing/close")
async def close(
    request: Request,
    user: FinanceUser,
    _: Csrf,
    session: SessionDep,
    clock: ClockDep,
    period: Annotated[str, Form(max_length=7)] = "",
    confirm: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    """Close the month for real (``POST /finance/periods/{p}/close``), once confirmed: one
    invoice per customer, numbered and finalized, audited as the signed-in key."""
    context: dict[str, Any] = {"user": user, "period": period}
    if confirm != "yes":
        context["error"] = "Tick “I confirm” to close the month."
        try:
            context.update(await _dry_run(request, user, session, clock, period))
        except AppError as exc:
            context["error"] = exc.message
        return render(request, "finance/close.html", context, 422)
    try:
        result = await finance_routes.close_period(
            user.principal, request, session, clock, period, False
        )
    except AppError as exc:
        await session.rollback()
        context["error"] = exc.message
        return render(request, "finance/close.html", context, exc.status_code)
    context.update(result=result, closed=True)
    return render(request, "finance/close.html", context)


# ----------------------------------------------------------------------------- Stripe

_NOT_CONFIGURED = (
    "Stripe is not configured (TOLLGATE_STRIPE_API_KEY is not set): invoices stay local "
    "and are not collected."
)


@router.get("/billing/stripe")
async def stripe(
    request: Request, user: FinanceUser, session: SessionDep, period: str = ""
) -> Response:
    """Stripe's side: whether it is configured, the sync form, and the reconciliation of a
    period (local totals against Stripe's, ``GET /finance/reports/reconciliation``)."""
    period = period.strip()[:7]
    context: dict[str, Any] = {"user": user, "period": period, "configured": True}
    status = 200
    if stripe_gateway(request) is None:
        context.update(configured=False, error=_NOT_CONFIGURED)
    elif period:
        try:
            context["report"] = await finance_routes.reconciliation(
                user.principal, request, session, period
            )
        except AppError as exc:
            context["error"], status = exc.message, exc.status_code
    return render(request, "finance/stripe.html", context, status)


@router.post("/billing/sync")
async def sync(
    request: Request,
    user: FinanceUser,
    _: Csrf,
    period: Annotated[str, Form(max_length=7)] = "",
) -> Response:
    """Sync now (``POST /finance/sync``): push the finalized invoices not yet in Stripe, the
    voids and the credit notes."""
    context: dict[str, Any] = {"user": user, "period": period, "configured": True}
    if stripe_gateway(request) is None:
        context.update(configured=False, error=_NOT_CONFIGURED)
        return render(request, "finance/stripe.html", context, 503)
    try:
        context["synced"] = await finance_routes.sync_to_stripe(
            user.principal, request, period.strip() or None
        )
    except AppError as exc:
        context["error"] = exc.message
        return render(request, "finance/stripe.html", context, exc.status_code)
    return render(request, "finance/stripe.html", context)
