"""Month-to-date billable usage as Prometheus gauges, read from the usage ledger.

Counters such as tollgate_items_total restart with each process and count every served
item, billable or not; what a customer is billed for lives in the ledger. So a background
task sums the ledger's billable rows of the current UTC month (the billing period) every
``refresh_s`` seconds and sets ``tollgate_billable_month_to_date{model, unit}``. Every
process and replica reads the same rows: dashboards take the max across them, not the sum.
A failed read keeps the last values (the refreshed-at gauge shows how old they are).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.metering.repository import billable_totals
from app.money.periods import Period
from app.observability.metrics import Metrics
from app.orm.base import utcnow

log = logging.getLogger("tollgate.metering")

UNITS = ("requests", "items", "compute_seconds")


class MonthToDateGauges:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        metrics: Metrics,
        refresh_s: float = 60.0,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._metrics = metrics
        self._refresh_s = refresh_s
        self._shown: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="month-to-date-gauges")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def refresh(self, now: datetime | None = None) -> None:
        """Set the gauges from the ledger: billable rows from the start of ``now``'s month."""
        now = now or utcnow()
        async with self._sessionmaker() as session:
            totals = await billable_totals(session, Period.containing(now).start, now)
        gauge = self._metrics.billable_month_to_date
        models = {t.model for t in totals}
        # A new month starts at zero for every model seen before (in multiprocess mode a
        # removed label would linger in the shared files, so it is set to 0 instead).
        for model in self._shown - models:
            for unit in UNITS:
                gauge.labels(model, unit).set(0)
        for t in totals:
            gauge.labels(t.model, "requests").set(t.requests)
            gauge.labels(t.model, "items").set(t.items)
            gauge.labels(t.model, "compute_seconds").set(t.compute_us / 1e6)
        self._shown |= models
        self._metrics.billable_month_to_date_refreshed.set(now.timestamp())

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:
                log.warning(
                    "month-to-date usage refresh failed", extra={"error": type(exc).__name__}
                )
            await asyncio.sleep(self._refresh_s)
