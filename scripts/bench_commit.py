"""The meter's durable commit, timed alone: the writer's own statement (ledger rows + hourly
rollup upsert, one transaction, flushed before it returns) on one connection per database,
interleaved across databases so that a noisy host slows every side alike.

    python -m scripts.bench_commit DB[,DB...] [--rows N] [--rounds R] [--per-round K]

Each database must be migrated and hold at least one API key (``python -m scripts.bench``
leaves one in ``tollgate_bench``; copy it with ``CREATE DATABASE x TEMPLATE tollgate_bench``,
then migrate or alter the copy to compare schemas). Rows are written under the newest key.
Pin it for steadier numbers: ``taskset -c 0 python -m scripts.bench_commit ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from datetime import UTC, datetime

import asyncpg
import orjson

from app.metering.writer import _PG_INSERT, UsageRow

PG = os.environ.get("TOLLGATE_BENCH_PG", "postgres@127.0.0.1:5432")


def _rows(key_id: int, customer_id: int, n: int) -> str:
    now = datetime.now(UTC)
    rows = [
        UsageRow(uuid.uuid4().hex, key_id, customer_id, "v1.predict", "cnn", "1", None, "cpu",
                 1, 300, 900, 200, True, now)
        for _ in range(n)
    ]  # fmt: skip
    return orjson.dumps(rows, option=orjson.OPT_NAIVE_UTC).decode()


async def run(dbs: list[str], rows: int, rounds: int, per_round: int) -> dict[str, list[float]]:
    conns, keys = {}, {}
    for db in dict.fromkeys(dbs):  # one connection per database, even if named twice
        conn = await asyncpg.connect(f"postgresql://{PG}/{db}")
        key = await conn.fetchrow("SELECT id, customer_id FROM api_keys ORDER BY id DESC LIMIT 1")
        if key is None:
            raise SystemExit(f"{db}: no API key to write rows under")
        conns[db], keys[db] = conn, (key["id"], key["customer_id"])
    times: dict[str, list[float]] = {db: [] for db in dbs}
    for r in range(rounds):
        for db in dbs if r % 2 == 0 else dbs[::-1]:
            for _ in range(per_round):
                payload = _rows(*keys[db], rows)
                started = time.perf_counter()
                await conns[db].execute(_PG_INSERT, payload)
                times[db].append(time.perf_counter() - started)
    for conn in conns.values():
        await conn.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dbs", help="comma-separated database names")
    parser.add_argument("--rows", type=int, default=1, help="ledger rows per commit")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--per-round", type=int, default=50)
    args = parser.parse_args()
    dbs = args.dbs.split(",")
    times = asyncio.run(run(dbs, args.rows, args.rounds, args.per_round))
    for db in dbs:
        ts = sorted(times[db])
        print(
            f"{db:24s} rows/commit {args.rows:3d}  p50 {ts[len(ts) // 2] * 1e3:.3f} ms  "
            f"mean {statistics.mean(ts) * 1e3:.3f}  p90 {ts[int(len(ts) * 0.9)] * 1e3:.3f}  "
            f"n {len(ts)}"
        )


if __name__ == "__main__":
    main()
