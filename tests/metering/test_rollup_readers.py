"""Issue 17: the readers that moved to hourly rollups (billing's aggregate_usage behind close,
preview, the spend cap and the portal; /v1/usage's cells) give exactly the sums of the raw
rows for any window, whole hours or not, on Postgres and on SQLite."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.billing.rating import aggregate_usage, aggregate_usage_by_customer
from app.config import Settings
from app.db.engine import build_engine, build_sessionmaker
from app.metering.repository import usage_cells
from app.metering.rollups import ROLLUP_KEY, ROLLUP_MEASURES, insert_usage, rollup_rows
from app.orm import UsageHourly
from tests.conftest import run_migrations

T0 = datetime(2026, 5, 31, 20, 17, 3, tzinfo=UTC)  # mid-hour, the night before a month ends


def _rows() -> list[dict[str, Any]]:
    return [
        {
            "request_id": f"rd-{i}",
            "api_key_id": 1 + i % 2,
            "customer_id": 1 + i % 2,
            "endpoint": "v1.predict",
            "model": None if i % 17 == 0 else ("cnn" if i % 5 else "linreg"),
            "version": "1",
            "variant": "int8" if i % 3 == 0 else None,
            "device": "cpu",
            "items": 1 + i % 4,
            "compute_us": 500 + 13 * i,
            "latency_us": 900 + 13 * i,
            "status_code": 429 if i % 9 == 0 else 200,
            "billable": i % 9 != 0,
            "created_at": T0 + timedelta(seconds=271 * i),  # ~30 hours, every minute value
        }
        for i in range(400)
    ]


def _seed(sync: Engine) -> None:
    with sync.begin() as conn:
        for c in (1, 2):
            conn.execute(
                text("INSERT INTO customers (id, name, status, created_at) "
                     "VALUES (:c, :n, 'active', CURRENT_TIMESTAMP)"),
                {"c": c, "n": f"reader-{c}"},
            )  # fmt: skip
            conn.execute(
                text(
                    "INSERT INTO api_keys (id, customer_id, prefix, last_four, hash, scopes, "
                    "created_at) VALUES (:c, :c, :p, 'abcd', :h, '[\"predict\"]', "
                    "CURRENT_TIMESTAMP)"
                ),
                {"c": c, "p": f"tg_read{c:05d}", "h": f"{c + 10:064d}"},
            )


@pytest.fixture(params=["postgres", "sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Set up outside the event loop: building a database runs its own loop."""
    if request.param == "postgres":
        settings: Settings = request.getfixturevalue("settings")
        url = settings.database_url
        sync = request.getfixturevalue("pg_sync")
    else:
        url = f"sqlite:///{tmp_path}/rollups.db"
        run_migrations(url)
        sync = create_engine(url)
    _seed(sync)
    return url


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = build_engine(db_url, pool_size=2)
    rows = _rows()
    async with engine.begin() as conn:
        assert await insert_usage(conn, rows[:300]) == 300
    async with engine.begin() as conn:  # a retry overlapping the first write: 100 are new
        assert await insert_usage(conn, rows[200:] + rows[250:260]) == 100
    yield engine
    await engine.dispose()


def _expected(customer: int, start: datetime, end: datetime) -> Counter[tuple[Any, ...]]:
    """aggregate_usage's answer computed from the rows themselves."""
    sums: Counter[tuple[Any, ...]] = Counter()
    for r in _rows():
        if r["customer_id"] == customer and r["billable"] and start <= r["created_at"] < end:
            key = (r["model"], r["variant"])
            sums[(*key, "requests")] += 1
            sums[(*key, "items")] += r["items"]
            sums[(*key, "compute_us")] += r["compute_us"]
    return sums


def _hour(h: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 5, 31, 20, tzinfo=UTC) + timedelta(
        hours=h, minutes=minute, seconds=second
    )


WINDOWS = [
    (_hour(0), _hour(40)),  # everything, whole hours
    (_hour(1), _hour(5)),  # whole hours only: rollups alone
    (_hour(0, 31, 7), _hour(9, 12, 59)),  # partial hours at both edges
    (_hour(2, 5), _hour(2, 55)),  # inside one hour: rows alone
    (_hour(3, 59, 59), _hour(4, 0, 1)),  # across an hour boundary by two seconds
    (_hour(3, 30), _hour(5)),  # partial start, whole end
    (_hour(4), _hour(8) - timedelta(microseconds=1)),  # whole start, partial end
    (_hour(5), _hour(5)),  # empty
    (datetime(2026, 6, 1, tzinfo=UTC), _hour(40)),  # the new month alone
]


@pytest.mark.parametrize(("start", "end"), WINDOWS)
async def test_rollup_readers_equal_raw_sums(
    engine: AsyncEngine, start: datetime, end: datetime
) -> None:
    async with build_sessionmaker(engine)() as session:
        for customer in (1, 2):
            got: Counter[tuple[Any, ...]] = Counter()
            for a in await aggregate_usage(session, customer, start, end):
                got[(a.model, a.variant, "requests")] += a.requests
                got[(a.model, a.variant, "items")] += a.items
                got[(a.model, a.variant, "compute_us")] += a.compute_us
            assert +got == +_expected(customer, start, end)
        # Closing a period reads every customer at once: the same answer.
        everyone = await aggregate_usage_by_customer(session, start, end)
        for customer in (1, 2):
            alone = await aggregate_usage(session, customer, start, end)
            assert sorted(everyone.get(customer, []), key=repr) == sorted(alone, key=repr)
        cells = await usage_cells(session, 1, start, end)
    mine = [r for r in _rows() if r["customer_id"] == 1 and start <= r["created_at"] < end]
    assert sum(c.requests for c in cells) == len(mine)
    assert sum(c.errors for c in cells) == sum(r["status_code"] >= 400 for r in mine)
    assert sum(c.billable_requests for c in cells) == sum(r["billable"] for r in mine)
    assert sum(c.compute_us for c in cells) == sum(r["compute_us"] for r in mine)
    assert {c.day for c in cells} == {f"{r['created_at']:%Y-%m-%d}" for r in mine}


async def test_rollups_hold_each_row_once(engine: AsyncEngine) -> None:
    """Every rollup row equals the sums of its rows, each row counted once despite the
    overlapping retry."""
    cols = [UsageHourly.__table__.c[name] for name in (*ROLLUP_KEY, *ROLLUP_MEASURES)]
    async with engine.connect() as conn:
        got = [dict(r._mapping) for r in await conn.execute(select(*cols))]
    expected = rollup_rows(_rows())
    assert len(expected) < len(_rows())
    assert sorted(got, key=_key) == sorted(expected, key=_key)


def _key(r: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(r[k] for k in ROLLUP_KEY)
