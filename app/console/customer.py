"""Pages of a customer (its own keys with the billing scope): never another's data.

Every read is the customer's own through the same service functions as ``/v1/billing``
(``app.portal.service``, ``app.metering.service``); another customer's invoice, credit note
or key id is the 404 page of a missing one. Key writes follow ``app.portal.keys``' rule
(a key with billing and predict manages its customer's predict-only keys)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from starlette.responses import Response

from app.billing import corrections_endpoints as credits
from app.billing import endpoints as finance
from app.billing.corrections import list_credit_notes
from app.billing.deps import stripe_gateway
from app.billing.schemas import invoice_out
from app.billing.service import get_invoice
from app.clock.deps import ClockDep
from app.config import request_settings
from app.console.deps import ConsoleUser, Csrf, Customer
from app.console.web import render, secure
from app.db.session import SessionDep
from app.errors import AppError, NotFound
from app.metering.schemas import UsageCell
from app.metering.service import usage_breakdown
from app.money.periods import Period
from app.portal import keys as self_service
from app.portal import service
from app.validation import INT64_MAX

router = APIRouter(prefix="/console", include_in_schema=False)


# Ids that cannot exist: the same type and words as the service's own 404s.
class _MissingInvoice(NotFound):
    type = "invoice_not_found"


class _MissingNote(NotFound):
    type = "credit_note_not_found"


class _MissingKey(NotFound):
    type = "key_not_found"


class _BadExpiry(AppError):
    status_code = 422
    type = "invalid_expiry"


def _not_found(request: Request, user: ConsoleUser, exc: AppError) -> Response:
    """A missing id and another customer's id get this same page (the message names only
    the id that was asked for)."""
    return render(
        request, "error.html", {"user": user, "title": "Not found", "message": exc.message}, 404
    )


def _db_id(text: str) -> int | None:
    """A path's id, or None for anything that cannot be one (a 404 like a missing id)."""
    if not text.isdigit() or len(text) > 19 or not 1 <= int(text) <= INT64_MAX:
        return None
    return int(text)


def _page_number(text: str | None) -> int:
    return int(text) if text and text.isdigit() and len(text) < 9 else 1


# --- usage ---------------------------------------------------------------------------


def _series_name(model: str, variant: str) -> str:
    name = model or "(no model)"
    return f"{name} / {variant}" if variant else name


def _days(start: datetime, end: datetime) -> list[str]:
    """Every UTC day that [start, end) touches, as YYYY-MM-DD."""
    first = start.astimezone(UTC).date()
    last = (end.astimezone(UTC) - timedelta(microseconds=1)).date()
    return [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


def usage_views(
    cells: list[UsageCell], start: datetime, end: datetime
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, int]]:
    """What the usage page shows of the breakdown: the chart (requests per day, stacked by
    model and variant; days without usage are zeros), the table by model and variant, and
    the totals. Arrangement only: the counting is the metering service's."""
    days = _days(start, end)
    at = {day: n for n, day in enumerate(days)}
    series: dict[tuple[str, str], list[int]] = {}
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for c in cells:
        key = (c.model, c.variant)
        data = series.setdefault(key, [0] * len(days))
        if c.day in at:
            data[at[c.day]] += c.requests
        row = rows.setdefault(
            key,
            {
                "model": c.model,
                "variant": c.variant,
                "requests": 0,
                "billable_requests": 0,
                "items": 0,
                "errors": 0,
                "compute_us": 0,
            },
        )
        for field in ("requests", "billable_requests", "items", "errors", "compute_us"):
            row[field] += getattr(c, field)
    chart = {
        "type": "bar",
        "stacked": True,
        "labels": days,
        "datasets": [
            {"label": _series_name(*key), "data": data} for key, data in sorted(series.items())
        ],
    }
    table = [rows[key] for key in sorted(rows)]
    totals = {
        field: sum(r[field] for r in table)
        for field in ("requests", "billable_requests", "items", "errors", "compute_us")
    }
    return chart, table, totals


@router.get("/me")
async def usage(request: Request, user: Customer, session: SessionDep, clock: ClockDep) -> Response:
    """Usage by day, model and variant (the last 30 days, or ``?period=YYYY-MM``), spend
    against the cap, and the plan with its prices."""
    customer_id = user.principal.customer_id
    now = clock.now()
    period_text = request.query_params.get("period") or None
    context: dict[str, Any] = {"user": user, "period": period_text or "", "error": None}
    status = 200
    try:
        start = end = None
        if period_text is not None:
            period = Period.parse(period_text)
            start, end = period.start, period.end
        breakdown = await usage_breakdown(session, customer_id, start, end, now=now)
        chart, table, totals = usage_views(breakdown.cells, breakdown.start, breakdown.end)
        context.update(
            start=breakdown.start, end=breakdown.end, chart=chart, table=table, totals=totals
        )
    except AppError as exc:
        context.update(error=exc.message, chart=None, table=[], totals=None)
        status = exc.status_code
    context["plan"] = await service.billing_plan(session, customer_id, now)
    try:
        context["spend"], context["spend_error"] = (
            await service.spend(session, customer_id, now),
            None,
        )
    except AppError as exc:
        context["spend"], context["spend_error"] = None, exc.message
    return render(request, "customer/usage.html", context, status)


# --- invoices and credit notes -------------------------------------------------------


@router.get("/me/invoices")
async def invoices(request: Request, user: Customer, session: SessionDep) -> Response:
    """The customer's issued invoices (never a draft), newest first, 50 a page."""
    page = await service.own_invoices(
        session, user.principal.customer_id, _page_number(request.query_params.get("page"))
    )
    return render(request, "customer/invoices.html", {"user": user, "page": page})


