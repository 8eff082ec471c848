"""Pages of the operator's staff (admin and finance keys of the operator account)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.console.deps import Staff
from app.console.web import render

router = APIRouter(prefix="/console", include_in_schema=False)


@router.get("/")
async def overview(request: Request, user: Staff) -> Response:
    return render(request, "staff/overview.html", {"user": user})
