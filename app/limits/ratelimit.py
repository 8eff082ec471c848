"""Exact, atomic per-key rate limiting with GCRA (generic cell rate algorithm).

A :class:`Limit` says "``limit`` units per ``period_s`` seconds" for one bucket key, with a burst
of ``limit``: from an idle (full) bucket exactly ``limit`` hits of cost 1 pass back-to-back, the
next is denied, and one unit comes back every emission interval ``T = period_s / limit``.

State per key is the TAT (theoretical arrival time). To keep decisions *exact* (no float drift
at the boundary, e.g. 60 s / 7) everything is integer arithmetic on microseconds scaled by
``limit``: with ``P = period in µs`` and ``L = limit``, one unit of cost is ``P`` scaled units,
the bucket holds ``L * P`` and drains ``L`` scaled units per µs. The TAT is stored as
``base_us + frac / L`` (``0 <= frac < L``), i.e. exactly, as two integers. Because the Redis
script runs on Lua doubles, ``limit * period_us`` must stay below 2**52 (about 75 million per
minute, 1.25 million per hour); :class:`Limit` refuses larger values so that both backends accept
the same limits.

:meth:`RateLimiter.hit` is all-or-nothing over several limits: either every limit allows the hit
and all of them are charged, or nothing is charged at all.

Backends:

* :class:`MemoryRateLimiter` -- per process; used in tests and as the fallback.
* :class:`RedisRateLimiter` -- shared by all processes: one Lua script over all keys (EVALSHA,
  EVAL on NOSCRIPT), timed by Redis ``TIME`` so every process uses the same clock. Keys expire
  when their bucket would be full again. All keys of one hit must live on one node (no Redis
  Cluster support unless the caller puts them in one hash slot with a ``{hash tag}``).
* :class:`FallbackRateLimiter` -- Redis, degrading to the in-process limiter while Redis is
  unavailable (limits then hold per process, not globally).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

__all__ = [
    "Decision",
    "FallbackRateLimiter",
    "Limit",
    "LimitState",
    "MemoryRateLimiter",
    "RateLimiter",
    "RateLimiterUnavailable",
    "RedisRateLimiter",
]

logger = logging.getLogger("tollgate.limits")

_US_PER_S = 1_000_000
# Redis runs the script on Lua 5.1 doubles: every intermediate must stay an exact integer.
# The largest one is ``level + cost * P <= 2 * L * P``, hence ``L * P <= 2**52``.
_MAX_SCALED = 2**52


@dataclass(frozen=True, slots=True)
class Limit:
    """``limit`` units per ``period_s`` seconds for bucket ``key``; this hit consumes ``cost``.

    ``key`` is built by the caller (e.g. ``"k:42:requests"``) and must never contain an API key
    secret. A hit whose ``cost`` exceeds ``limit`` can never pass: it is always denied (with
    ``retry_after_s == math.inf``) and consumes nothing. ``cost=0`` peeks without consuming.
    """

    key: str
    limit: int
    cost: int = 1
    period_s: float = 60.0

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("Limit.key must not be empty")
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1:
            raise ValueError(f"Limit.limit must be an int >= 1, got {self.limit!r}")
        if isinstance(self.cost, bool) or not isinstance(self.cost, int) or self.cost < 0:
            raise ValueError(f"Limit.cost must be an int >= 0, got {self.cost!r}")
        if not math.isfinite(self.period_s) or self.period_s <= 0:
            raise ValueError(f"Limit.period_s must be finite and > 0, got {self.period_s!r}")
        period_us = _period_us(self)
        if period_us < 1:
            raise ValueError(f"Limit.period_s must be at least 1 µs, got {self.period_s!r}")
        if self.limit * period_us > _MAX_SCALED:
            raise ValueError(
                f"Limit too large: limit * period_s must be <= {_MAX_SCALED / _US_PER_S:.0f} "
                f"(got {self.limit} per {self.period_s} s)"
            )


@dataclass(frozen=True, slots=True)
class LimitState:
    """One limit after a decision.

    ``remaining``: whole units still available right after this decision (unchanged when the hit
    was denied). ``reset_s``: seconds until the bucket is completely full again (0 if full).
    ``retry_after_s``: 0 if *this* limit would allow the hit, else seconds until it would allow a
    hit of the same cost (``math.inf`` when ``cost > limit``: never). Both durations are rounded
    up to whole microseconds, so waiting that long is always enough.
    """

    key: str
    limit: int
    remaining: int
    reset_s: float
    retry_after_s: float


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    states: tuple[LimitState, ...]  # one per Limit, same order
    backend: str  # "memory" | "redis"

    @property
    def retry_after_s(self) -> float:
        """Seconds until the whole hit could pass (max over the limits; 0 if allowed)."""
        return max((s.retry_after_s for s in self.states), default=0.0)


class RateLimiter(Protocol):
    async def hit(self, limits: Sequence[Limit]) -> Decision: ...

    async def warm(self) -> None: ...

    async def close(self) -> None: ...


class RateLimiterUnavailable(Exception):
    """The shared (Redis) rate limiter could not answer: connection, timeout or Redis error."""


# --------------------------------------------------------------------------------------------
# GCRA arithmetic, shared by both backends (the Lua script below mirrors it exactly)
# --------------------------------------------------------------------------------------------


def _period_us(limit: Limit) -> int:
    return round(limit.period_s * _US_PER_S)


def max_limit(period_s: float) -> int:
    """The largest ``Limit.limit`` allowed for ``period_s``."""
    return _MAX_SCALED // round(period_s * _US_PER_S)


def _level(base: int, frac: int, now_us: int, lim: int, period_us: int) -> int:
    """Scaled fill level ``(TAT - now) * L`` of a stored TAT ``base + frac/L``, in [0, L*P]."""
    cap = lim * period_us
    if base < now_us:  # TAT < base + 1 <= now: bucket full
        return 0
    if base - now_us > period_us:  # only if the clock went backwards
        return cap
    return min((base - now_us) * lim + min(frac, lim - 1), cap)


def _fits(lim: Limit, level: int) -> bool:
    """Would this limit allow the hit, given its current scaled level?"""
    p = _period_us(lim)
    return lim.cost <= lim.limit and level + lim.cost * p <= lim.limit * p


def _states(
    limits: Sequence[Limit], levels: Sequence[int], allowed: bool
) -> tuple[LimitState, ...]:
    out: list[LimitState] = []
    for lim, level in zip(limits, levels, strict=True):
        p = _period_us(lim)
        cap = lim.limit * p
        short = max(0, level + lim.cost * p - cap)  # scaled units missing for this hit
        retry = math.inf if lim.cost > lim.limit else _ceil_div(short, lim.limit) / _US_PER_S
        after = level + lim.cost * p if allowed else level
        out.append(
            LimitState(
                key=lim.key,
                limit=lim.limit,
                remaining=(cap - after) // p,
                reset_s=_ceil_div(after, lim.limit) / _US_PER_S,
                retry_after_s=retry,
            )
        )
    return tuple(out)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _check_keys(limits: Sequence[Limit]) -> None:
    keys = [lim.key for lim in limits]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate Limit keys in one hit: {keys!r}")


# --------------------------------------------------------------------------------------------
# In-process backend
# --------------------------------------------------------------------------------------------


class MemoryRateLimiter:
    """Per-process GCRA limiter. ``clock`` returns seconds (monotonic); inject one in tests.

    Memory is bounded: once the table grows past ``max_entries`` keys, entries whose bucket is
    full again (TAT in the past, i.e. equivalent to no entry) are dropped. Live entries are never
    dropped, since that would forget consumption.
    """

    backend = "memory"

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, *, max_entries: int = 100_000
    ) -> None:
        self._clock = clock
        self._tats: dict[str, tuple[int, int]] = {}  # key -> (base_us, frac): TAT = base + frac/L
        self._max_entries = max_entries
        self._sweep_at = max_entries
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._tats)

    async def hit(self, limits: Sequence[Limit]) -> Decision:
        return self.hit_now(limits)

    def hit_now(self, limits: Sequence[Limit]) -> Decision:
        """Synchronous :meth:`hit` (it never awaits anything)."""
        _check_keys(limits)
        with self._lock:
            now = round(self._clock() * _US_PER_S)
            levels: list[int] = []
            for lim in limits:
                state = self._tats.get(lim.key)
                level = 0
                if state is not None:
                    level = _level(state[0], state[1], now, lim.limit, _period_us(lim))
                levels.append(level)
            allowed = all(_fits(lim, lvl) for lim, lvl in zip(limits, levels, strict=True))
            if allowed:
                for lim, level in zip(limits, levels, strict=True):
                    new = level + lim.cost * _period_us(lim)
                    if new > 0:
                        q, r = divmod(new, lim.limit)
                        self._tats[lim.key] = (now + q, r)
                if len(self._tats) > self._sweep_at:
                    self._sweep(now)
        return Decision(allowed=allowed, states=_states(limits, levels, allowed), backend="memory")

    def _sweep(self, now_us: int) -> None:
        self._tats = {k: v for k, v in self._tats.items() if v[0] >= now_us}
        # If most entries are live, don't rescan on every insert: wait until the table doubles.
        self._sweep_at = max(self._max_entries, 2 * len(self._tats))

    async def warm(self) -> None:
        """Nothing to prepare in process."""

    async def close(self) -> None:
        with self._lock:
            self._tats.clear()


# --------------------------------------------------------------------------------------------
# Redis backend
# --------------------------------------------------------------------------------------------

# KEYS[i]: bucket keys. ARGV[3i-2], ARGV[3i-1], ARGV[3i]: limit L, period P (µs), cost c.
# Stored value: "<base_us>:<frac>" meaning TAT = base + frac / L (µs, Redis TIME).
# Returns {allowed (0/1), level_1, ..., level_n}: the scaled fill levels before this hit.
_LUA = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = #KEYS
local levels = {}
local ok = 1
for i = 1, n do
  local L = tonumber(ARGV[3 * i - 2])
  local P = tonumber(ARGV[3 * i - 1])
  local c = tonumber(ARGV[3 * i])
  local cap = L * P
  local level = 0
  local v = redis.call('GET', KEYS[i])
  if v then
    local b, f = string.match(v, '^(%-?%d+):(%d+)$')
    if b then
      local base = tonumber(b)
      local frac = math.min(tonumber(f), L - 1)
      if base >= now then
        if base - now > P then
          level = cap
        else
          level = math.min((base - now) * L + frac, cap)
        end
      end
    end
  end
  levels[i] = level
  if c > L or level + c * P > cap then ok = 0 end
end
if ok == 1 then
  for i = 1, n do
    local L = tonumber(ARGV[3 * i - 2])
    local P = tonumber(ARGV[3 * i - 1])
    local c = tonumber(ARGV[3 * i])
    local new = levels[i] + c * P
    if new > 0 then
      local q = math.floor(new / L)
      local r = new - q * L
      if r < 0 then
        q = q - 1
        r = r + L
      elseif r >= L then
        q = q + 1
        r = r - L
      end
      local ttl_ms = math.floor(new / (L * 1000)) + 1
      redis.call('SET', KEYS[i], string.format('%d:%d', now + q, r),
        'PX', string.format('%d', ttl_ms))
    end
  end
end
local out = {ok}
for i = 1, n do out[i + 1] = levels[i] end
return out
"""
_LUA_SHA = hashlib.sha1(_LUA.encode(), usedforsecurity=False).hexdigest()


