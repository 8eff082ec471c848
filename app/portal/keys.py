"""Self-service keys: what a customer's own key may do to its customer's keys.

The rule: a key of a customer (not the operator's) that holds **both** ``billing`` and
``predict`` may create and revoke **predict-only** keys of its own customer; nothing else.

- ``predict`` is required because a key can only hand out what it already has: a new
  predict key grants nothing its creator could not already do. It also inherits the
  creator's model list and per-key rate limits, and cannot outlive it, so a restricted key
  cannot mint an unrestricted one.
- ``billing`` is required because that is the scope of the customer's own console: a plain
  predict key (the one in an application's config) must not be able to mint more keys.
- Billing keys (the creator included) and keys holding any other scope stay with the
  operator's admins (``app.keys.admin``): a customer cannot widen what its keys may read.

Every write goes through ``app.keys.admin`` and is audited with the customer's key as actor.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import Principal, Scope
from app.errors import AppError, Unprocessable
from app.keys.admin import KeyNotFound, issue_key, revoke
from app.keys.schemas import KeyCreate
from app.orm import ApiKey


class SelfServiceForbidden(AppError):
    status_code = 403
    type = "self_service_forbidden"


class OutlivesCreator(Unprocessable):
    type = "expires_after_creator"


def may_manage_keys(principal: Principal) -> bool:
    """Whether ``principal`` may create and revoke its customer's predict-only keys."""
    return not principal.is_staff and {Scope.billing.value, Scope.predict.value} <= set(
        principal.scopes
    )


def _check(principal: Principal) -> None:
    if not may_manage_keys(principal):
        raise SelfServiceForbidden(
            "managing keys needs a key with both the billing and predict scopes; "
            "ask the operator's admin for other changes"
        )


async def create_own_key(
    session: AsyncSession,
    principal: Principal,
    secret_key: str,
    *,
    name: str | None,
    expires_at: datetime | None,
    now: datetime,
) -> tuple[ApiKey, str]:
    """A new predict-only key of the principal's customer, restricted like the principal's
    own key (models, per-key limits) and expiring no later than it. The secret is returned
    only here. 403 ``self_service_forbidden`` without billing + predict, 422 for an expiry
    in the past or after the creator's."""
    _check(principal)
    creator = await session.get(ApiKey, principal.key_id)
    assert creator is not None  # the principal was just authenticated from it
    if creator.expires_at is not None:
        if expires_at is None:
            expires_at = creator.expires_at
        elif expires_at > creator.expires_at:
            raise OutlivesCreator(
                f"a key you create cannot outlive yours (it expires "
                f"{creator.expires_at.isoformat()})"
            )
    data = KeyCreate(
        customer_id=principal.customer_id,
        scopes=[Scope.predict],
        name=name or None,
        expires_at=expires_at,
        allowed_models=creator.allowed_models,
        requests_per_minute=creator.requests_per_minute,
        items_per_minute=creator.items_per_minute,
    )
    return await issue_key(session, principal, secret_key, data, now=now)


async def revoke_own_key(
    session: AsyncSession, principal: Principal, key_id: int, *, now: datetime
) -> tuple[ApiKey, bool]:
    """Revoke one of the customer's predict-only keys now. Another customer's key is a 404
    exactly like a missing one; a key with any other scope is a 403 (the operator's admins
    revoke those)."""
    _check(principal)
    key = await session.get(ApiKey, key_id)
    if key is None or key.customer_id != principal.customer_id:
        raise KeyNotFound(f"key {key_id} does not exist")
    if set(key.scopes) != {Scope.predict.value}:
        raise SelfServiceForbidden(
            f"key {key.prefix} holds {', '.join(key.scopes)}: only predict-only keys can be "
            "revoked here; ask the operator's admin"
        )
    return await revoke(session, principal, key_id, now=now)
