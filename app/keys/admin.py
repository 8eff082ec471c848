"""Key lifecycle for admins: issue, list, revoke, rotate, expire. Each write is one function
here that also records its audit row in the same transaction; the API and the CLI call the
same ones. The secret exists only in the result of the call that creates it."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import Actor, record, snapshot
from app.auth.principal import STAFF_SCOPES, Principal
from app.customers.errors import CustomerNotFound
from app.customers.service import ensure_customer, get_operator
from app.errors import AppError, NotFound, Unprocessable
from app.keys import repository
from app.keys.schemas import KeyCreate, KeyOptions, parse_key_ref
from app.keys.service import issue_key_record
from app.orm import ApiKey, Customer

FIELDS = (
    "customer_id",
    "name",
    "prefix",
    "last_four",
    "scopes",
    "allowed_models",
    "requests_per_minute",
    "items_per_minute",
    "expires_at",
    "revoked_at",
    "replaced_by",
)


class KeyNotFound(NotFound):
    type = "key_not_found"


class KeyConflict(AppError):
    status_code = 409
    type = "key_conflict"


class ExpiryInThePast(Unprocessable):
    type = "expires_at_in_past"


class OperatorOnlyScope(Unprocessable):
    type = "operator_only_scope"


class NoOperatorAccount(NotFound):
    type = "no_operator_account"


class LegacyStaffKey(AppError):
    status_code = 409
    type = "legacy_staff_key"


REISSUE_HINT = (
    "issue staff keys to the operator account: `tollgate keys create --operator --scope admin`"
)


def _staff(scopes: Iterable[str]) -> list[str]:
    return sorted(set(scopes) & STAFF_SCOPES)


def _check_scopes(customer: Customer, scopes: list[str]) -> None:
    """Only the operator's keys may hold admin or finance: a customer's key that could would
    see (and change) every other customer."""
    staff = _staff(scopes)
    if staff and not customer.is_operator:
        raise OperatorOnlyScope(
            f"only keys of the operator account may hold {' and '.join(staff)}; customer "
            f"{customer.id} ({customer.name}) is not the operator account ({REISSUE_HINT}). "
            "A customer's keys may hold predict and billing.",
            details={"customer_id": customer.id, "scopes": staff},
        )


async def _issue(
    session: AsyncSession,
    actor: Actor,
    secret_key: str,
    customer: Customer,
    data: KeyOptions,
    now: datetime,
) -> tuple[ApiKey, str]:
    customer_id = customer.id
    _check_scopes(customer, [s.value for s in data.scopes])
    if data.expires_at is not None and data.expires_at <= now:
        # A key born expired is a typo (a year, a time zone), never what was meant.
        raise ExpiryInThePast(
            f"expires_at {data.expires_at.isoformat()} is not in the future "
            f"(now: {now.isoformat()})"
        )
    key, secret = await issue_key_record(
        session,
        secret_key,
        customer_id=customer_id,
        scopes=data.scopes,
        name=data.name,
        expires_at=data.expires_at,
        allowed_models=data.allowed_models,
        requests_per_minute=data.requests_per_minute,
        items_per_minute=data.items_per_minute,
    )
    await record(session, actor, "key.create", "api_key", key.id, after=snapshot(key, *FIELDS))
    return key, secret


async def issue_key(
    session: AsyncSession, actor: Actor, secret_key: str, data: KeyCreate, *, now: datetime
) -> tuple[ApiKey, str]:
    """A new key for an existing customer. Admin and finance only for the operator account
    (422 ``operator_only_scope``)."""
    customer = await session.get(Customer, data.customer_id)
    if customer is None:
        raise CustomerNotFound(f"customer {data.customer_id} does not exist")
    return await _issue(session, actor, secret_key, customer, data, now)


async def issue_key_for_customer_name(
    session: AsyncSession,
    actor: Actor,
    secret_key: str,
    customer_name: str,
    data: KeyOptions,
    *,
    now: datetime,
) -> tuple[ApiKey, str]:
    """A new key for the customer called ``customer_name``, created (and audited) if
    missing: how the CLI bootstraps an empty database with its first admin key."""
    customer = await ensure_customer(session, actor, customer_name)
    return await _issue(session, actor, secret_key, customer, data, now)


async def issue_operator_key(
    session: AsyncSession, actor: Actor, secret_key: str, data: KeyOptions, *, now: datetime
) -> tuple[ApiKey, str]:
    """A new key for the operator account, whatever its name (``tollgate keys create
    --operator``): how staff get their admin and finance keys."""
    operator = await get_operator(session)
    if operator is None:
        raise NoOperatorAccount(
            "there is no operator account yet: `tollgate migrate` creates one, or "
            "`tollgate customers create NAME --operator`"
        )
    return await _issue(session, actor, secret_key, operator, data, now)


async def get_key(session: AsyncSession, ref: int | str) -> ApiKey:
    """The key named by its id or its public prefix (``tg_`` + 8 characters), given as an
    int, or as text the way a path or a command line gives it."""
    if isinstance(ref, str):
        try:
            ref = parse_key_ref(ref)
        except ValueError as exc:
            raise KeyNotFound(f"no key {ref!r}: {exc}") from None
    key = (
        await session.get(ApiKey, ref)
        if isinstance(ref, int)
        else await repository.get_by_prefix(session, ref)
    )
    if key is None:
        raise KeyNotFound(f"key {ref} does not exist")
    return key


async def list_keys(
    session: AsyncSession, customer_id: int | None = None, legacy_staff: bool | None = None
) -> list[ApiKey]:
    stmt = select(ApiKey).order_by(ApiKey.id)
    if customer_id is not None:
        stmt = stmt.where(ApiKey.customer_id == customer_id)
    if legacy_staff is not None:
        stmt = stmt.where(ApiKey.legacy_staff.is_(legacy_staff))
    return list(await session.scalars(stmt))


async def search_keys(
    session: AsyncSession,
    *,
    customer_id: int | None = None,
    state: str | None = None,
    now: datetime,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[tuple[ApiKey, str]], int]:
    """One page of keys, newest first, each with its customer's name, and how many match in
    all. ``state``: ``active`` (working at ``now``: neither revoked nor expired; a rotated
    key still in its grace period counts) or ``revoked`` (revoked by ``now``)."""
    conditions = []
    if customer_id is not None:
        conditions.append(ApiKey.customer_id == customer_id)
    if state == "active":
        conditions += [
            or_(ApiKey.revoked_at.is_(None), ApiKey.revoked_at > now),
            or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now),
        ]
    elif state == "revoked":
        conditions.append(ApiKey.revoked_at <= now)
    total = await session.scalar(select(func.count()).select_from(ApiKey).where(*conditions))
    rows = await session.execute(
        select(ApiKey, Customer.name)
        .join(Customer, Customer.id == ApiKey.customer_id)
        .where(*conditions)
        .order_by(ApiKey.id.desc())
        .offset(offset)
        .limit(limit)
    )
    return [(key, name) for key, name in rows.all()], int(total or 0)


class LastAdminKey(AppError):
    status_code = 409
    type = "last_admin_key"


async def _keep_an_admin(session: AsyncSession, actor: Actor, key: ApiKey, now: datetime) -> None:
    """Through the API, the last key that can act as admin cannot be stopped: nobody could
    manage the service any more (409 ``last_admin_key``). The CLI, run by whoever holds the
    database, can."""
    if not isinstance(actor, Principal) or "admin" not in key.scopes:
        return
    if key.expires_at is not None and key.expires_at <= now:
        return  # not a working admin key anyway
    customer = await session.get(Customer, key.customer_id)
    if customer is None or customer.status != "active":
        return
    if not (customer.is_operator or key.legacy_staff):
        return  # its admin scope does not count
    if not await repository.other_live_admin_keys(session, key.id, now):
        raise LastAdminKey(
            f"key {key.id} is the last working admin key; create another admin key first "
            "(or use `tollgate keys revoke` to do it on purpose)"
        )


async def revoke(
    session: AsyncSession, actor: Actor, ref: int | str, *, now: datetime
) -> tuple[ApiKey, bool]:
    """Stop the key now. A key rotated with a grace period (``revoked_at`` still in the
    future) stops now too: that is how a leaked old secret is cut off. Returns the key and
    whether this call revoked it (False: it was already revoked; nothing is recorded)."""
    key = await get_key(session, ref)
    if key.revoked_at is not None and key.revoked_at <= now:
        return key, False
    await _keep_an_admin(session, actor, key, now)
    before = snapshot(key, *FIELDS)
    key.revoked_at = now
    await session.flush()
    await record(
        session, actor, "key.revoke", "api_key", key.id, before=before, after=snapshot(key, *FIELDS)
    )
    return key, True


async def expire(
    session: AsyncSession,
    actor: Actor,
    ref: int | str,
    at: datetime | None = None,
    *,
    now: datetime,
) -> ApiKey:
    """Set when the key stops working (default: now). Unlike a revocation, the key then
    answers ``key_expired``; a later call can move the moment again."""
    key = await get_key(session, ref)
    if key.revoked_at is not None and key.revoked_at <= now:
        raise KeyConflict("a revoked key cannot be changed")
    if at is None or at <= now:
        await _keep_an_admin(session, actor, key, now)
    before = snapshot(key, *FIELDS)
    key.expires_at = now if at is None else at
    await session.flush()
    await record(
        session, actor, "key.expire", "api_key", key.id, before=before, after=snapshot(key, *FIELDS)
    )
    return key


async def rotate(
    session: AsyncSession,
    actor: Actor,
    secret_key: str,
    ref: int | str,
    grace: timedelta,
    *,
    now: datetime,
) -> tuple[ApiKey, ApiKey, str]:
    """A new secret with the same customer, scopes, models, limits and expiry. The old key
    keeps working until now + grace, then stops (its ``revoked_at`` is set to that time).

    Rotating re-issues: a key of a customer that is not the operator account (a legacy staff
    key) gets its admin and finance scopes dropped, and the new key is not a legacy one. A
    key that would keep no scope at all is refused (409 ``legacy_staff_key``): give staff a
    key of the operator account and revoke this one."""
    old = await get_key(session, ref)
    if old.revoked_at is not None and old.revoked_at <= now:
        raise KeyConflict("a revoked key cannot be rotated")
    if old.replaced_by is not None:
        raise KeyConflict(f"key {old.id} was already rotated to key {old.replaced_by}")
    customer = await session.get(Customer, old.customer_id)
    assert customer is not None  # the foreign key guarantees one
    dropped = [] if customer.is_operator else _staff(old.scopes)
    scopes = [s for s in old.scopes if s not in dropped]
    if not scopes:
        raise LegacyStaffKey(
            f"key {old.id} holds only {' and '.join(dropped)}, which a key of customer "
            f"{customer.id} ({customer.name}) may no longer hold, so a rotation would leave it "
            f"no scope: {REISSUE_HINT}, then revoke this key",
            details={"key_id": old.id, "scopes": dropped},
        )
    new, secret = await issue_key_record(
        session,
        secret_key,
        customer_id=old.customer_id,
        scopes=scopes,
        name=old.name,
        expires_at=old.expires_at,
        allowed_models=old.allowed_models,
        requests_per_minute=old.requests_per_minute,
        items_per_minute=old.items_per_minute,
    )
    before = snapshot(old, *FIELDS)
    if not await repository.mark_rotated(session, old.id, new.id, now, now + grace):
        # Lost a race with a concurrent rotate or revoke; the transaction (and the key
        # just issued) is rolled back.
        raise KeyConflict(f"key {old.id} was rotated or revoked by a concurrent request")
    await session.refresh(old)
    await record(
        session,
        actor,
        "key.rotate",
        "api_key",
        old.id,
        before=before,
        after={
            **snapshot(old, *FIELDS),
            "new_key_id": new.id,
            **({"dropped_scopes": dropped} if dropped else {}),
        },
    )
    return old, new, secret
