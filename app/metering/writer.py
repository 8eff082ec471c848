"""The meter writer: group commit of usage rows.

One writer per process owns a queue of pending rows. Its loop takes everything waiting (up to
``max_batch``), writes it with a single multi-row INSERT in one transaction, and only then
resolves each caller's future. While one commit is in flight the next batch accumulates, so
under load the batch size grows by itself and the per-request cost of durability falls,
without any artificial wait at low load.

Up to ``lanes`` commits are in flight at once, each on its own connection: a commit's wall
time includes the event loop's own delay in reading the reply, and with one lane a busy
server measured ~3 ms per commit (0.4 ms for the database itself), which capped throughput
at (connections / commit time). SQLite takes one lane (it has one writer anyway).

A caller that awaits :meth:`MeterWriter.record` therefore knows its row is durable; if the
commit fails or times out, the caller gets :class:`LedgerUnavailable` (503) and must not
return a prediction. Shutdown stops intake and drains what is queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, fields
from datetime import datetime
from functools import partial
from typing import Any

import asyncpg
import orjson
from sqlalchemy.exc import DataError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.errors import ServiceUnavailable
from app.metering.rollups import insert_usage
from app.observability.metrics import Metrics
from app.tasks import BackgroundLoop

log = logging.getLogger("tollgate.meter")


class LedgerUnavailable(ServiceUnavailable):
    type = "ledger_unavailable"


@dataclass(slots=True)
class UsageRow:
    request_id: str
    api_key_id: int
    customer_id: int
    endpoint: str
    model: str | None
    version: str | None
    variant: str | None
    device: str | None
    items: int
    compute_us: int
    latency_us: int
    status_code: int
    billable: bool
    created_at: datetime


_Pending = tuple[UsageRow, asyncio.Future[None]]


class _Lane:
    """One commit in flight at a time, on the lane's own connection (and, on Postgres, that
    connection's asyncpg driver, kept so a commit needs no SQLAlchemy round trip)."""

    __slots__ = ("conn", "driver")

    def __init__(self) -> None:
        self.conn: AsyncConnection | None = None
        self.driver: Any = None


_COLUMNS = tuple(f.name for f in fields(UsageRow))


class MeterWriter:
    def __init__(
        self,
        engine: AsyncEngine,
        metrics: Metrics,
        *,
        max_batch: int = 512,
        queue_size: int = 10_000,
        commit_timeout_s: float = 5.0,
        lanes: int = 2,
    ) -> None:
        self._engine = engine
        self._metrics = metrics
        self._max_batch = max_batch
        self._commit_timeout = commit_timeout_s
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=queue_size)
        self._loops: list[BackgroundLoop] = []
        self._accepting = False
        lanes = 1 if engine.dialect.name == "sqlite" else lanes
        self._lanes = [_Lane() for _ in range(lanes)]

    @property
    def lanes(self) -> int:
        return len(self._lanes)

    def start(self) -> None:
        self._accepting = True
        self._loops = [
            BackgroundLoop(f"meter-lane-{i}", partial(self._commit_next, lane))
            for i, lane in enumerate(self._lanes)
        ]
        for loop in self._loops:
            loop.start()

    async def record(self, row: UsageRow) -> None:
        """Queue a row and wait until it is committed. Raises LedgerUnavailable otherwise."""
        if not self._accepting:
            raise LedgerUnavailable("the usage ledger is shutting down")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((row, future))
        except asyncio.QueueFull:
            raise LedgerUnavailable("the usage ledger is overloaded; retry shortly") from None
        await future

    async def stop(self) -> None:
        """Stop intake, commit everything already queued, then end the loop."""
        self._accepting = False
        if not self._loops:
            return
        await self._queue.join()
        for loop in self._loops:
            await loop.stop()
        self._loops = []
        for lane in self._lanes:
            if lane.conn is not None:
                await lane.conn.close()
                lane.conn = lane.driver = None

    async def _commit_next(self, lane: _Lane) -> None:
        """One loop per lane, this its step: take everything queued, commit it. Only idle
        lanes wait on the queue, so whatever arrives while every lane is busy joins the
        next batch."""
        queue, max_batch = self._queue, self._max_batch
        batch = [await queue.get()]
        while len(batch) < max_batch:
            try:
                batch.append(queue.get_nowait())
            except asyncio.QueueEmpty:
                break
        self._metrics.meter_queue_depth.set(queue.qsize())
        try:
            await self._commit(lane, batch)
        finally:
            for _ in batch:
                queue.task_done()

    async def _commit(self, lane: _Lane, batch: list[_Pending]) -> None:
        rows = [row for row, _ in batch]
        started = time.perf_counter()
        try:
            # asyncio.timeout, not wait_for: no extra task (and loop turn) per commit.
            async with asyncio.timeout(self._commit_timeout):
                await self._insert_with_retry(lane, rows)
        except Exception as exc:  # any failure means: not durable, tell every waiter
            if len(batch) > 1 and _refused_value(exc):
                # The database refused a value in some row (not the connection): commit
                # the halves apart so that only the offending rows fail, not their
                # neighbours in the batch.
                half = len(batch) // 2
                await self._commit(lane, batch[:half])
                await self._commit(lane, batch[half:])
                return
            self._metrics.meter_failures_total.inc(len(batch))
            log.error(
                "ledger commit failed",
                extra={"rows": len(batch), "error": type(exc).__name__, "detail": str(exc)[:200]},
            )
            error = LedgerUnavailable("the usage ledger is unavailable; retry shortly")
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        self._metrics.meter_commit_seconds.observe(time.perf_counter() - started)
        self._metrics.meter_batch_size.observe(len(batch))
        for _, future in batch:
            if not future.done():
                future.set_result(None)

    async def _insert_with_retry(self, lane: _Lane, rows: list[UsageRow]) -> None:
        """One retry on a fresh connection (a server restart or a killed idle connection
        should not cost a batch). Safe because the insert skips request ids already present
        and only rows it inserted reach the rollups: if the first attempt did commit, the
        retry writes and counts nothing twice."""
        try:
            await self._insert(lane, rows)
        except Exception as exc:
            if _refused_value(exc):  # the same rows would be refused again
                raise
            log.warning(
                "ledger commit failed; retrying on a new connection",
                extra={"error": type(exc).__name__},
            )
            await self._insert(lane, rows)

    async def _insert(self, lane: _Lane, rows: list[UsageRow]) -> None:
        # Each lane keeps one connection for itself: no pool checkout or pre-ping per batch.
        # After any failure (or a timeout's cancellation) the connection's state is unknown,
        # so it is invalidated and the lane's next batch opens a fresh one.
        if lane.conn is None:
            lane.conn = await self._engine.connect()
            if lane.conn.dialect.name == "postgresql":
                lane.driver = (await lane.conn.get_raw_connection()).driver_connection
        conn = lane.conn
        try:
            if lane.driver is not None:
                await _insert_postgres(lane.driver, rows)
            else:
                async with conn.begin():
                    await insert_usage(conn, [{c: getattr(r, c) for c in _COLUMNS} for r in rows])
        except BaseException:
            lane.conn = lane.driver = None
            with contextlib.suppress(Exception):
                await conn.invalidate()
                await conn.close()
            raise


