"""Admin pages for price plans: list, a plan's version history, an editor for a new plan or
a new version (a fixed number of component and tier rows; blank rows are ignored), and a
live price calculator on the pricing engine that rates invoices (``app.money.pricing``)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import RedirectResponse, Response

from app.console.deps import AdminUser, ConsoleUser
from app.console.staff_common import AdminForm, attempt, text, validation_messages
from app.console.web import render, secure
from app.db.session import SessionDep
from app.money.display import minor_string, plain
from app.money.pricing import PriceComponent, Pricing, PricingError, Unit, describe, rate, to_minor
from app.orm import PlanVersion
from app.plans import service
from app.plans.errors import PlanNotFound
from app.plans.schemas import PlanCreate, PlanDefinition
from app.validation import DbId

router = APIRouter(include_in_schema=False)

COMPONENT_ROWS = 3
TIER_ROWS = 4
SAMPLE_QUANTITIES = ("6", "20", "1000")
_COMPONENT_FIELDS = (
    "unit",
    "pricing",
    "unit_price",
    "package_size",
    "included",
    "model",
    "variant",
)
_TIER_FIELDS = ("up_to", "unit_price", "flat_fee")
# The largest quantity the calculator prices (an invoice line's quantity column holds less).
_MAX_UNITS = Decimal(10) ** 18


def parse_definition(form: Any) -> dict[str, Any]:
    """The editor's fields as the API's plan body. A component row without a unit is
    blank, a tier row with no value at all too; both are left out."""
    components = []
    for i in range(COMPONENT_ROWS):
        if text(form, f"c{i}_unit") is None:
            continue
        component: dict[str, Any] = {}
        for name in _COMPONENT_FIELDS:
            value = text(form, f"c{i}_{name}")
            if value is not None:
                component[name] = value
        tiers = []
        for j in range(TIER_ROWS):
            tier = {name: text(form, f"c{i}_t{j}_{name}") for name in _TIER_FIELDS}
            if all(v is None for v in tier.values()):
                continue
            tiers.append({k: v for k, v in tier.items() if v is not None or k == "up_to"})
        if tiers:
            component["tiers"] = tiers
        components.append(component)
    body: dict[str, Any] = {"components": components}
    for name in ("name", "currency", "base_fee", "spend_cap"):
        value = text(form, name)
        if value is not None:
            body[name] = value
    for name in ("requests_per_minute", "items_per_minute"):
        value = text(form, name)
        if value is not None:
            body[name] = int(value) if value.isdigit() else value
    return body


def _shown(value: Any) -> str:
    if value is None:
        return ""
    try:
        return plain(Decimal(str(value)))
    except InvalidOperation:
        return str(value)


def editor_values(version: PlanVersion | None) -> dict[str, str]:
    """The editor's fields filled with a version (for its next one), or blank."""
    if version is None:
        return {"currency": "usd", "base_fee": "0"}
    values = {
        "currency": version.currency,
        "base_fee": _shown(version.base_fee),
        "spend_cap": _shown(version.spend_cap),
        "requests_per_minute": str(version.requests_per_minute or ""),
        "items_per_minute": str(version.items_per_minute or ""),
    }
    for i, component in enumerate(version.components[:COMPONENT_ROWS]):
        for name in _COMPONENT_FIELDS:
            value = component.get(name)
            numeric = name in ("unit_price", "package_size", "included")
            values[f"c{i}_{name}"] = _shown(value) if numeric else (value or "")
        for j, tier in enumerate(component.get("tiers", [])[:TIER_ROWS]):
            for name in _TIER_FIELDS:
                values[f"c{i}_t{j}_{name}"] = _shown(tier.get(name))
    return values


def _form_values(form: Any) -> dict[str, str]:
    return {k: v for k, v in form.items() if isinstance(v, str) and k != "csrf_token"}


def _editor_context() -> dict[str, Any]:
    return {
        "component_rows": range(COMPONENT_ROWS),
        "tier_rows": range(TIER_ROWS),
        "units": [u.value for u in Unit],
        "pricings": [p.value for p in Pricing],
    }


@router.get("/plans")
async def plans(request: Request, user: AdminUser, session: SessionDep) -> Response:
    return render(
        request,
        "staff/plans.html",
        {"user": user, "plans": [(p, v) for p, v in await service.list_plans(session) if v]},
    )


def _editor_page(
    request: Request,
    user: ConsoleUser,
    values: dict[str, str],
    errors: list[str] | None = None,
    status_code: int = 200,
) -> Response:
    return render(
        request,
        "staff/plan_new.html",
        {"user": user, "values": values, "errors": errors or [], **_editor_context()},
        status_code,
    )


@router.get("/plans/new")
async def new_plan(request: Request, user: AdminUser) -> Response:
    return _editor_page(request, user, editor_values(None))


@router.post("/plans")
async def create_plan(request: Request, user: AdminForm, session: SessionDep) -> Response:
    """Create a plan (its version 1) through the plans service with the API's PlanCreate."""
    form = await request.form()
    try:
        data = PlanCreate.model_validate(parse_definition(form))
    except ValidationError as exc:
        return _editor_page(request, user, _form_values(form), validation_messages(exc), 422)
    created, error = await attempt(session, service.create_plan(session, user.principal, data))
    if error is not None or created is None:
        message = error.message if error else "refused"
        return _editor_page(
            request, user, _form_values(form), [message], error.status_code if error else 409
        )
    return secure(RedirectResponse(f"/console/plans/{created[0].id}", status_code=303))


