"""The app's one clock: injectable, so that tests move time instead of sleeping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI

from app.clock import ManualClock, SystemClock
from tests.conftest import bearer, make_key


def test_system_clock_reads_aware_utc() -> None:
    now = SystemClock().now()
    assert now.tzinfo is not None and now.utcoffset() == timedelta(0)
    assert abs(now - datetime.now(UTC)) < timedelta(minutes=1)


def test_manual_clock_moves_only_forward_and_can_be_set() -> None:
    clock = ManualClock()
    start = clock.now()
    assert clock.advance(timedelta(hours=2), seconds=30) - start >= timedelta(hours=2, seconds=30)
    clock.set(datetime(2031, 5, 1, tzinfo=UTC))
    assert clock.now() - datetime(2031, 5, 1, tzinfo=UTC) < timedelta(minutes=1)
    with pytest.raises(ValueError, match="forward"):
        clock.advance(seconds=-1)
    with pytest.raises(ValueError, match="naive"):
        clock.set(datetime(2031, 5, 1))


async def test_keys_expire_on_the_apps_clock(
    app: FastAPI, client: httpx.AsyncClient, clock: ManualClock
) -> None:
    key = await make_key(app, expires_at=clock.now() + timedelta(hours=1))
    body = {"inputs": [0.01 * i for i in range(10)]}
    assert (
        await client.post("/v1/models/linreg/predict", json=body, headers=bearer(key))
    ).status_code == 200
    clock.advance(timedelta(hours=1))
    expired = await client.post("/v1/models/linreg/predict", json=body, headers=bearer(key))
    assert expired.status_code == 401
    assert expired.json()["error"]["type"] == "key_expired"
