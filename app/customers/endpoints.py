from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, status

from app.auth.deps import Admin, ProtectedRoute
from app.customers import service
from app.customers.schemas import CustomerCreate, CustomerList, CustomerOut, CustomerUpdate
from app.db.session import SessionDep
from app.errors import error_schema
from app.orm import Customer
from app.validation import DbId

router = APIRouter(prefix="/admin/customers", tags=["customers"], route_class=ProtectedRoute)

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: error_schema("Missing or invalid API key"),
    403: error_schema("The key lacks the admin scope"),
}
_ONE: dict[int | str, dict[str, Any]] = {**_ERRORS, 404: error_schema("No such customer")}
_TAX = error_schema(
    "Invalid fields, or a tax rate together with an exemption, or an exemption without a "
    "tax_note (`invalid_tax_treatment`)"
)


def _out(customer: Customer) -> CustomerOut:
    return CustomerOut.model_validate(customer, from_attributes=True)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={**_ERRORS, 409: error_schema("Name taken"), 422: _TAX},
)
async def create_customer(actor: Admin, session: SessionDep, body: CustomerCreate) -> CustomerOut:
    """Create a customer (active, no plan yet), optionally with its billing details. Names
    are unique. Audited."""
    return _out(await service.create_customer(session, actor, body))


@router.get("", responses=_ERRORS)
async def list_customers(
    _: Admin,
    session: SessionDep,
    status: Annotated[str | None, Query(pattern="^(active|suspended)$")] = None,
) -> CustomerList:
    """Every customer, optionally only the active or the suspended ones."""
    return CustomerList(data=[_out(c) for c in await service.list_customers(session, status)])


@router.get("/{customer_id}", responses=_ONE)
async def get_customer(_: Admin, session: SessionDep, customer_id: DbId) -> CustomerOut:
    """One customer: name, email, status and Stripe id."""
    return _out(await service.get_customer(session, customer_id))


@router.patch("/{customer_id}", responses={**_ONE, 409: error_schema("Name taken"), 422: _TAX})
async def update_customer(
    actor: Admin, session: SessionDep, customer_id: DbId, body: CustomerUpdate
) -> CustomerOut:
    """Change the name, email or billing details: only the fields sent, `null` clears one.
    The tax treatment that results is a `tax_rate`, or `tax_exempt` with a `tax_note`, never
    both (422 `invalid_tax_treatment`). Invoices already finalized keep the details they
    were issued with. Audited."""
    return _out(await service.update_customer(session, actor, customer_id, body))


@router.post(
    "/{customer_id}/suspend",
    responses={
        **_ONE,
        409: error_schema(
            "The calling key's own customer (`own_customer`), or the operator account "
            "(`operator_account`)"
        ),
    },
)
async def suspend_customer(actor: Admin, session: SessionDep, customer_id: DbId) -> CustomerOut:
    """Every key of the customer gets 403 ``customer_suspended`` within 1 s."""
    return _out(await service.suspend_customer(session, actor, customer_id))


@router.post("/{customer_id}/reactivate", responses=_ONE)
async def reactivate_customer(actor: Admin, session: SessionDep, customer_id: DbId) -> CustomerOut:
    """The customer's keys work again (within the key cache TTL). Audited."""
    return _out(await service.reactivate_customer(session, actor, customer_id))
