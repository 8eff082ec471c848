"""A customer's billing key reads its own plan, usage, spend and invoices under /v1/billing,
the same documents finance gets, and nothing of anyone else's: another customer's invoice id
answers exactly like an id that does not exist (404, never 403)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI

from app.clock import ManualClock
from app.keys.schemas import CreatedKey, Scope
from tests.billing.helpers import add_usage, assign, create_plan
from tests.conftest import bearer, make_key

SEPT = "2026-09"
JULY_15 = datetime(2026, 7, 15, tzinfo=UTC)  # assigned then: on the plan from Aug 1
SEPT_5 = datetime(2026, 9, 5, 12, tzinfo=UTC)
SEPT_20 = datetime(2026, 9, 20, tzinfo=UTC)
PLAN = {
    "name": "metered",
    "currency": "usd",
    "base_fee": "10",
    "components": [
        {"unit": "request", "pricing": "per_unit", "unit_price": "0.25", "included": "2"}
    ],
    "spend_cap": "5",
    "requests_per_minute": 600,
}


@dataclass
class World:
    admin: CreatedKey
    finance: CreatedKey
    acme: CreatedKey  # billing key
    acme_predict: CreatedKey
    globex: CreatedKey  # billing key
    plan_id: int


@pytest.fixture
async def world(app: FastAPI, client: httpx.AsyncClient) -> World:
    admin = await make_key(app, "operator", (Scope.admin,))
    finance = await make_key(app, "operator", (Scope.finance,))
    acme = await make_key(app, "acme", (Scope.billing,))
    acme_predict = await make_key(app, "acme")
    globex = await make_key(app, "globex", (Scope.billing, Scope.predict))
    plan = await create_plan(client, admin, **PLAN)
    for key in (acme, globex):
        await assign(app, key.customer_id, plan["id"], JULY_15)
    await add_usage(app, acme_predict, SEPT_5, count=6)
    await add_usage(app, globex, SEPT_5, count=3)
    return World(admin, finance, acme, acme_predict, globex, plan["id"])


async def _close_september(client: httpx.AsyncClient, world: World) -> dict[int, int]:
    """Close September; the invoice id of each customer."""
    closed = await client.post(f"/finance/periods/{SEPT}/close", headers=bearer(world.finance))
    assert closed.status_code == 200, closed.text
    listed = await client.get("/finance/invoices", headers=bearer(world.finance))
    return {i["customer_id"]: i["id"] for i in listed.json()["data"]}


async def test_a_customer_sees_its_own_invoices_as_finance_does(
    client: httpx.AsyncClient, world: World
) -> None:
    ids = await _close_september(client, world)
    acme_id, globex_id = ids[world.acme.customer_id], ids[world.globex.customer_id]

    listed = await client.get("/v1/billing/invoices", headers=bearer(world.acme))
    assert listed.status_code == 200, listed.text
    assert [i["id"] for i in listed.json()["data"]] == [acme_id]
    by_period = await client.get(
        "/v1/billing/invoices", params={"period": "2026-08"}, headers=bearer(world.acme)
    )
    assert by_period.json()["data"] == []
    theirs = await client.get("/v1/billing/invoices", headers=bearer(world.globex))
    assert [i["id"] for i in theirs.json()["data"]] == [globex_id]

    for suffix in ("", ".csv", ".pdf"):
        mine = await client.get(
            f"/v1/billing/invoices/{acme_id}{suffix}", headers=bearer(world.acme)
        )
        as_finance = await client.get(
            f"/finance/invoices/{acme_id}{suffix}", headers=bearer(world.finance)
        )
        assert mine.status_code == 200, (suffix, mine.text)
        assert mine.headers["content-type"] == as_finance.headers["content-type"]
        if suffix == ".pdf":  # the same document (its metadata carries a creation time)
            assert mine.content.startswith(b"%PDF") and len(mine.content) > 500
        else:
            assert mine.content == as_finance.content, suffix
    invoice = (
        await client.get(f"/v1/billing/invoices/{acme_id}", headers=bearer(world.acme))
    ).json()
    # 10 base fee + (6 - 2 included) x 0.25
    assert (invoice["customer_id"], invoice["total_minor"]) == (world.acme.customer_id, 1100)


async def test_another_customers_invoice_is_a_404_like_a_missing_one(
    client: httpx.AsyncClient, world: World
) -> None:
    ids = await _close_september(client, world)
    acme_id = ids[world.acme.customer_id]
    missing_id = max(ids.values()) + 1000
    for suffix in ("", ".csv", ".pdf"):
        other = await client.get(
            f"/v1/billing/invoices/{acme_id}{suffix}", headers=bearer(world.globex)
        )
        missing = await client.get(
            f"/v1/billing/invoices/{missing_id}{suffix}", headers=bearer(world.globex)
        )
        assert other.status_code == missing.status_code == 404, (suffix, other.text)
        other_error, missing_error = other.json()["error"], missing.json()["error"]
        assert other_error["type"] == missing_error["type"] == "invoice_not_found"
        # The same words, the id aside: nothing says the invoice exists.
        assert other_error["message"].replace(str(acme_id), "N") == missing_error[
            "message"
        ].replace(str(missing_id), "N")
        assert set(other_error) == set(missing_error)


async def test_a_billing_key_reads_only_billing(client: httpx.AsyncClient, world: World) -> None:
    ids = await _close_september(client, world)
    for method, path in (
        ("GET", "/finance/invoices"),
        ("GET", f"/finance/invoices/{ids[world.globex.customer_id]}"),
        ("GET", "/admin/customers"),
        ("POST", "/v1/models/linreg/predict"),
    ):
        response = await client.request(method, path, headers=bearer(world.acme), json={})
        assert response.status_code == 403, (path, response.text)
        assert response.json()["error"]["type"] == "insufficient_scope"
    # A predict key has no billing scope.
    denied = await client.get("/v1/billing/invoices", headers=bearer(world.acme_predict))
    assert denied.status_code == 403
    assert "'billing' scope" in denied.json()["error"]["message"]


async def test_plan_shows_the_prices_in_force_and_the_next_change(
    app: FastAPI, client: httpx.AsyncClient, world: World, clock: ManualClock
) -> None:
    clock.set(SEPT_20)
    plan = await client.get("/v1/billing/plan", headers=bearer(world.acme))
    assert plan.status_code == 200, plan.text
    body = plan.json()
    assert body["customer_id"] == world.acme.customer_id and body["scheduled"] == []
    current = body["current"]
    assert (current["plan_name"], current["version"], current["currency"]) == ("metered", 1, "usd")
    assert current["effective_from"].startswith("2026-08-01T00:00:00")
    assert (current["base_fee"], current["spend_cap"]) == ("10", "5")
    (component,) = current["components"]
    assert (component["unit"], component["unit_price"], component["included"]) == (
        "request",
        "0.25",
        "2",
    )
    assert current["requests_per_minute"] == 600

    new = await client.put(
        f"/admin/plans/{world.plan_id}",
        json={**{k: v for k, v in PLAN.items() if k != "name"}, "base_fee": "12.50"},
        headers=bearer(world.admin),
    )
    assert new.status_code == 200, new.text
    assigned = await client.put(
        f"/admin/customers/{world.acme.customer_id}/plan",
        json={"plan_id": world.plan_id, "version": 2},
        headers=bearer(world.admin),
    )
    assert assigned.status_code == 200, assigned.text
    body = (await client.get("/v1/billing/plan", headers=bearer(world.acme))).json()
    assert body["current"]["version"] == 1
    [(version, base_fee, starts)] = [
        (s["version"], s["base_fee"], s["effective_from"]) for s in body["scheduled"]
    ]
    assert (version, base_fee) == (2, "12.5") and starts.startswith("2026-10-01T00:00:00")

    nobody = await make_key(app, "initech", (Scope.billing,))
    empty = (await client.get("/v1/billing/plan", headers=bearer(nobody))).json()
    assert (empty["current"], empty["scheduled"]) == (None, [])


async def test_spend_is_the_period_to_date_usage_charge_against_the_cap(
    app: FastAPI, client: httpx.AsyncClient, world: World, clock: ManualClock
) -> None:
    clock.set(SEPT_20)
    spend = await client.get("/v1/billing/spend", headers=bearer(world.acme))
    assert spend.status_code == 200, spend.text
    body = spend.json()
    # 6 requests, 2 included, 0.25 each: 1.00 of the 5.00 cap; the base fee is not usage.
    assert {k: body[k] for k in ("period", "currency", "spend_minor", "spend", "spend_exact")} == {
        "period": SEPT,
        "currency": "usd",
        "spend_minor": 100,
        "spend": "1.00",
        "spend_exact": "1",
    }
    assert (body["spend_cap_minor"], body["spend_cap"]) == (500, "5.00")
    assert (body["remaining_minor"], body["remaining"]) == (400, "4.00")
    assert body["since"].startswith("2026-09-01T00:00:00")
    # What globex used is globex's.
    theirs = (await client.get("/v1/billing/spend", headers=bearer(world.globex))).json()
    assert theirs["spend"] == "0.25"

    nobody = await make_key(app, "initech", (Scope.billing,))
    no_plan = await client.get("/v1/billing/spend", headers=bearer(nobody))
    assert no_plan.status_code == 404
    assert no_plan.json()["error"]["type"] == "no_plan"


async def test_usage_by_period_is_the_usage_report_of_that_month(
    client: httpx.AsyncClient, world: World
) -> None:
    by_period = await client.get(
        "/v1/billing/usage",
        params={"period": SEPT, "group_by": "model"},
        headers=bearer(world.acme),
    )
    assert by_period.status_code == 200, by_period.text
    report = by_period.json()
    assert report["customer_id"] == world.acme.customer_id
    assert report["start"].startswith("2026-09-01T00:00:00")
    assert report["end"].startswith("2026-10-01T00:00:00")
    assert (report["total"]["requests"], report["data"][0]["key"]) == (6, "cnn")
    same = await client.get(
        "/v1/usage",
        params={"start": report["start"], "end": report["end"], "group_by": "model"},
        headers=bearer(world.acme_predict),  # any key may read /v1/usage
    )
    assert same.json() == report
    for params in ({"period": SEPT, "start": "2026-09-01T00:00:00Z"}, {"period": "2026-13"}):
        bad = await client.get("/v1/billing/usage", params=params, headers=bearer(world.acme))
        assert bad.status_code == 422, params


async def test_a_customers_finance_key_cannot_list_every_invoice(
    app: FastAPI, client: httpx.AsyncClient, world: World, clock: ManualClock
) -> None:
    """The issue's case: a finance key issued to customer acme listed every customer's
    invoices. Such a key can no longer be issued; one left by the migration (legacy staff)
    keeps working by design until it is re-issued, and its re-issue cannot read finance."""
    await _close_september(client, world)
    refused = await client.post(
        "/admin/keys",
        json={"customer_id": world.acme.customer_id, "scopes": ["finance"]},
        headers=bearer(world.admin),
    )
    assert refused.status_code == 422
    assert refused.json()["error"]["type"] == "operator_only_scope"

    legacy = await make_key(app, "acme", (Scope.predict, Scope.finance), legacy_staff=True)
    listed = await client.get("/finance/invoices", headers=bearer(legacy))
    assert listed.status_code == 200
    assert {i["customer_id"] for i in listed.json()["data"]} == {
        world.acme.customer_id,
        world.globex.customer_id,
    }

    rotated = await client.post(
        f"/admin/keys/{legacy.key_id}/rotate", json={}, headers=bearer(world.admin)
    )
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["new"]
    assert (new["scopes"], new["legacy_staff"]) == (["predict"], False)
    after = await client.get("/finance/invoices", headers=bearer(new["secret"]))
    assert after.status_code == 403
    clock.advance(seconds=2)  # past the key cache's TTL: the old key is revoked now
    assert (await client.get("/finance/invoices", headers=bearer(legacy))).status_code == 401
