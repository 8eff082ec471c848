"""The audit trail: one row per admin or finance write, in the write's own transaction, so a
change and its record commit or roll back together. Secrets never enter it."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import Principal
from app.orm import AuditEntry

Actor = Principal | str


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    return value


def snapshot(obj: Any, *fields: str) -> dict[str, Any]:
    return {f: _plain(getattr(obj, f)) for f in fields}


async def record(
    session: AsyncSession,
    actor: Actor,
    action: str,
    target_type: str,
    target_id: object | None,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    session.add(
        AuditEntry(
            actor=f"key:{actor.key_id}" if isinstance(actor, Principal) else actor,
            actor_key_id=actor.key_id if isinstance(actor, Principal) else None,
            action=action,
            target_type=target_type,
            target_id=None if target_id is None else str(target_id),
            before=_plain(before) if before is not None else None,
            after=_plain(after) if after is not None else None,
        )
    )
    await session.flush()


def _filters(
    *,
    action: str | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    actor_key_id: int | None = None,
    actor: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[Any]:
    conditions: list[Any] = []
    if action is not None:
        conditions.append(AuditEntry.action == action)
    if target_type is not None:
        conditions.append(AuditEntry.target_type == target_type)
    if target_id is not None:
        conditions.append(AuditEntry.target_id == target_id)
    if actor_key_id is not None:
        conditions.append(AuditEntry.actor_key_id == actor_key_id)
    if actor is not None:
        conditions.append(AuditEntry.actor == actor)
    if since is not None:
        conditions.append(AuditEntry.created_at >= since)
    if until is not None:
        conditions.append(AuditEntry.created_at < until)
    return conditions


async def search(
    session: AsyncSession,
    *,
    action: str | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    actor_key_id: int | None = None,
    actor: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[AuditEntry]:
    """Audit rows matching every filter given, newest first."""
    conditions = _filters(
        action=action,
        target_type=target_type,
        target_id=target_id,
        actor_key_id=actor_key_id,
        actor=actor,
        since=since,
        until=until,
    )
    stmt = (
        select(AuditEntry)
        .where(*conditions)
        .order_by(AuditEntry.id.desc())
        .offset(offset)
        .limit(limit)
    )
    return list(await session.scalars(stmt))


async def count(
    session: AsyncSession,
    *,
    action: str | None = None,
    target_type: str | None = None,
    actor: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> int:
    """How many rows :func:`search` would find with these filters and no limit."""
    conditions = _filters(
        action=action, target_type=target_type, actor=actor, since=since, until=until
    )
    return int(
        await session.scalar(select(func.count()).select_from(AuditEntry).where(*conditions)) or 0
    )
