"""The commit benchmark (scripts/bench_commit.py) in a tiny run: it writes through the
meter's real statement, so the rows it timed are in the ledger and counted exactly once in
the rollups; what is checked is that, not any speed."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text

from scripts import bench_commit
from tests.conftest import PG_HOST


async def test_every_timed_commit_wrote_its_rows_and_rollups(
    pg_url: str, pg_sync: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pg_sync.begin() as conn:
        conn.execute(text("INSERT INTO customers (id, name, status, created_at) "
                          "VALUES (7, 'bench', 'active', now())"))  # fmt: skip
        conn.execute(
            text(
                "INSERT INTO api_keys (id, customer_id, prefix, last_four, hash, scopes, "
                "created_at) VALUES (7, 7, 'tg_bench007', 'abcd', '7', '[\"predict\"]', now())"
            )
        )
    monkeypatch.setattr(bench_commit, "PG", PG_HOST)
    db = pg_url.rsplit("/", 1)[1]
    times = await bench_commit.run([db, db], rows=3, rounds=2, per_round=4)
    assert [len(t) for t in times.values()] == [16]  # one database named twice: one list
    assert all(t > 0 for t in times[db])
    with pg_sync.connect() as conn:
        ledger = conn.execute(
            text("SELECT count(*), count(DISTINCT request_id), min(api_key_id) FROM usage_events")
        ).one()
        rollups = conn.scalar(text("SELECT sum(requests) FROM usage_hourly WHERE customer_id = 7"))
    assert tuple(ledger) == (48, 48, 7)  # 2 rounds x 2 sides x 4 commits x 3 rows
    assert rollups == 48
