"""One helper runs every background loop: a failing step is logged and the loop goes on."""

from __future__ import annotations

import asyncio

import pytest

from app.tasks import BackgroundLoop


async def test_a_failing_step_is_logged_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0
    second = asyncio.Event()

    async def step() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("first step fails")
        second.set()
        await asyncio.Event().wait()  # then idles until cancelled

    loop = BackgroundLoop("flaky", step)
    await loop.stop()  # stopping before start is a no-op
    loop.start()
    await asyncio.wait_for(second.wait(), 30)
    assert loop.running
    [record] = [r for r in caplog.records if r.name == "tollgate.tasks"]
    assert record.__dict__["task"] == "flaky"
    assert record.__dict__["error"] == "RuntimeError"
    await loop.stop()
    assert not loop.running
    await loop.stop()  # idempotent
    assert calls == 2


async def test_stop_cancels_a_periodic_loop_while_it_sleeps() -> None:
    ran = 0

    async def step() -> None:
        nonlocal ran
        ran += 1

    loop = BackgroundLoop("periodic", step, interval_s=3600)
    loop.start()
    await asyncio.sleep(0)
    assert loop.running
    await loop.stop()
    assert not loop.running and ran == 0


async def test_a_periodic_loop_steps_first_when_asked_then_waits_its_interval() -> None:
    stepped = asyncio.Event()
    calls = 0

    async def step() -> None:
        nonlocal calls
        calls += 1
        stepped.set()

    loop = BackgroundLoop("eager", step, interval_s=3600, step_first=True)
    loop.start()
    await asyncio.wait_for(stepped.wait(), 30)  # not an hour: the first step runs at once
    await asyncio.sleep(0.05)
    assert calls == 1  # then it sleeps its interval
    await loop.stop()
    assert not loop.running
