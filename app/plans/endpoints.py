from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status

from app.auth.deps import Admin, ProtectedRoute
from app.clock.deps import ClockDep
from app.db.session import SessionDep
from app.errors import error_schema
from app.orm import Plan, PlanVersion
from app.plans import service
from app.plans.errors import PlanNotFound
from app.plans.schemas import (
    ComponentOut,
    CustomerPlanOut,
    PlanAssign,
    PlanCreate,
    PlanDefinition,
    PlanList,
    PlanOut,
    PlanVersionOut,
)
from app.validation import DbId

router = APIRouter(prefix="/admin", tags=["plans"], route_class=ProtectedRoute)

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: error_schema("Missing or invalid API key"),
    403: error_schema("The key lacks the admin scope"),
}


def _version_out(v: PlanVersion) -> PlanVersionOut:
    return PlanVersionOut(
        id=v.id,
        version=v.version,
        currency=v.currency,
        base_fee=v.base_fee,
        components=[ComponentOut.model_validate(c) for c in v.components],
        requests_per_minute=v.requests_per_minute,
        items_per_minute=v.items_per_minute,
        spend_cap=v.spend_cap,
        created_at=v.created_at,
    )


def _plan_out(plan: Plan, versions: list[PlanVersion]) -> PlanOut:
    return PlanOut(
        id=plan.id,
        name=plan.name,
        archived=plan.archived_at is not None,
        current=_version_out(versions[-1]),
        versions=[v.version for v in versions],
    )


@router.post(
    "/plans",
    status_code=status.HTTP_201_CREATED,
    responses={**_ERRORS, 409: error_schema("Name taken"), 422: error_schema("Invalid plan")},
)
async def create_plan(actor: Admin, session: SessionDep, body: PlanCreate) -> PlanOut:
    """Create a plan and its version 1: currency, base fee, price components, limits, cap."""
    return _plan_out(*await service.create_plan(session, actor, body))


@router.get("/plans", responses=_ERRORS)
async def list_plans(_: Admin, session: SessionDep) -> PlanList:
    """Every plan with its current version."""
    return PlanList(data=[_plan_out(p, v) for p, v in await service.list_plans(session) if v])


@router.get("/plans/{plan_id}", responses={**_ERRORS, 404: error_schema("No such plan")})
async def get_plan(_: Admin, session: SessionDep, plan_id: DbId) -> PlanOut:
    """One plan with its current version and the numbers of all its versions."""
    return _plan_out(*await service.get_plan(session, plan_id))


@router.get(
    "/plans/{plan_id}/versions/{version}", responses={**_ERRORS, 404: error_schema("No such plan")}
)
async def get_plan_version(
    _: Admin, session: SessionDep, plan_id: DbId, version: int
) -> PlanVersionOut:
    """One version of a plan, as invoices rated with it saw it."""
    _plan, versions = await service.get_plan(session, plan_id)
    for v in versions:
        if v.version == version:
            return _version_out(v)
    raise PlanNotFound(f"plan {plan_id} has no version {version}")


@router.put(
    "/plans/{plan_id}",
    responses={
        **_ERRORS,
        404: error_schema("No such plan"),
        409: error_schema("Archived"),
        422: error_schema("Invalid plan"),
    },
)
async def update_plan(
    actor: Admin, session: SessionDep, plan_id: DbId, body: PlanDefinition
) -> PlanOut:
    """Write a new version of the plan; existing versions, customers and invoices keep theirs."""
    return _plan_out(*await service.update_plan(session, actor, plan_id, body))


@router.delete(
    "/plans/{plan_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**_ERRORS, 404: error_schema("No such plan"), 409: error_schema("Plan in use")},
)
async def delete_plan(actor: Admin, session: SessionDep, clock: ClockDep, plan_id: DbId) -> None:
    """Archive a plan nobody uses (409 otherwise); its history stays readable."""
    await service.archive_plan(session, actor, plan_id, now=clock.now())


@router.put(
    "/customers/{customer_id}/plan",
    responses={
        **_ERRORS,
        404: error_schema("No such customer or plan"),
        409: error_schema("Archived plan, or an immediate change of currency"),
    },
)
async def assign_plan(
    actor: Admin, session: SessionDep, clock: ClockDep, customer_id: DbId, body: PlanAssign
) -> CustomerPlanOut:
    """Move a customer to a plan version from the next period (default) or immediately."""
    assignment, plan, version = await service.assign_plan(
        session, actor, customer_id, body, now=clock.now()
    )
    return CustomerPlanOut(
        customer_id=customer_id,
        plan_id=plan.id,
        plan_name=plan.name,
        version=version.version,
        plan_version_id=version.id,
        effective_from=assignment.effective_from,
    )
