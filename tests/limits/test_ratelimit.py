"""GCRA rate limiter: in-memory (fake clock), Redis (real server) and Redis-with-fallback.

Redis tests use ``TOLLGATE_TEST_REDIS`` (default ``redis://127.0.0.1:6379/0``), a unique key
prefix per test, and delete their keys afterwards; they are skipped if Redis is not reachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from app.limits.ratelimit import (
    Decision,
    FallbackRateLimiter,
    Limit,
    MemoryRateLimiter,
    RateLimiter,
    RateLimiterUnavailable,
    RedisRateLimiter,
)

REDIS_URL = os.environ.get("TOLLGATE_TEST_REDIS", "redis://127.0.0.1:6379/0")
DEAD_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1: connection refused


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def _redis_client() -> aioredis.Redis:
    return aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5, socket_timeout=2.0)


@contextlib.asynccontextmanager
async def redis_namespace() -> AsyncIterator[str]:
    """A unique key prefix on a reachable Redis (else skip); its keys are deleted afterwards."""
    client = await _redis_client()
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {type(exc).__name__}: {exc}")
    prefix = f"tollgate:test:rl:{uuid.uuid4().hex}:"
    try:
        yield prefix
    finally:
        keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    async with redis_namespace() as prefix:
        yield prefix


@dataclass
class Harness:
    """One backend under test: ``advance`` moves the fake clock, or sleeps for Redis."""

    name: str
    limiter: RateLimiter
    advance: Callable[[float], Awaitable[None]]

    @property
    def exact(self) -> bool:
        return self.name == "memory"

    def approx(self, value: float) -> Any:
        # Redis runs on real time: values measured after some elapsed milliseconds.
        return pytest.approx(value) if self.exact else pytest.approx(value, abs=0.3)


@pytest.fixture(params=["memory", "redis"])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    if request.param == "memory":
        clock = FakeClock()

        async def advance_clock(seconds: float) -> None:
            clock.advance(seconds)

        yield Harness("memory", MemoryRateLimiter(clock), advance_clock)
        return
    async with redis_namespace() as prefix:
        limiter = RedisRateLimiter(REDIS_URL, prefix=prefix, timeout_s=2.0)
        try:
            yield Harness("redis", limiter, asyncio.sleep)
        finally:
            await limiter.close()


def only(decision: Decision) -> tuple[bool, int, float, float]:
    (s,) = decision.states
    return decision.allowed, s.remaining, s.reset_s, s.retry_after_s


# ---------------------------------------------------------------------------------------------
# Semantics shared by both backends
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 5, 7, 60])
async def test_exactly_limit_hits_from_empty_then_denied(harness: Harness, limit: int) -> None:
    period = 60.0
    t = period / limit
    lim = Limit("k:1:requests", limit, period_s=period)
    for k in range(1, limit + 1):
        d = await harness.limiter.hit([lim])
        assert d.backend == harness.name
        allowed, remaining, reset, retry = only(d)
        assert allowed, k
        assert remaining == limit - k
        assert retry == 0
        assert reset == harness.approx(k * t)
        assert d.states[0].key == "k:1:requests"
        assert d.states[0].limit == limit
    for _ in range(3):  # denied hits consume nothing: the answer doesn't change
        d = await harness.limiter.hit([lim])
        allowed, remaining, reset, retry = only(d)
        assert not allowed
        assert remaining == 0
        assert retry == harness.approx(t)
        assert reset == harness.approx(period)
        assert d.retry_after_s == retry


async def test_one_more_after_emission_interval(harness: Harness) -> None:
    limit = 5
    period = 60.0 if harness.exact else 1.0  # Redis: real time, T = 0.2 s
    t = period / limit
    lim = Limit("k:1:requests", limit, period_s=period)
    allowed = [(await harness.limiter.hit([lim])).allowed for _ in range(limit + 1)]
    assert allowed == [True] * limit + [False]
    d = await harness.limiter.hit([lim])
    retry = d.states[0].retry_after_s
    assert 0 < retry <= t + 1e-9
    # wait until one unit is back (Redis: plus a margin well below T)
    await harness.advance(retry if harness.exact else retry + 0.03)
    d = await harness.limiter.hit([lim])
    assert d.allowed
    assert d.states[0].remaining == 0
    d = await harness.limiter.hit([lim])
    assert not d.allowed
    assert 0 < d.states[0].retry_after_s <= t + 1e-9


async def test_costs(harness: Harness) -> None:
    def items(cost: int) -> list[Limit]:
        return [Limit("k:1:items", 10, cost=cost, period_s=60.0)]

    assert only(await harness.limiter.hit(items(4)))[:2] == (True, 6)
    assert only(await harness.limiter.hit(items(4)))[:2] == (True, 2)
    allowed, remaining, _, retry = only(await harness.limiter.hit(items(4)))
    assert (allowed, remaining) == (False, 2)
    assert retry == harness.approx(2 * 6.0)  # two units short, T = 6 s
    assert only(await harness.limiter.hit(items(2)))[:2] == (True, 0)
    assert only(await harness.limiter.hit(items(1)))[:2] == (False, 0)


async def test_large_limits_stay_exact(harness: Harness) -> None:
    # limit * period in µs close to the 2**52 bound: the Lua doubles must stay exact
    unit_s = 3600.0 / 1_250_000  # the bucket refills one unit every 2.88 ms

    def items(attempt: int, cost: int) -> list[Limit]:
        return [Limit(f"k:{attempt}:items", 1_250_000, cost=cost, period_s=3600.0)]

    # Redis runs on real time (TIME): a unit refills every 2.88 ms, so on a loaded machine the
    # hits below can straddle a refill and read one unit more. Such an attempt proves
    # nothing and is repeated on a fresh key; one that ran within a unit's time must be exact
    # to the unit. The fake clock never moves, so its first attempt is always conclusive.
    for attempt in range(50):
        started = time.monotonic()
        first = only(await harness.limiter.hit(items(attempt, 400_001)))[:2]
        d = await harness.limiter.hit(items(attempt, 1_250_000))
        second = (d.allowed, d.states[0].remaining)
        d = await harness.limiter.hit(items(attempt, 849_999))
        third = (d.allowed, d.states[0].remaining)
        d = await harness.limiter.hit(items(attempt, 2))
        if harness.exact or time.monotonic() - started < unit_s:
            break
    else:
        pytest.fail("no attempt ran within one refill unit (2.88 ms)")
    assert (first, second, third) == ((True, 849_999), (False, 849_999), (True, 0))
    assert not d.allowed
    # 2 units short minus the little refill since the burst: at most 2 * T = 5.76 ms
    assert 0 < d.states[0].retry_after_s <= 2 * unit_s


async def test_cost_above_limit_is_always_denied(harness: Harness) -> None:
    big = [Limit("k:1:items", 10, cost=11)]
    d = await harness.limiter.hit(big)  # even on an idle bucket
    assert only(d) == (False, 10, 0.0, math.inf)
    await harness.advance(3600.0 if harness.exact else 0.0)
    assert not (await harness.limiter.hit(big)).allowed
    # nothing was consumed
    assert only(await harness.limiter.hit([Limit("k:1:items", 10, cost=10)]))[:2] == (True, 0)


async def test_cost_zero_peeks(harness: Harness) -> None:
    lim = Limit("k:1:requests", 3)
    await harness.limiter.hit([lim])
    peek = Limit("k:1:requests", 3, cost=0)
    for _ in range(3):
        assert only(await harness.limiter.hit([peek]))[:2] == (True, 2)


async def test_all_or_nothing(harness: Harness) -> None:
    def both(items: int) -> list[Limit]:
        return [Limit("k:7:requests", 3), Limit("k:7:items", 100, cost=items)]

    for k in range(1, 4):
        d = await harness.limiter.hit(both(10))
        assert d.allowed
        assert [s.remaining for s in d.states] == [3 - k, 100 - 10 * k]
    d = await harness.limiter.hit(both(10))  # requests exhausted
    assert not d.allowed
    req, items = d.states
    assert (req.key, req.remaining) == ("k:7:requests", 0)
    assert req.retry_after_s == harness.approx(20.0)
    assert (items.key, items.remaining, items.retry_after_s) == ("k:7:items", 70, 0.0)
    assert d.retry_after_s == req.retry_after_s
    # the denied hit did not charge the items bucket
    alone = await harness.limiter.hit([Limit("k:7:items", 100, cost=10)])
    assert only(alone)[:2] == (True, 60)

    # the other way round: items exhausted, requests untouched
    d = await harness.limiter.hit([Limit("k:8:requests", 3), Limit("k:8:items", 5, cost=5)])
    assert d.allowed
    d = await harness.limiter.hit([Limit("k:8:requests", 3), Limit("k:8:items", 5, cost=1)])
    assert not d.allowed
    assert [s.remaining for s in d.states] == [2, 0]
    assert only(await harness.limiter.hit([Limit("k:8:requests", 3)]))[:2] == (True, 1)


async def test_cost_above_limit_in_a_group_consumes_nothing(harness: Harness) -> None:
    group = [Limit("k:9:requests", 5), Limit("k:9:items", 10, cost=11)]
    d = await harness.limiter.hit(group)
    assert not d.allowed
    assert [s.remaining for s in d.states] == [5, 10]
    assert [s.retry_after_s for s in d.states] == [0.0, math.inf]
    assert only(await harness.limiter.hit([Limit("k:9:requests", 5)]))[:2] == (True, 4)


async def test_keys_are_independent(harness: Harness) -> None:
    for _ in range(2):
        assert (await harness.limiter.hit([Limit("k:1:requests", 2)])).allowed
    assert not (await harness.limiter.hit([Limit("k:1:requests", 2)])).allowed
    assert (await harness.limiter.hit([Limit("k:2:requests", 2)])).allowed


async def test_empty_and_duplicate_keys(harness: Harness) -> None:
    d = await harness.limiter.hit([])
    assert d.allowed
    assert d.states == ()
    with pytest.raises(ValueError, match="duplicate"):
        await harness.limiter.hit([Limit("k:1:x", 5), Limit("k:1:x", 10)])


# ---------------------------------------------------------------------------------------------
# Memory backend: exact timing with a fake clock
# ---------------------------------------------------------------------------------------------


async def test_memory_refill_is_exact_at_the_boundary() -> None:
    clock = FakeClock()
    rl = MemoryRateLimiter(clock)
    lim = Limit("k:1:requests", 7)  # T = 60/7 s = 8571428.57... µs: not float-friendly
    us = 1e-6
    t_us = math.ceil(60e6 / 7)
    for _ in range(7):
        assert (await rl.hit([lim])).allowed
    d = await rl.hit([lim])
    assert not d.allowed
    assert d.states[0].retry_after_s == t_us * us  # rounded up to whole µs
    # waiting the reported retry_after_s is always enough, and 1 µs less is not
    for _ in range(20):
        retry = (await rl.hit([lim])).states[0].retry_after_s
        assert 0 < retry <= t_us * us
        clock.advance(retry - us)
        assert not (await rl.hit([lim])).allowed
        clock.advance(us)
        d = await rl.hit([lim])
        assert d.allowed
        assert d.states[0].remaining == 0
        assert not (await rl.hit([lim])).allowed
    # half an interval later: still denied, about half an interval to wait
    clock.advance(t_us * us / 2)
    d = await rl.hit([lim])
    assert not d.allowed
    assert d.states[0].retry_after_s == pytest.approx(t_us * us / 2, abs=2 * us)

    # from an exhausted bucket, 3 intervals give back exactly 3 units
    clock2 = FakeClock()
    rl2 = MemoryRateLimiter(clock2)
    for _ in range(7):
        await rl2.hit([lim])
    clock2.advance(math.ceil(3 * 60e6 / 7) * us - us)
    assert [(await rl2.hit([lim])).allowed for _ in range(3)] == [True, True, False]
    clock2.advance(us)
    assert [(await rl2.hit([lim])).allowed for _ in range(2)] == [True, False]


async def test_memory_full_again_after_period() -> None:
    clock = FakeClock()
    rl = MemoryRateLimiter(clock)
    lim = Limit("k:1:requests", 10, period_s=60.0)
    for _ in range(4):
        await rl.hit([lim])
    d = await rl.hit([Limit("k:1:requests", 10, cost=0)])
    assert only(d) == (True, 6, pytest.approx(24.0), 0.0)
    clock.advance(24.0)
    d = await rl.hit([Limit("k:1:requests", 10, cost=0)])
    assert only(d) == (True, 10, 0.0, 0.0)
    clock.advance(1000.0)  # idle for long: still just full, not more
    assert [(await rl.hit([lim])).allowed for _ in range(11)] == [True] * 10 + [False]


async def test_memory_drops_full_buckets_when_large() -> None:
    clock = FakeClock()
    rl = MemoryRateLimiter(clock, max_entries=100)
    for i in range(100):
        await rl.hit([Limit(f"k:{i}:requests", 10, period_s=1.0)])
    assert len(rl) == 100
    clock.advance(5.0)  # all of those buckets are full again
    live = Limit("k:live:requests", 10, period_s=60.0)
    await rl.hit([live])
    await rl.hit([Limit("k:new:requests", 10, period_s=60.0)])
    assert len(rl) == 2
    # live entries are never dropped: the table grows instead, and consumption is kept
    for i in range(300):
        await rl.hit([Limit(f"k:busy{i}:requests", 10, period_s=60.0)])
    assert len(rl) == 302
    assert only(await rl.hit([live]))[:2] == (True, 8)


def test_limit_validation() -> None:
    with pytest.raises(ValueError, match="limit"):
        Limit("k", 0)
    with pytest.raises(ValueError, match="cost"):
        Limit("k", 5, cost=-1)
    with pytest.raises(ValueError, match="period_s"):
        Limit("k", 5, period_s=0)
    with pytest.raises(ValueError, match="period_s"):
        Limit("k", 5, period_s=math.nan)
    with pytest.raises(ValueError, match="key"):
        Limit("", 5)
    with pytest.raises(ValueError, match="too large"):
        Limit("k", 10**9, period_s=3600.0)
    Limit("k", 10**6, period_s=3600.0)  # 1M per hour is fine
    Limit("k", 10, cost=11)  # allowed to build; always denied


# ---------------------------------------------------------------------------------------------
# Redis backend
# ---------------------------------------------------------------------------------------------


async def test_redis_two_processes_share_one_limit(redis_prefix: str) -> None:
    a = RedisRateLimiter(REDIS_URL, prefix=redis_prefix, timeout_s=2.0)
    b = RedisRateLimiter(REDIS_URL, prefix=redis_prefix, timeout_s=2.0)
    try:
        lim = [Limit("k:42:requests", 20)]
        decisions = await asyncio.gather(
            *(a.hit(lim) for _ in range(15)), *(b.hit(lim) for _ in range(15))
        )
        allowed = [d for d in decisions if d.allowed]
        assert len(allowed) == 20
        # every allowed hit saw a distinct, exact remaining count
        assert sorted(d.states[0].remaining for d in allowed) == list(range(20))
        assert all(d.states[0].remaining == 0 for d in decisions if not d.allowed)
        assert not (await a.hit(lim)).allowed
        assert not (await b.hit(lim)).allowed
    finally:
        await a.close()
        await b.close()


async def test_redis_key_layout_and_expiry(redis_prefix: str) -> None:
    rl = RedisRateLimiter(REDIS_URL, prefix=redis_prefix, timeout_s=2.0)
    client = await _redis_client()
    key = redis_prefix + "k:1:requests"
    try:
        lim = Limit("k:1:requests", 4, period_s=0.4)
        await rl.hit([lim])
        raw = await client.get(key)
        assert raw is not None
        base, frac = raw.decode().split(":")
        assert int(base) > 0
        assert int(frac) == 0
        assert 0 < await client.pttl(key) <= 101  # full again after T = 100 ms
        for _ in range(3):
            await rl.hit([lim])
        assert 300 < await client.pttl(key) <= 401
        # a denied hit writes nothing
        before = await client.get(key)
        assert not (await rl.hit([lim])).allowed
        assert await client.get(key) == before
        await asyncio.sleep(0.45)
        assert await client.exists(key) == 0  # expired once full again
        assert only(await rl.hit([lim]))[:2] == (True, 3)
    finally:
        await client.aclose()
        await rl.close()


async def test_redis_evalsha_falls_back_to_eval_on_noscript(redis_prefix: str) -> None:
    rl = RedisRateLimiter(REDIS_URL, prefix=redis_prefix, timeout_s=2.0)
    try:
        rl._sha = "0" * 40  # a script Redis has never seen -> NOSCRIPT -> EVAL
        lim = [Limit("k:1:requests", 2)]
        assert [(await rl.hit(lim)).allowed for _ in range(3)] == [True, True, False]
    finally:
        await rl.close()


async def test_redis_warm_opens_connections_and_loads_the_script(redis_prefix: str) -> None:
    rl = RedisRateLimiter(REDIS_URL, prefix=redis_prefix, timeout_s=2.0)
    try:
        rl._sha = "0" * 40  # as if the script were unknown
        await rl.warm(connections=4)
        assert rl._sha == RedisRateLimiter(REDIS_URL)._sha
        assert len(rl._client.connection_pool._available_connections) >= 4

        async def no_eval(*args: Any) -> Any:
            raise AssertionError("EVAL after warm-up: the script should be loaded")

        rl._client.eval = no_eval  # type: ignore[method-assign]
        assert (await rl.hit([Limit("k:1:requests", 2)])).allowed
    finally:
        await rl.close()


async def test_fallback_warm_with_redis_down_starts_degraded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    changes: list[str] = []
    primary = RedisRateLimiter(DEAD_URL, timeout_s=0.25)
    rl = FallbackRateLimiter(primary, MemoryRateLimiter(), on_change=changes.append)
    caplog.set_level(logging.WARNING, logger="tollgate.limits")
    try:
        await rl.warm()  # never raises
        assert (rl.backend, changes) == ("memory", ["memory"])

        async def must_not_probe(keys: list[str], args: list[int]) -> Any:
            raise AssertionError("probed Redis before the retry interval")

        primary._call = must_not_probe  # type: ignore[method-assign]
        d = await rl.hit([Limit("k:1:requests", 1)])
        assert (d.backend, d.allowed) == ("memory", True)
        assert sum("Redis unavailable" in r.getMessage() for r in caplog.records) == 1
    finally:
        await rl.close()


async def test_redis_unreachable_raises_unavailable() -> None:
    rl = RedisRateLimiter(DEAD_URL, timeout_s=0.25)
    try:
        started = time.monotonic()
        with pytest.raises(RateLimiterUnavailable):
            await rl.hit([Limit("k:1:requests", 5)])
        assert time.monotonic() - started < 1.0
    finally:
        await rl.close()


async def test_redis_hanging_server_times_out() -> None:
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(-1)  # read until the client gives up, never reply
        writer.close()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    rl = RedisRateLimiter(f"redis://127.0.0.1:{port}/0", timeout_s=0.1)
    try:
        started = time.monotonic()
        with pytest.raises(RateLimiterUnavailable):
            await rl.hit([Limit("k:1:requests", 5)])
        assert time.monotonic() - started < 0.6
    finally:
        await rl.close()
        server.close()


# ---------------------------------------------------------------------------------------------
# Fallback
# ---------------------------------------------------------------------------------------------


async def test_fallback_when_redis_is_down(caplog: pytest.LogCaptureFixture) -> None:
    changes: list[str] = []
    clock = FakeClock()
    # retry_after_s=0: every hit probes (the dead) Redis again; still one change, one warning
    rl = FallbackRateLimiter(
        RedisRateLimiter(DEAD_URL, timeout_s=0.25),
        MemoryRateLimiter(clock),
        retry_after_s=0.0,
        on_change=changes.append,
    )
    caplog.set_level(logging.WARNING, logger="tollgate.limits")
    try:
        lim = [Limit("k:1:requests", 5)]
        decisions = [await rl.hit(lim) for _ in range(20)]
        assert {d.backend for d in decisions} == {"memory"}
        assert [d.allowed for d in decisions] == [True] * 5 + [False] * 15
        assert [d.states[0].remaining for d in decisions[:5]] == [4, 3, 2, 1, 0]
        clock.advance(12.0)  # T = 12 s: one more, per process
        assert (await rl.hit(lim)).allowed
        assert not (await rl.hit(lim)).allowed
        assert changes == ["memory"]
        assert rl.backend == "memory"
        warnings = [r for r in caplog.records if r.name == "tollgate.limits"]
        assert len(warnings) == 1
        assert warnings[0].levelno == logging.WARNING
        assert "Redis unavailable" in warnings[0].getMessage()
    finally:
        await rl.close()


async def test_fallback_recovers_after_retry_interval(
    redis_prefix: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    primary = RedisRateLimiter(REDIS_URL, prefix=redis_prefix, timeout_s=2.0)
    changes: list[str] = []
    clock = FakeClock()
    rl = FallbackRateLimiter(
        primary, MemoryRateLimiter(), retry_after_s=0.05, on_change=changes.append, clock=clock
    )
    real_call = primary._call
    calls = 0

    async def flaky_call(keys: list[str], args: list[int]) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RateLimiterUnavailable("simulated outage")
        return await real_call(keys, args)

    monkeypatch.setattr(primary, "_call", flaky_call)
    caplog.set_level(logging.INFO, logger="tollgate.limits")
    try:
        lim = [Limit("k:1:requests", 10)]
        d = await rl.hit(lim)
        assert (d.backend, d.allowed) == ("memory", True)
        assert changes == ["memory"]
        d = await rl.hit(lim)  # within retry_after_s: Redis is not tried
        assert (d.backend, d.allowed) == ("memory", True)
        assert calls == 1
        clock.advance(0.07)
        d = await rl.hit(lim)
        assert (d.backend, d.allowed, d.states[0].remaining) == ("redis", True, 9)
        assert calls == 2
        d = await rl.hit(lim)
        assert (d.backend, d.states[0].remaining) == ("redis", 8)
        assert changes == ["memory", "redis"]
        assert rl.backend == "redis"
        messages = [r.getMessage() for r in caplog.records if r.name == "tollgate.limits"]
        assert len(messages) == 2
        assert "available again" in messages[1]
    finally:
        await rl.close()


async def test_fallback_probes_redis_once_at_a_time() -> None:
    primary = RedisRateLimiter(DEAD_URL, timeout_s=0.25)
    clock = FakeClock()
    rl = FallbackRateLimiter(primary, MemoryRateLimiter(), retry_after_s=0.05, clock=clock)
    calls = 0

    async def down(keys: list[str], args: list[int]) -> Any:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.02)
        raise RateLimiterUnavailable("down")

    primary._call = down  # type: ignore[method-assign]
    try:
        lim = [Limit("k:1:requests", 100)]
        await rl.hit(lim)
        assert calls == 1
        clock.advance(0.06)
        decisions = await asyncio.gather(*(rl.hit(lim) for _ in range(10)))
        assert calls == 2  # one probe, the other nine answered from memory at once
        assert {d.backend for d in decisions} == {"memory"}
    finally:
        await rl.close()


async def test_fallback_survives_a_failing_callback(caplog: pytest.LogCaptureFixture) -> None:
    def boom(backend: str) -> None:
        raise RuntimeError(f"callback failed for {backend}")

    rl = FallbackRateLimiter(
        RedisRateLimiter(DEAD_URL, timeout_s=0.25), MemoryRateLimiter(), on_change=boom
    )
    try:
        d = await rl.hit([Limit("k:1:requests", 1)])
        assert (d.backend, d.allowed) == ("memory", True)
        assert any("on_change" in r.getMessage() for r in caplog.records)
    finally:
        await rl.close()


async def test_redis_burst_beyond_the_pool_stays_shared_and_exact(redis_prefix: str) -> None:
    """More concurrent hits than pooled connections wait for one: the limit holds exactly
    and the limiter never falls back (the default pool raised past 100 connections, and
    the fallback let a burst of 300 through at twice the limit)."""
    changes: list[str] = []
    primary = RedisRateLimiter(REDIS_URL, prefix=redis_prefix, timeout_s=5.0, max_connections=8)
    rl = FallbackRateLimiter(primary, MemoryRateLimiter(), on_change=changes.append)
    try:
        lim = [Limit("k:1:requests", 5)]
        decisions = await asyncio.gather(*(rl.hit(lim) for _ in range(300)))
        assert sum(d.allowed for d in decisions) == 5
        assert {d.backend for d in decisions} == {"redis"}
        assert changes == []
        pool = primary._client.connection_pool
        assert len(pool._available_connections) + len(pool._in_use_connections) <= 8
    finally:
        await rl.close()