def _unavailable(exc: BaseException) -> RateLimiterUnavailable:
    detail = str(exc) or "timed out"
    return RateLimiterUnavailable(f"redis rate limiter unavailable: {type(exc).__name__}: {detail}")


class RedisRateLimiter:
    """GCRA in Redis, shared by every process using the same Redis and ``prefix``.

    Each :meth:`hit` is one atomic Lua script over all its keys. Any connection, timeout or
    Redis error raises :class:`RateLimiterUnavailable`; a hit is never retried (a timed-out
    script may have run, and running it twice would charge twice). ``timeout_s`` bounds the
    whole call (connect + script).
    """

    backend = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "tollgate:rl:",
        timeout_s: float = 0.25,
        max_connections: int = 32,
    ) -> None:
        self._prefix = prefix
        self._timeout_s = timeout_s
        self._sha = _LUA_SHA
        # A bounded pool that makes callers wait for a free connection (within timeout_s):
        # redis-py's default pool raises once 100 are in use, which under a burst of more
        # concurrent requests degraded every limit to per process.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=None,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self._client: aioredis.Redis = aioredis.Redis(connection_pool=pool)

    @property
    def prefix(self) -> str:
        return self._prefix

    async def hit(self, limits: Sequence[Limit]) -> Decision:
        _check_keys(limits)
        if not limits:
            return Decision(allowed=True, states=(), backend="redis")
        keys = [self._prefix + lim.key for lim in limits]
        args: list[int] = []
        for lim in limits:
            args += (lim.limit, _period_us(lim), lim.cost)
        reply = await self._call(keys, args)
        if not isinstance(reply, list) or len(reply) != len(limits) + 1:
            raise RateLimiterUnavailable(f"unexpected reply from rate-limit script: {reply!r}")
        allowed = int(reply[0]) == 1
        levels = [int(x) for x in reply[1:]]
        return Decision(allowed=allowed, states=_states(limits, levels, allowed), backend="redis")

    async def warm(self, connections: int = 4) -> None:
        """Open ``connections`` pooled connections and load the script, so that the first burst
        of requests after start-up pays neither connection set-up nor a NOSCRIPT round trip
        inside its timeout. Raises :class:`RateLimiterUnavailable` like :meth:`hit`."""
        try:
            async with asyncio.timeout(self._timeout_s * (connections + 1)):
                await asyncio.gather(*(self._client.ping() for _ in range(connections)))
                self._sha = await self._client.script_load(_LUA)
        except (RedisError, OSError, TimeoutError) as exc:
            raise _unavailable(exc) from exc

    async def _call(self, keys: list[str], args: list[int]) -> Any:
        """Run the script once; map every Redis/network failure to RateLimiterUnavailable."""
        try:
            async with asyncio.timeout(self._timeout_s):
                try:
                    return await self._client.evalsha(self._sha, len(keys), *keys, *args)
                except NoScriptError:
                    return await self._client.eval(_LUA, len(keys), *keys, *args)
        except (RedisError, OSError, TimeoutError) as exc:
            raise _unavailable(exc) from exc

    async def close(self) -> None:
        await self._client.aclose(close_connection_pool=True)


