"""Authentication.

Authentication hashes the presented key with the server secret and looks the hash up by its
unique index, so the lookup time does not depend on how much of a guess was right. Resolved
keys are cached for ``ttl`` seconds (default 1 s): a revocation is seen everywhere within that.
"""

from __future__ import annotations

import asyncio
import hmac
from datetime import datetime, timedelta

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth import repository
from app.auth.errors import (
    CustomerSuspended,
    InsufficientScope,
    InvalidApiKey,
    KeyExpired,
    KeyRevoked,
)
from app.auth.last_used import LastUsedTracker
from app.auth.principal import STAFF_SCOPES, Principal, Scope
from app.auth.repository import KeyRecord
from app.auth.secrets import hash_key, looks_like_key
from app.clock import Clock, SystemClock
from app.db.session import DatabaseUnavailable

_CACHE_MAX = 10_000


class Authenticator:
    def __init__(
        self,
        secret_key: str,
        sessionmaker: async_sessionmaker[AsyncSession],
        ttl: float,
        last_used: LastUsedTracker | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._secret = secret_key
        self._clock = clock or SystemClock()
        self._last_used = last_used
        self._sessionmaker = sessionmaker
        self._ttl = timedelta(seconds=ttl)
        self._cache: dict[str, tuple[datetime, KeyRecord]] = {}
        self._inflight: dict[str, asyncio.Future[KeyRecord | None]] = {}

    async def authenticate(self, presented: str) -> Principal:
        if not looks_like_key(presented):
            raise InvalidApiKey("invalid API key")
        return await self.authenticate_digest(hash_key(self._secret, presented))

    def digest(self, presented: str) -> str:
        """The stored form of a presented key (its HMAC under the server secret)."""
        return hash_key(self._secret, presented)

    async def authenticate_digest(self, digest: str) -> Principal:
        """The principal of the key stored as ``digest``, checked exactly as a presented key
        is (revoked, expired, customer suspended): what a console session signed in with."""
        record = await self._lookup(digest)
        if record is None or not hmac.compare_digest(record.hash, digest):
            raise InvalidApiKey("invalid API key")
        now = self._clock.now()
        if record.revoked_at is not None and record.revoked_at <= now:
            raise KeyRevoked("this API key has been revoked")
        if record.expires_at is not None and record.expires_at <= now:
            raise KeyExpired("this API key has expired")
        if record.customer_status != "active":
            raise CustomerSuspended("this customer account is suspended")
        if self._last_used is not None:
            self._last_used.touch(record.key_id)
        return Principal(
            key_id=record.key_id,
            customer_id=record.customer_id,
            prefix=record.prefix,
            scopes=frozenset(record.scopes),
            allowed_models=(
                frozenset(record.allowed_models) if record.allowed_models is not None else None
            ),
            expires_at=record.expires_at,
            requests_per_minute=record.requests_per_minute
            or (record.plan.requests_per_minute if record.plan else None),
            items_per_minute=record.items_per_minute
            or (record.plan.items_per_minute if record.plan else None),
            plan=record.plan,
            is_operator=record.is_operator,
            legacy_staff=record.legacy_staff,
        )

    async def _lookup(self, digest: str) -> KeyRecord | None:
        # The app's clock, not a monotonic one, so that a test can move past the TTL; a wall
        # clock stepping back only keeps an entry for longer than the TTL until it catches up.
        now = self._clock.now()
        hit = self._cache.get(digest)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        # Single flight: concurrent requests with the same (expired) key share one query.
        pending = self._inflight.get(digest)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[KeyRecord | None] = asyncio.get_running_loop().create_future()
        self._inflight[digest] = future
        try:
            record = await self._fetch(digest, now)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        else:
            future.set_result(record)
        finally:
            del self._inflight[digest]
        if record is None:
            self._cache.pop(digest, None)
            return None
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[digest] = (now, record)
        return record

    async def _fetch(self, digest: str, now: datetime) -> KeyRecord | None:
        try:
            async with self._sessionmaker() as session:
                return await repository.find_by_hash(session, digest, now)
        except (OperationalError, DBAPIError, OSError, TimeoutError) as exc:
            raise DatabaseUnavailable("the key store is unavailable; retry shortly") from exc

    def forget_all(self) -> None:
        self._cache.clear()


def require(principal: Principal, scope: Scope) -> None:
    """403 unless the key holds ``scope``. The staff scopes (admin, finance) count only on a
    key of the operator account, or a legacy staff key not yet re-issued: a customer's key
    never acts for the operator, whatever its row says."""
    if scope.value not in principal.scopes:
        raise InsufficientScope(f"this API key lacks the '{scope.value}' scope")
    if scope.value in STAFF_SCOPES and not principal.is_staff:
        raise InsufficientScope(
            f"the '{scope.value}' scope works only on keys of the operator account"
        )
