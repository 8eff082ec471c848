from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from app.audit import service
from app.auth.deps import Admin, ProtectedRoute
from app.db.session import SessionDep
from app.errors import error_schema
from app.validation import DbId, Text, Timestamp

router = APIRouter(prefix="/admin", tags=["audit"], route_class=ProtectedRoute)


class AuditOut(BaseModel):
    id: int
    actor: str
    actor_key_id: int | None
    action: str
    target_type: str
    target_id: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    created_at: datetime


class AuditList(BaseModel):
    data: list[AuditOut]


@router.get(
    "/audit",
    responses={401: error_schema("Missing or invalid key"), 403: error_schema("Not admin")},
)
async def list_audit(
    _: Admin,
    session: SessionDep,
    action: Annotated[Text | None, Query(max_length=100)] = None,
    target_type: Annotated[Text | None, Query(max_length=100)] = None,
    target_id: Annotated[Text | None, Query(max_length=200)] = None,
    actor_key_id: DbId | None = None,
    since: Timestamp | None = None,
    until: Timestamp | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditList:
    """Admin and finance writes, newest first."""
    rows = await service.search(
        session,
        action=action,
        target_type=target_type,
        target_id=target_id,
        actor_key_id=actor_key_id,
        since=since,
        until=until,
        limit=limit,
    )
    return AuditList(data=[AuditOut.model_validate(r, from_attributes=True) for r in rows])
