"""Pages of a customer (its own keys with the billing scope): never another's data."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.console.deps import Customer
from app.console.web import render

router = APIRouter(prefix="/console", include_in_schema=False)


@router.get("/me")
async def usage(request: Request, user: Customer) -> Response:
    return render(request, "customer/usage.html", {"user": user})