# --------------------------------------------------------------------------------------------
# Redis with in-process fallback
# --------------------------------------------------------------------------------------------


class FallbackRateLimiter:
    """Redis first; while Redis is unavailable, the in-process limiter answers.

    On failure: one warning on ``tollgate.limits`` and ``on_change("memory")`` (per change of
    backend, not per request); Redis is not tried again for ``retry_after_s``. After that one
    request at a time probes Redis (the others keep using memory); on success it logs and calls
    ``on_change("redis")``. Redis problems never raise from :meth:`hit`.

    While degraded, limits hold per process only (N processes allow up to N times the limit),
    and consumption recorded in memory is not carried over to Redis on recovery.
    """

    def __init__(
        self,
        primary: RedisRateLimiter,
        fallback: MemoryRateLimiter,
        *,
        retry_after_s: float = 5.0,
        on_change: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._primary = primary
        self._clock = clock  # monotonic seconds; a test passes one it moves
        self._fallback = fallback
        self._retry_after_s = retry_after_s
        self._on_change = on_change
        self._backend = "redis"
        self._retry_at = 0.0  # monotonic time of the next Redis probe while degraded

    @property
    def backend(self) -> str:
        """Backend currently answering: "redis" or "memory"."""
        return self._backend

    async def warm(self) -> None:
        """Prepare Redis at start-up; if it cannot be reached, start degraded (logged once)."""
        try:
            await self._primary.warm()
        except RateLimiterUnavailable as exc:
            self._degrade(exc)

    async def hit(self, limits: Sequence[Limit]) -> Decision:
        if not limits:  # nothing to check; and no false "Redis is back" from an empty probe
            return Decision(allowed=True, states=(), backend=self._backend)
        if self._backend == "memory":
            now = self._clock()
            if now < self._retry_at:
                return await self._fallback.hit(limits)
            self._retry_at = now + self._retry_after_s  # this request probes; others wait
        try:
            decision = await self._primary.hit(limits)
        except RateLimiterUnavailable as exc:
            self._degrade(exc)
            return await self._fallback.hit(limits)
        if self._backend != "redis":
            self._backend = "redis"
            logger.warning("rate limiter: Redis available again, using shared limits")
            self._notify("redis")
        return decision

    def _degrade(self, exc: RateLimiterUnavailable) -> None:
        self._retry_at = self._clock() + self._retry_after_s
        if self._backend != "memory":
            self._backend = "memory"
            logger.warning(
                "rate limiter: Redis unavailable, using in-process limits "
                "(per process only); retrying Redis every %.3g s: %s",
                self._retry_after_s,
                exc,
            )
            self._notify("memory")

    def _notify(self, backend: str) -> None:
        if self._on_change is None:
            return
        try:
            self._on_change(backend)
        except Exception:
            logger.exception("rate limiter: on_change(%r) callback failed", backend)

    async def close(self) -> None:
        try:
            await self._primary.close()
        finally:
            await self._fallback.close()