class Quote:
    """What ``units`` of one component cost: exact, and rounded as an invoice line is."""

    def __init__(self, component: PriceComponent, currency: str, units: Decimal) -> None:
        self.units = plain(units)
        self.currency = currency
        self.error: str | None = None
        self.exact = ""  # shown only when the invoice's rounding changes the amount
        self.amount = ""
        try:
            amount = rate(component, units)
            self.amount = minor_string(to_minor(amount, currency), currency)
            if amount != Decimal(self.amount):
                self.exact = plain(amount)
        except PricingError as exc:
            self.error = str(exc)


def _components(version: PlanVersion) -> list[tuple[PriceComponent | None, str]]:
    out: list[tuple[PriceComponent | None, str]] = []
    for raw in version.components:
        try:
            component = PriceComponent.from_dict(raw)
            out.append((component, describe(component)))
        except PricingError as exc:
            out.append((None, f"cannot be priced: {exc}"))
    return out


async def _plan_page(
    request: Request,
    user: ConsoleUser,
    session: AsyncSession,
    plan_id: int,
    *,
    quote: Quote | None = None,
    quote_component: int = 0,
    values: dict[str, str] | None = None,
    errors: list[str] | None = None,
    status_code: int = 200,
) -> Response:
    found, error = await attempt(session, service.get_plan(session, plan_id), read_only=True)
    if error is not None or found is None:
        return render(
            request,
            "error.html",
            {"user": user, "title": "Not found", "message": f"plan {plan_id} does not exist"},
            404,
        )
    plan, versions = found
    current = versions[-1]
    components = _components(current)
    samples = [
        [Quote(c, current.currency, Decimal(q)) for q in SAMPLE_QUANTITIES] if c else []
        for c, _ in components
    ]
    return render(
        request,
        "staff/plan.html",
        {
            "user": user,
            "plan": plan,
            "versions": [(v, _components(v)) for v in reversed(versions)],
            "current": current,
            "components": components,
            "samples": samples,
            "sample_quantities": SAMPLE_QUANTITIES,
            "quote": quote,
            "quote_component": quote_component,
            "values": values or editor_values(current),
            "errors": errors or [],
            **_editor_context(),
        },
        status_code,
    )


@router.get("/plans/{plan_id}")
async def plan_page(
    request: Request, user: AdminUser, session: SessionDep, plan_id: DbId
) -> Response:
    return await _plan_page(request, user, session, plan_id)


@router.post("/plans/{plan_id}/versions")
async def new_version(
    request: Request, user: AdminForm, session: SessionDep, plan_id: DbId
) -> Response:
    """Write the editor's definition as the plan's next version (``PUT /admin/plans/{id}``)."""
    form = await request.form()
    body = parse_definition(form)
    body.pop("name", None)
    try:
        data = PlanDefinition.model_validate(body)
    except ValidationError as exc:
        return await _plan_page(
            request, user, session, plan_id,
            values=_form_values(form), errors=validation_messages(exc), status_code=422,
        )  # fmt: skip
    _, error = await attempt(session, service.update_plan(session, user.principal, plan_id, data))
    if error is not None:
        if isinstance(error, PlanNotFound):
            return await _plan_page(request, user, session, plan_id)
        return await _plan_page(
            request, user, session, plan_id,
            values=_form_values(form), errors=[error.message], status_code=error.status_code,
        )  # fmt: skip
    return secure(RedirectResponse(f"/console/plans/{plan_id}", status_code=303))


@router.get("/plans/{plan_id}/quote")
async def quote(
    request: Request,
    user: AdminUser,
    session: SessionDep,
    plan_id: DbId,
    units: Annotated[str, Query(max_length=40)] = "0",
    component: Annotated[int, Query(ge=0, le=1000)] = 0,
) -> Response:
    """What ``units`` of component ``component`` of the plan's current version cost,
    computed by ``app.money.pricing.rate``: an htmx fragment, or the plan page without
    JavaScript."""
    found, error = await attempt(session, service.get_plan(session, plan_id), read_only=True)
    if error is not None or found is None:
        return render(
            request,
            "error.html",
            {"user": user, "title": "Not found", "message": f"plan {plan_id} does not exist"},
            404,
        )
    version = found[1][-1]
    result: Quote | None = None
    problem: str | None = None
    try:
        quantity = Decimal(units.strip() or "0")
        if not quantity.is_finite() or quantity < 0 or quantity >= _MAX_UNITS:
            raise InvalidOperation
    except InvalidOperation:
        problem = "the quantity must be a number from 0 to 10^18"
    else:
        components = _components(version)
        if component >= len(components):
            problem = "the plan has no such component"
        else:
            priced, text_ = components[component]
            if priced is None:
                problem = text_
            else:
                result = Quote(priced, version.currency, quantity)
    if problem is not None:
        result = None
    if request.headers.get("hx-request"):
        # Always 200: htmx swaps in only successful answers, and the problem is the answer.
        return render(request, "staff/_quote.html", {"quote": result, "problem": problem})
    return await _plan_page(
        request,
        user,
        session,
        plan_id,
        quote=result,
        quote_component=component,
        errors=[problem] if problem else None,
        status_code=200 if problem is None else 422,
    )
