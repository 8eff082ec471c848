"""Usage by UTC day, model and variant (the console's stacked chart): the same rows as the
usage report, one level finer, and only the customer's own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI

from app.errors import Unprocessable
from app.metering.schemas import GroupBy
from app.metering.service import usage_breakdown, usage_report
from app.resources import resources
from tests.billing.helpers import add_usage
from tests.conftest import make_key

DAY1 = datetime(2026, 3, 1, 10, tzinfo=UTC)
DAY2 = datetime(2026, 3, 2, 23, 59, tzinfo=UTC)


async def test_cells_by_day_model_and_variant(app: FastAPI) -> None:
    acme = await make_key(app, "acme")
    globex = await make_key(app, "globex")
    await add_usage(app, acme, DAY1, count=3, items=2, model="cnn", variant="fp32")
    await add_usage(app, acme, DAY1, count=1, model="cnn", variant="int8", billable=False)
    await add_usage(app, acme, DAY2, count=2, model="linreg")
    await add_usage(app, globex, DAY1, count=7, model="cnn", variant="fp32")
    start, end = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC)
    async with resources(app).sessionmaker() as session:
        found = await usage_breakdown(session, acme.customer_id, start, end, now=end)
        report = await usage_report(session, acme.customer_id, start, end, GroupBy.day, now=end)
        with pytest.raises(Unprocessable):
            await usage_breakdown(session, acme.customer_id, end, start, now=end)
    cells = [(c.day, c.model, c.variant, c.requests, c.items, c.errors) for c in found.cells]
    assert cells == [
        ("2026-03-01", "cnn", "fp32", 3, 6, 0),
        ("2026-03-01", "cnn", "int8", 1, 1, 1),
        ("2026-03-02", "linreg", "", 2, 2, 0),
    ]
    assert sum(c.requests for c in found.cells) == report.total.requests == 6
    assert sum(c.compute_us for c in found.cells) == report.total.compute_us
    assert (found.start, found.end) == (start, end)


async def test_default_range_is_the_last_30_days(app: FastAPI) -> None:
    acme = await make_key(app, "acme")
    now = datetime(2026, 4, 1, tzinfo=UTC)
    await add_usage(app, acme, now - timedelta(days=31))
    await add_usage(app, acme, now - timedelta(days=2))
    async with resources(app).sessionmaker() as session:
        found = await usage_breakdown(session, acme.customer_id, None, None, now=now)
    assert [c.day for c in found.cells] == ["2026-03-30"]
    assert found.start == now - timedelta(days=30)