def _refused_value(exc: BaseException) -> bool:
    """A data exception (SQLSTATE class 22: a value the column or type cannot take), as
    asyncpg raises it or as SQLAlchemy wraps it."""
    return isinstance(exc, asyncpg.exceptions.DataError | DataError) or (
        exc.__cause__ is not None and _refused_value(exc.__cause__)
    )


# One statement, one round trip: the batch travels as one JSON array of row objects (orjson
# serializes the dataclasses natively) and Postgres turns it into rows of the table's own
# type. Client CPU per commit of 7 rows (asyncpg on uvloop, alone): 117 us with one array per
# column (asyncpg encodes 14 arrays), 79 us as one JSON text; Postgres does the parsing on
# its own core. Run outside an explicit transaction, the statement is its own transaction,
# committed (and, with synchronous_commit on, flushed to WAL) before it returns.
#
# The same statement keeps the hourly rollups (usage_hourly): the INSERT's RETURNING gives
# exactly the rows it inserted (a request id already present, e.g. on a retry, returns
# nothing), and they are summed per rollup key and upserted. One statement is one
# transaction, so a rollup can never hold a row the ledger lacks or miss one it has; the
# rows are inserted in request id order and the sums upserted in key order, so two batches
# that share rows (a retry racing its own first attempt) take their locks in one order and
# cannot deadlock.
# The dedupe key is (request_id, created_at): see the migration ledger_partitions.
_PG_COLUMNS = ", ".join(_COLUMNS)
# Built from constant column lists, never from input.
_PG_INSERT = (
    "WITH inserted AS ("  # noqa: S608
    f"INSERT INTO usage_events ({_PG_COLUMNS}) SELECT {_PG_COLUMNS} "
    "FROM json_populate_recordset(NULL::usage_events, $1::json) ORDER BY request_id "
    "ON CONFLICT (request_id, created_at) DO NOTHING "
    "RETURNING customer_id, api_key_id, model, version, variant, billable, status_code, "
    "items, compute_us, created_at) "
    "INSERT INTO usage_hourly AS h (customer_id, hour, api_key_id, model, version, variant, "
    "billable, requests, errors, items, compute_us) "
    "SELECT customer_id, date_trunc('hour', created_at, 'UTC'), api_key_id, "
    "coalesce(model, ''), coalesce(version, ''), coalesce(variant, ''), billable, count(*), "
    "count(*) FILTER (WHERE status_code >= 400), sum(items), sum(compute_us) "
    "FROM inserted GROUP BY 1, 2, 3, 4, 5, 6, 7 ORDER BY 1, 2, 3, 4, 5, 6, 7 "
    "ON CONFLICT (customer_id, hour, api_key_id, model, version, variant, billable) "
    "DO UPDATE SET requests = h.requests + excluded.requests, "
    "errors = h.errors + excluded.errors, items = h.items + excluded.items, "
    "compute_us = h.compute_us + excluded.compute_us"
)


async def _insert_postgres(driver: Any, rows: list[UsageRow]) -> None:
    """``driver``: the lane's asyncpg connection (untyped: asyncpg ships no annotations)."""
    if driver.is_in_transaction():  # never inherit a half-open transaction
        raise RuntimeError("meter connection unexpectedly inside a transaction")
    await driver.execute(_PG_INSERT, orjson.dumps(rows, option=orjson.OPT_NAIVE_UTC).decode())
