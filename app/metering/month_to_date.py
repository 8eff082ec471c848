"""Month-to-date billable usage as Prometheus gauges, read from the usage ledger.

Counters such as tollgate_items_total restart with each process and count every served
item, billable or not; what a customer is billed for lives in the ledger. So a background
task sums the ledger's billable rows of the current UTC month (the billing period) every
``refresh_s`` seconds and sets ``tollgate_billable_month_to_date{model, variant, unit}``
(``variant`` "" for the base model, as on every per-model series). Every
process and replica reads the same rows: dashboards take the max across them, not the sum.
A failed read keeps the last values (the refreshed-at gauge shows how old they are).

A refresh does not re-read the whole month: rows older than ``SETTLED`` are final (a usage
row is committed within the meter's commit timeout of its ``created_at``, seconds), so their
totals are kept and each refresh reads only the rows since then.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.clock import Clock, SystemClock
from app.metering.repository import ModelTotals, billable_totals
from app.money.periods import Period
from app.observability.metrics import Metrics
from app.tasks import BackgroundLoop

UNITS = ("requests", "items", "compute_seconds")
SETTLED = timedelta(minutes=10)


_Key = tuple[str, str]  # model, variant


def _add(into: dict[_Key, list[int]], totals: list[ModelTotals]) -> None:
    for t in totals:
        row = into.setdefault((t.model, t.variant), [0, 0, 0])
        row[0] += t.requests
        row[1] += t.items
        row[2] += t.compute_us


class MonthToDateGauges:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        metrics: Metrics,
        refresh_s: float = 60.0,
        clock: Clock | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._clock = clock or SystemClock()
        self._metrics = metrics
        self._refresh_s = refresh_s
        self._shown: set[_Key] = set()
        # Totals of the month's rows created before _settled_until, per model and variant.
        self._period: Period | None = None
        self._settled: dict[_Key, list[int]] = {}
        self._settled_until: datetime | None = None
        self._lock = asyncio.Lock()  # one refresh at a time: settled totals add up once
        # A failed read is logged by the loop and keeps the last values.
        self._loop = BackgroundLoop(
            "month-to-date-gauges", self.refresh, interval_s=refresh_s, step_first=True
        )

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def refresh(self, now: datetime | None = None) -> None:
        """Set the gauges from the ledger: billable rows from the start of ``now``'s month."""
        async with self._lock:
            await self._refresh(now or self._clock.now())

    async def _refresh(self, now: datetime) -> None:
        period = Period.containing(now)
        if period != self._period or self._settled_until is None:
            self._period, self._settled, self._settled_until = period, {}, period.start
        settled_until = max(self._settled_until, now - SETTLED)
        async with self._sessionmaker() as session:
            newly_settled = await billable_totals(session, self._settled_until, settled_until)
            recent = await billable_totals(session, settled_until, now)
        _add(self._settled, newly_settled)
        self._settled_until = settled_until
        totals = {key: list(row) for key, row in self._settled.items()}
        _add(totals, recent)

        gauge = self._metrics.billable_month_to_date
        # A new month starts at zero for every model seen before (in multiprocess mode a
        # removed label would linger in the shared files, so it is set to 0 instead).
        for model, variant in self._shown - set(totals):
            for unit in UNITS:
                gauge.labels(model, variant, unit).set(0)
        for (model, variant), (requests, items, compute_us) in totals.items():
            gauge.labels(model, variant, "requests").set(requests)
            gauge.labels(model, variant, "items").set(items)
            gauge.labels(model, variant, "compute_seconds").set(compute_us / 1e6)
        self._shown |= set(totals)
        self._metrics.billable_month_to_date_refreshed.set(now.timestamp())
