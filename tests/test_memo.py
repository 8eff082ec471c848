"""Reads of settled ledger ranges are computed once per database; today's stay live."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import FastAPI

from app.db.memo import SETTLED, settled, settled_before
from app.resources import resources


def test_settled_before_is_the_day_of_now_minus_the_window() -> None:
    assert settled_before(datetime(2026, 9, 5, 12, tzinfo=UTC)) == datetime(2026, 9, 5, tzinfo=UTC)
    just_after_midnight = datetime(2026, 9, 5, 0, 5, tzinfo=UTC)
    assert just_after_midnight - SETTLED < datetime(2026, 9, 5, tzinfo=UTC)
    assert settled_before(just_after_midnight) == datetime(2026, 9, 4, tzinfo=UTC)


async def test_a_key_is_computed_once_per_database(app: FastAPI) -> None:
    calls = []

    async def compute() -> int:
        calls.append(1)
        return len(calls)

    async with resources(app).sessionmaker() as session:
        assert await settled(session, ("k", 1), compute) == 1
        assert await settled(session, ("k", 1), compute) == 1
        assert await settled(session, ("k", 2), compute) == 2
    assert len(calls) == 2