async def _own_invoice_id(session: SessionDep, user: ConsoleUser, text: str) -> int:
    invoice_id = _db_id(text)
    if invoice_id is None:
        raise _MissingInvoice(f"invoice {text} does not exist")
    await service.own_invoice(session, user.principal.customer_id, invoice_id)
    return invoice_id


@router.get("/me/invoices/{invoice_id}.pdf")
async def invoice_pdf(
    request: Request, user: Customer, session: SessionDep, invoice_id: str
) -> Response:
    """The invoice PDF as sent, the very document finance downloads."""
    try:
        own = await _own_invoice_id(session, user, invoice_id)
    except NotFound as exc:
        return _not_found(request, user, exc)
    return secure(await finance.invoice_pdf(user.principal, session, own))


@router.get("/me/invoices/{invoice_id}.csv")
async def invoice_csv(
    request: Request, user: Customer, session: SessionDep, invoice_id: str
) -> Response:
    """The invoice's lines as CSV, as finance exports them."""
    try:
        own = await _own_invoice_id(session, user, invoice_id)
    except NotFound as exc:
        return _not_found(request, user, exc)
    return secure(await finance.invoice_csv(user.principal, session, own))


# Declared after the .pdf and .csv routes, which a bare {invoice_id} would also match.
@router.get("/me/invoices/{invoice_id}")
async def invoice(
    request: Request, user: Customer, session: SessionDep, invoice_id: str
) -> Response:
    """One invoice with its lines, totals and credit notes."""
    try:
        own = await _own_invoice_id(session, user, invoice_id)
    except NotFound as exc:
        return _not_found(request, user, exc)
    stored, lines = await get_invoice(session, own)
    notes = await list_credit_notes(session, invoice_id=own, customer_id=user.principal.customer_id)
    shown = invoice_out(stored, lines, stripe_enabled=stripe_gateway(request) is not None)
    return render(
        request,
        "customer/invoice.html",
        {"user": user, "invoice": shown, "notes": [note for note, _ in notes]},
    )


async def _own_note_id(session: SessionDep, user: ConsoleUser, text: str) -> int:
    note_id = _db_id(text)
    if note_id is None:
        raise _MissingNote(f"credit note {text} does not exist")
    await service.own_credit_note(session, user.principal.customer_id, note_id)
    return note_id


@router.get("/me/credit-notes/{note_id}.pdf")
async def credit_note_pdf(
    request: Request, user: Customer, session: SessionDep, note_id: str
) -> Response:
    try:
        own = await _own_note_id(session, user, note_id)
    except NotFound as exc:
        return _not_found(request, user, exc)
    return secure(await credits.credit_note_pdf_route(user.principal, session, own))


@router.get("/me/credit-notes/{note_id}.csv")
async def credit_note_csv(
    request: Request, user: Customer, session: SessionDep, note_id: str
) -> Response:
    try:
        own = await _own_note_id(session, user, note_id)
    except NotFound as exc:
        return _not_found(request, user, exc)
    return secure(await credits.credit_note_csv_route(user.principal, session, own))


# --- keys ----------------------------------------------------------------------------


async def _keys_page(
    request: Request,
    user: ConsoleUser,
    session: SessionDep,
    *,
    page: int = 1,
    created: tuple[str, str] | None = None,
    error: str | None = None,
    status: int = 200,
) -> Response:
    listed = await service.own_keys(session, user.principal.customer_id, page)
    return render(
        request,
        "customer/keys.html",
        {
            "user": user,
            "page": listed,
            "may_manage": self_service.may_manage_keys(user.principal),
            "created": created,
            "error": error,
        },
        status,
    )


@router.get("/me/keys")
async def keys(request: Request, user: Customer, session: SessionDep) -> Response:
    """The customer's keys: prefix, name, scopes, last use, expiry, revocation. Writable
    only under ``app.portal.keys``' rule."""
    return await _keys_page(
        request, user, session, page=_page_number(request.query_params.get("page"))
    )


def _expiry(text: str) -> datetime | None:
    """The form's expiry (an ``<input type="datetime-local">``, read as UTC)."""
    if not text.strip():
        return None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise _BadExpiry(f"expiry {text!r} is not a date and time") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@router.post("/me/keys")
async def create_key(
    request: Request,
    _: Customer,
    user: Csrf,
    session: SessionDep,
    clock: ClockDep,
    name: Annotated[str, Form(max_length=200)] = "",
    expires_at: Annotated[str, Form(max_length=40)] = "",
) -> Response:
    """A new predict-only key of the customer; its secret is on this response only."""
    try:
        key, secret = await self_service.create_own_key(
            session,
            user.principal,
            request_settings(request).secret_key,
            name=name.strip() or None,
            expires_at=_expiry(expires_at),
            now=clock.now(),
        )
    except AppError as exc:
        await session.rollback()
        return await _keys_page(request, user, session, error=exc.message, status=exc.status_code)
    prefix = key.prefix
    # Committed before the secret is shown: a secret on the page is a key that exists.
    await session.commit()
    return await _keys_page(request, user, session, created=(prefix, secret))


@router.post("/me/keys/{key_id}/revoke")
async def revoke_key(
    request: Request,
    _: Customer,
    user: Csrf,
    session: SessionDep,
    clock: ClockDep,
    key_id: str,
) -> Response:
    """Revoke one of the customer's predict-only keys now."""
    own = _db_id(key_id)
    try:
        if own is None:
            raise _MissingKey(f"key {key_id} does not exist")
        await self_service.revoke_own_key(session, user.principal, own, now=clock.now())
    except AppError as exc:
        await session.rollback()
        return await _keys_page(request, user, session, error=exc.message, status=exc.status_code)
    await session.commit()
    return await _keys_page(request, user, session)
