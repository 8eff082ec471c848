"""The console's Stripe page against the local stand-in: Sync now pushes the closed month's
invoices, the invoice list shows their Stripe ids, and the reconciliation matches."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi import FastAPI

from app.clock import ManualClock
from app.config import Settings
from app.keys.schemas import Scope
from tests.conftest import make_key, make_settings
from tests.console.helpers import csrf_of, sign_in
from tests.console.test_finance_pages import OCT_5, SEPT, _close_api, _customers
from tests.stripe_standin.server import StripeStandin


@pytest.fixture
def settings(pg_url: str, pg_sync: object, standin: StripeStandin) -> Settings:
    return make_settings(
        pg_url,
        stripe_api_key="sk_test_tollgate",
        stripe_webhook_secret="whsec_test_secret",
        stripe_api_base=standin.base_url,
        stripe_max_retries=2,
        stripe_retry_delay_s=0.01,
    )


async def test_sync_now_and_reconcile(
    app: FastAPI, client: httpx.AsyncClient, clock: ManualClock
) -> None:
    clock.set(OCT_5)
    admin = await make_key(app, "operator", (Scope.admin,))
    finance = await make_key(app, "operator", (Scope.finance,))
    await _customers(app, client, admin, "eur", "usd")
    await _close_api(client, finance)
    await sign_in(client, finance)

    before = await client.get("/console/billing/stripe", params={"period": SEPT})
    assert before.status_code == 200 and "Sync now" in before.text
    assert before.text.count("not pushed") == 2
    listing = await client.get("/console/billing")
    assert listing.text.count("not pushed yet") == 2

    synced = await client.post(
        "/console/billing/sync", data={"csrf_token": csrf_of(before.text), "period": SEPT}
    )
    assert synced.status_code == 200, synced.text
    assert "Pushed 2 invoice(s)" in synced.text

    after = await client.get("/console/billing/stripe", params={"period": SEPT})
    assert "Every invoice matches Stripe." in after.text
    assert after.text.count("<td>match</td>") == 2
    listing = await client.get("/console/billing")
    assert len(re.findall(r"<code>in_[^<]+</code>", listing.text)) == 2
