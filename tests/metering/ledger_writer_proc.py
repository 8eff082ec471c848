"""A meter writer in a process of its own, for the exactness drill in test_rollups.py:
``python -m tests.metering.ledger_writer_proc URL N ORDER`` writes the deterministic rows
0..N-1 (``ORDER``: ``up`` or ``down``) through a real MeterWriter with 2 lanes and 64
concurrent callers, printing ``committed`` once the first row is durable."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, timedelta

from app.db.engine import build_engine
from app.metering.writer import MeterWriter, UsageRow
from app.observability.metrics import Metrics

BASE = datetime(2026, 3, 31, 22, 0, tzinfo=UTC)  # the rows span a month boundary
CUSTOMERS = 3


def row(i: int) -> UsageRow:
    customer = 1 + i % CUSTOMERS
    return UsageRow(
        request_id=f"drill-{i}",
        api_key_id=customer,
        customer_id=customer,
        endpoint="v1.predict",
        model=None if i % 13 == 0 else "cnn",
        version="1",
        variant="int8" if i % 3 == 0 else None,
        device="cpu",
        items=1 + i % 5,
        compute_us=100 + i,
        latency_us=200 + i,
        status_code=422 if i % 7 == 0 else 200,
        billable=i % 7 != 0,
        created_at=BASE + timedelta(seconds=7 * i),
    )


async def main(url: str, n: int, order: str) -> None:
    engine = build_engine(url, pool_size=4)
    writer = MeterWriter(engine, Metrics(), max_batch=64, lanes=2)
    writer.start()
    todo = list(range(n)) if order == "up" else list(range(n - 1, -1, -1))
    first = True

    async def caller(share: list[int]) -> None:
        nonlocal first
        for i in share:
            await writer.record(row(i))
            if first:
                first = False
                print("committed", flush=True)

    await asyncio.gather(*(caller(todo[k::64]) for k in range(64)))
    await writer.stop()
    await engine.dispose()
    print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
