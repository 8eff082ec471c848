"""Spend caps: a plan's hard cap on period-to-date usage charges (base fee excluded).

The check costs no query per request. Per customer the tracker keeps the period-to-date
quantities per (model, variant) since the current plan took effect, loaded once from the
ledger and then added to after each billable request; a background task reloads them from
the ledger every ``reconcile_s`` seconds, which also folds in what other processes served.
The projected spend (quantities including this request, rated with the plan's components)
must stay within the cap, otherwise 402 ``quota_exceeded``. With several processes a
customer can overshoot by at most what the others served since the last reconcile.
A cap of 0 with included quantities is an included-quota-only plan.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, localcontext
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.principal import PlanSnapshot
from app.billing.rating import aggregate_usage, variant_matches
from app.clock import Clock, SystemClock
from app.errors import AppError
from app.money.periods import Period
from app.money.pricing import EXACT, PriceComponent, PricingError, Unit, rate
from app.tasks import BackgroundLoop

log = logging.getLogger("tollgate.limits")
_MICRO = Decimal(1_000_000)


class QuotaExceeded(AppError):
    status_code = 402
    type = "quota_exceeded"


class SpendNotComputable(QuotaExceeded):
    """The plan's usage charges cannot be computed exactly, so the cap cannot be enforced:
    refused like a reached cap rather than served unchecked. Plan amounts are bounded at the
    API; only a version written before that can get here."""

    type = "plan_not_ratable"


@dataclass
class _Usage:
    since: datetime
    plan_version_id: int
    # (model, variant) -> [requests, items, compute_us]
    totals: dict[tuple[str | None, str | None], list[int]] = field(default_factory=dict)


def _quantity(c: PriceComponent, totals: dict[tuple[str | None, str | None], list[int]]) -> Decimal:
    q = 0
    for (model, variant), (requests, items, compute_us) in totals.items():
        if (c.model is None or c.model == model) and variant_matches(c.variant, variant):
            q += (
                requests if c.unit is Unit.request else items if c.unit is Unit.item else compute_us
            )
    return Decimal(q) / _MICRO if c.unit is Unit.compute_second else Decimal(q)


def usage_spend(
    plan: PlanSnapshot, totals: dict[tuple[str | None, str | None], list[int]]
) -> Decimal:
    try:
        with localcontext(EXACT):  # summed exactly, like each amount
            return sum((rate(c, _quantity(c, totals)) for c in plan.components), Decimal(0))
    except (PricingError, ArithmeticError):  # ArithmeticError: decimal signals
        raise SpendNotComputable(
            "this plan's usage charges cannot be computed exactly, so its spend cap cannot "
            "be enforced; ask for a plan with bounded prices",
            details={"plan_version_id": plan.plan_version_id},
        ) from None


class SpendTracker:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        reconcile_s: float = 30.0,
        clock: Clock | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._clock = clock or SystemClock()
        self._reconcile_s = reconcile_s
        self._usage: dict[int, _Usage] = {}
        self._loop = BackgroundLoop("spend-reconciler", self.reconcile, interval_s=reconcile_s)

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    def _since(self, plan: PlanSnapshot) -> datetime:
        return max(Period.containing(self._clock.now()).start, plan.effective_from)

    async def _load(self, customer_id: int, plan: PlanSnapshot) -> _Usage:
        since = self._since(plan)
        async with self._sessionmaker() as session:
            rows = await aggregate_usage(session, customer_id, since, self._clock.now())
        usage = _Usage(since, plan.plan_version_id)
        for r in rows:
            usage.totals[(r.model, r.variant)] = [r.requests, r.items, r.compute_us]
        return usage

    async def _current(self, customer_id: int, plan: PlanSnapshot) -> _Usage:
        usage = self._usage.get(customer_id)
        if (
            usage is None
            or usage.plan_version_id != plan.plan_version_id
            or usage.since != self._since(plan)  # a new month, or a plan change
        ):
            usage = await self._load(customer_id, plan)
            self._usage[customer_id] = usage
        return usage

    async def check(
        self, customer_id: int, plan: PlanSnapshot, model: str, variant: str | None, items: int
    ) -> tuple[Decimal, Decimal]:
        """Raise QuotaExceeded if serving this request would pass the cap; else reserve its
        request and items (so concurrent requests see them) and return (spend, cap). The
        caller must ``release`` the reservation if the request then fails."""
        assert plan.spend_cap is not None
        usage = await self._current(customer_id, plan)
        spent = usage_spend(plan, usage.totals)
        projected = {k: list(v) for k, v in usage.totals.items()}
        row = projected.setdefault((model, variant), [0, 0, 0])
        row[0] += 1
        row[1] += items
        if usage_spend(plan, projected) > plan.spend_cap:
            headers = spend_headers(spent, plan)
            # Plain decimals, as in the headers: never "0E-10" or "500.0000000000".
            spend, cap = headers["x-usage-spend-period-to-date"], headers["x-usage-spend-cap"]
            raise QuotaExceeded(
                f"this request would take the period's usage charges past the plan's cap of "
                f"{cap} {plan.currency.upper()}",
                details={"spend": spend, "cap": cap, "currency": plan.currency},
                headers=headers,
            )
        usage.totals[(model, variant)] = row
        return usage_spend(plan, usage.totals), plan.spend_cap

    def _adjust(
        self, customer_id: int, model: str, variant: str | None, delta: tuple[int, int, int]
    ) -> None:
        usage = self._usage.get(customer_id)
        if usage is None:
            return
        row = usage.totals.setdefault((model, variant), [0, 0, 0])
        for i, d in enumerate(delta):
            row[i] = max(0, row[i] + d)

    def release(self, customer_id: int, model: str, variant: str | None, items: int) -> None:
        self._adjust(customer_id, model, variant, (-1, -items, 0))

    def add_compute(
        self, customer_id: int, model: str, variant: str | None, compute_us: int
    ) -> None:
        self._adjust(customer_id, model, variant, (0, 0, compute_us))

    async def reconcile(self) -> None:
        """Reload every tracked customer from the ledger (catches other processes' usage)."""
        for customer_id, usage in list(self._usage.items()):
            since = usage.since
            async with self._sessionmaker() as session:
                rows = await aggregate_usage(session, customer_id, since, self._clock.now())
            fresh = _Usage(since, usage.plan_version_id)
            for r in rows:
                fresh.totals[(r.model, r.variant)] = [r.requests, r.items, r.compute_us]
            self._usage[customer_id] = fresh


# The OpenAPI ``headers`` of a metered response (success or 402), sent when the plan has a
# spend cap.
SPEND_HEADERS: dict[str, dict[str, Any]] = {
    name: {"description": description, "schema": {"type": "string"}}
    for name, description in (
        (
            "x-usage-spend-period-to-date",
            "Usage charges this period so far (on a 402: before this request)",
        ),
        ("x-usage-spend-cap", "The plan's spend cap for the period"),
        ("x-usage-currency", "The plan's currency (ISO 4217, lower case)"),
    )
}


def spend_headers(spent: Decimal, plan: PlanSnapshot) -> dict[str, str]:
    return {
        "x-usage-spend-period-to-date": f"{spent.normalize(EXACT):f}",
        "x-usage-spend-cap": f"{plan.spend_cap.normalize(EXACT):f}"
        if plan.spend_cap is not None
        else "",
        "x-usage-currency": plan.currency,
    }
