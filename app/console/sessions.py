"""Console sessions: a random token in the browser, its SHA-256 in ``console_sessions``.

A session ends on logout, after ``console_idle_timeout_s`` without a page, or
``console_max_age_s`` after sign-in. The key that signed in is checked on every page like an
API call, so a revoked or expired key, or a suspended customer, ends the session at once
(within the key cache TTL)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.orm import ApiKey, ConsoleSession

# last_seen_at is written at most this often per session (not on every page).
_TOUCH_EVERY = timedelta(seconds=60)


def token_id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class OpenSession:
    id: str
    key_id: int
    key_hash: str
    csrf_token: str


async def start(session: AsyncSession, key_id: int, now: datetime) -> tuple[str, str]:
    """A new session for ``key_id``: (the browser's token, the CSRF token)."""
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    session.add(
        ConsoleSession(
            id=token_id(token), key_id=key_id, csrf_token=csrf, created_at=now, last_seen_at=now
        )
    )
    await session.flush()
    return token, csrf


async def resume(
    session: AsyncSession, token: str, now: datetime, *, idle: timedelta, max_age: timedelta
) -> OpenSession | None:
    """The open session of ``token``, or None (unknown, ended, idle or too old; an idle or
    too old one is ended here)."""
    row = (
        await session.execute(
            select(ConsoleSession, ApiKey.hash)
            .join(ApiKey, ApiKey.id == ConsoleSession.key_id)
            .where(ConsoleSession.id == token_id(token))
        )
    ).first()
    if row is None:
        return None
    found, key_hash = row
    if found.ended_at is not None:
        return None
    if now - found.last_seen_at > idle or now - found.created_at > max_age:
        found.ended_at = now
        return None
    if now - found.last_seen_at > _TOUCH_EVERY:
        found.last_seen_at = now
    return OpenSession(found.id, found.key_id, key_hash, found.csrf_token)


async def end(session: AsyncSession, session_id: str, now: datetime) -> None:
    await session.execute(
        update(ConsoleSession)
        .where(ConsoleSession.id == session_id, ConsoleSession.ended_at.is_(None))
        .values(ended_at=now)
    )
