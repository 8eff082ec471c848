"""The overview reads settled days once and today live: new usage shows on the next view,
and usage of days already settled is counted as well."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx
from fastapi import FastAPI

from app.clock import ManualClock
from app.keys.schemas import Scope
from tests.billing.helpers import add_usage
from tests.conftest import make_key
from tests.console.helpers import sign_in


def _requests(html: str) -> int:
    match = re.search(r'id="stat-requests">(\d+)<', html)
    assert match
    return int(match.group(1))


async def test_settled_days_and_today_add_up_across_views(
    app: FastAPI, client: httpx.AsyncClient, clock: ManualClock
) -> None:
    admin = await make_key(app, "operator", (Scope.admin,))
    developer = await make_key(app, "acme")
    now = clock.now()
    await add_usage(app, developer, now - timedelta(days=3), count=4)  # a settled day
    await add_usage(app, developer, now - timedelta(seconds=5), count=2)  # today
    await sign_in(client, admin)
    first = await client.get("/console/")
    assert _requests(first.text) == 6
    await add_usage(app, developer, clock.now(), count=3)  # today again, after the first view
    second = await client.get("/console/")
    assert _requests(second.text) == 9  # the settled days from memory, today read again
