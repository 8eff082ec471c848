"""Is a migration online for the ledger? Runs the migrations (``alembic upgrade head``, in
a process of its own) on a database while writers commit the meter's own statement (ledger
rows + rollup upsert) as fast as they can, and reports the worst commit, its p99 and any
error a writer saw.

    python -m scripts.drill_online_migration DB [--writers 8] [--pause-ms 1]

DB is a database name on TOLLGATE_BENCH_PG (default postgres@127.0.0.1:5432), migrated to
the revision before the one to test and holding API keys 1..100 with their customers
(writers spread rows over them); docs/benchmarks.md says how the 10 M-row one was built.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import orjson

from app.metering.writer import _PG_INSERT, UsageRow

PG = os.environ.get("TOLLGATE_BENCH_PG", "postgres@127.0.0.1:5432")
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Drill:
    migration_rc: int
    migration_s: float
    commits: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def drill(db: str, writers: int, pause_s: float, keys: int = 100) -> Drill:
    url = f"postgresql://{PG}/{db}"
    conns = [await asyncpg.connect(url) for _ in range(writers)]
    commits: list[float] = []
    errors: list[str] = []
    stop = asyncio.Event()

    async def write(conn: asyncpg.Connection, k: int) -> None:
        while not stop.is_set():
            rows = [
                UsageRow(uuid.uuid4().hex, 1 + (k + j) % keys, 1 + (k + j) % keys, "v1.predict",
                         "cnn", "1", None, "cpu", 1, 300, 900, 200, True, datetime.now(UTC))
                for j in range(3)
            ]  # fmt: skip
            started = time.perf_counter()
            try:
                await conn.execute(
                    _PG_INSERT, orjson.dumps(rows, option=orjson.OPT_NAIVE_UTC).decode()
                )
            except Exception as exc:  # reported, not raised: the drill counts them
                errors.append(f"{type(exc).__name__}: {exc}")
            commits.append(time.perf_counter() - started)
            await asyncio.sleep(pause_s)

    tasks = [asyncio.create_task(write(c, k)) for k, c in enumerate(conns)]
    await asyncio.sleep(0.5)  # writers in full flow before the migration starts
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", f"from app.db.migrate import upgrade; upgrade({url!r})", cwd=ROOT
    )
    rc = await proc.wait()
    took = time.perf_counter() - started
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.gather(*tasks)
    for conn in conns:
        await conn.close()
    return Drill(rc, took, commits, errors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db")
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--pause-ms", type=float, default=1.0)
    args = parser.parse_args()
    result = asyncio.run(drill(args.db, args.writers, args.pause_ms / 1000))
    c = sorted(result.commits)
    print(
        f"migration rc={result.migration_rc} in {result.migration_s:.1f} s; "
        f"{len(c)} commits by {args.writers} writers; worst {c[-1] * 1e3:.0f} ms, "
        f"p99 {c[int(len(c) * 0.99)] * 1e3:.1f} ms; errors {len(result.errors)}"
    )
    for error in result.errors[:5]:
        print("  ", error)


if __name__ == "__main__":
    main()
