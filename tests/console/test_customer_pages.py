"""A customer's console pages: its usage (chart and table), spend, plan, invoices and keys,
through the same services as /v1/billing, and never another customer's data."""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI

from app.clock import ManualClock
from app.keys.schemas import CreatedKey, Scope
from tests.billing.helpers import add_usage, assign, create_plan
from tests.conftest import bearer, make_key
from tests.console.helpers import csrf_of, sign_in

NOW = datetime(2030, 3, 10, 12, tzinfo=UTC)
FEB_5 = datetime(2030, 2, 5, 9, tzinfo=UTC)
ROW = [0.0] * 10
PLAN = {
    "name": "metered",
    "currency": "usd",
    "base_fee": "10",
    "components": [
        {"unit": "request", "pricing": "per_unit", "unit_price": "0.25", "included": "2"}
    ],
    "spend_cap": "50",
}
CHART = re.compile(r"data-chart='([^']*)'")


@dataclass
class World:
    finance: CreatedKey
    acme: CreatedKey  # billing only: read-only keys page
    acme_predict: CreatedKey
    globex: CreatedKey  # billing + predict: manages its predict keys
    invoices: dict[int, int]  # customer id -> its February invoice id


async def _predict(client: httpx.AsyncClient, key: CreatedKey, n: int) -> None:
    for _ in range(n):
        response = await client.post(
            "/v1/models/linreg/predict", json={"inputs": ROW}, headers=bearer(key)
        )
        assert response.status_code == 200, response.text


@pytest.fixture
async def world(app: FastAPI, client: httpx.AsyncClient, clock: ManualClock) -> World:
    clock.set(NOW)
    admin = await make_key(app, "operator", (Scope.admin,))
    finance = await make_key(app, "operator", (Scope.finance,))
    acme = await make_key(app, "acme", (Scope.billing,))
    acme_predict = await make_key(app, "acme")
    globex = await make_key(app, "globex", (Scope.billing, Scope.predict))
    plan = await create_plan(client, admin, **PLAN)
    for key in (acme, globex):
        await assign(app, key.customer_id, plan["id"], datetime(2030, 1, 1, tzinfo=UTC))
    await add_usage(app, acme_predict, FEB_5, count=6, model="cnn", variant="int8")
    await add_usage(app, globex, FEB_5, count=4)
    closed = await client.post("/finance/periods/2030-02/close", headers=bearer(finance))
    assert closed.status_code == 200, closed.text
    listed = (await client.get("/finance/invoices", headers=bearer(finance))).json()["data"]
    invoices = {i["customer_id"]: i["id"] for i in listed}
    assert set(invoices) == {acme.customer_id, globex.customer_id}
    return World(finance, acme, acme_predict, globex, invoices)


def _chart(page: str) -> dict[str, object]:
    match = CHART.search(page)
    assert match, "no chart on the page"
    spec: dict[str, object] = json.loads(html.unescape(match.group(1)))
    return spec


def _alert(page: str) -> str:
    match = re.search(r'<p role="alert">([^<]*)</p>', page)
    assert match, "no alert on the page"
    return match.group(1)


def _row(page: str, model: str) -> list[str]:
    """The numbers of the usage table's row of ``model``."""
    match = re.search(rf'<tr data-model="{model}" data-variant="[^"]*">(.*?)</tr>', page, re.S)
    assert match, f"no row for {model}"
    return re.findall(r'<td class="num">([^<]*)</td>', match.group(1))


async def test_a_customer_sees_its_own_predictions_in_the_chart_and_table(
    client: httpx.AsyncClient, world: World
) -> None:
    await _predict(client, world.acme_predict, 3)
    await _predict(client, world.globex, 5)  # another customer's: never counted here
    assert (await sign_in(client, world.acme)).headers["location"] == "/console/me"
    page = await client.get("/console/me")
    assert page.status_code == 200, page.text
    requests, billable, items, errors, _ = _row(page.text, "linreg")
    assert (requests, billable, items, errors) == ("3", "3", "3", "0")
    chart = _chart(page.text)
    assert chart["stacked"] is True and len(chart["labels"]) == 31  # type: ignore[arg-type]
    datasets = chart["datasets"]
    assert isinstance(datasets, list) and len(datasets) == 1
    assert datasets[0]["label"].startswith("linreg")
    assert sum(datasets[0]["data"]) == 3 and datasets[0]["data"][-1] == 3
    assert chart["labels"][-1] == "2030-03-10"  # type: ignore[index]
    # Spend against the cap (the service's strings) and the plan's prices.
    assert "against a cap of 50.00 USD" in page.text
    assert "0.25" in page.text and "metered" in page.text

    february = await client.get("/console/me", params={"period": "2030-02"})
    assert _row(february.text, "cnn")[:4] == ["6", "6", "6", "0"]
    cnn = _chart(february.text)["datasets"]
    assert [d["label"] for d in cnn] == ["cnn / int8"]  # type: ignore[union-attr]
    assert len(_chart(february.text)["labels"]) == 28  # type: ignore[arg-type]
    bad = await client.get("/console/me", params={"period": "2030-13"})
    assert bad.status_code == 422 and 'role="alert"' in bad.text


async def test_a_customer_sees_only_its_own_invoices_and_downloads_them(
    client: httpx.AsyncClient, world: World
) -> None:
    mine, theirs = world.invoices[world.acme.customer_id], world.invoices[world.globex.customer_id]
    await sign_in(client, world.acme)
    listed = await client.get("/console/me/invoices")
    assert listed.status_code == 200
    assert f"/console/me/invoices/{mine}" in listed.text
    assert f"/console/me/invoices/{theirs}" not in listed.text
    assert "1 in all" in listed.text

    page = await client.get(f"/console/me/invoices/{mine}")
    assert page.status_code == 200
    assert '<strong id="invoice-total">11.00</strong>' in page.text  # 10 + (6 - 2) x 0.25
    pdf = await client.get(f"/console/me/invoices/{mine}.pdf")
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF")
    csv = await client.get(f"/console/me/invoices/{mine}.csv")
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    as_finance = await client.get(f"/finance/invoices/{mine}.csv", headers=bearer(world.finance))
    assert csv.content == as_finance.content

    missing = max(world.invoices.values()) + 1000
    for suffix in ("", ".pdf", ".csv"):
        other = await client.get(f"/console/me/invoices/{theirs}{suffix}")
        absent = await client.get(f"/console/me/invoices/{missing}{suffix}")
        assert other.status_code == absent.status_code == 404, suffix
        other_alert, absent_alert = _alert(other.text), _alert(absent.text)
        assert other_alert.replace(str(theirs), "N") == absent_alert.replace(str(missing), "N")
        assert other.text.replace(other_alert, "") == absent.text.replace(absent_alert, "")
    assert (await client.get("/console/me/invoices/abc")).status_code == 404
    assert (await client.get("/console/me/credit-notes/1.pdf")).status_code == 404


async def test_credit_notes_of_the_customers_invoice_download(
    client: httpx.AsyncClient, world: World
) -> None:
    mine = world.invoices[world.acme.customer_id]
    theirs = world.invoices[world.globex.customer_id]
    notes = []
    for invoice_id in (mine, theirs):
        created = await client.post(
            f"/finance/invoices/{invoice_id}/credit-notes",
            json={"reason": "goodwill", "amount_minor": 100},
            headers=bearer(world.finance),
        )
        assert created.status_code in (200, 201), created.text
        notes.append(created.json()["id"])
    await sign_in(client, world.acme)
    page = await client.get(f"/console/me/invoices/{mine}")
    assert f"/console/me/credit-notes/{notes[0]}.pdf" in page.text
    pdf = await client.get(f"/console/me/credit-notes/{notes[0]}.pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert (await client.get(f"/console/me/credit-notes/{notes[0]}.csv")).status_code == 200
    for suffix in (".pdf", ".csv"):
        other = await client.get(f"/console/me/credit-notes/{notes[1]}{suffix}")
        assert other.status_code == 404


async def test_a_customer_cannot_open_operator_pages_nor_see_another_customer(
    client: httpx.AsyncClient, world: World
) -> None:
    await _predict(client, world.globex, 1)
    await sign_in(client, world.acme)
    operator = await client.get("/console/")
    assert operator.status_code == 403 and 'role="alert"' in operator.text
    pages = [
        "/console/me",
        "/console/me?period=2030-02",
        "/console/me/invoices",
        f"/console/me/invoices/{world.invoices[world.acme.customer_id]}",
        f"/console/me/invoices/{world.invoices[world.globex.customer_id]}",
        "/console/me/keys",
    ]
    for path in pages:
        page = await client.get(path)
        assert page.status_code in (200, 404), path
        assert "globex" not in page.text.lower(), path
        assert world.globex.prefix not in page.text, path


async def test_a_billing_only_key_reads_its_keys_but_cannot_write(
    client: httpx.AsyncClient, world: World
) -> None:
    await sign_in(client, world.acme)
    page = await client.get("/console/me/keys")
    assert page.status_code == 200
    assert world.acme.prefix in page.text and world.acme_predict.prefix in page.text
    assert world.globex.prefix not in page.text
    assert "Read-only" in page.text and 'action="/console/me/keys"' not in page.text
    assert world.acme.secret not in page.text and world.acme_predict.secret not in page.text
    csrf = csrf_of(page.text)
    refused = await client.post("/console/me/keys", data={"csrf_token": csrf, "name": "x"})
    assert refused.status_code == 403 and "billing and predict" in refused.text
    revoke = await client.post(
        f"/console/me/keys/{world.acme_predict.key_id}/revoke", data={"csrf_token": csrf}
    )
    assert revoke.status_code == 403


async def test_a_billing_and_predict_key_manages_its_predict_keys(
    app: FastAPI, client: httpx.AsyncClient, world: World, clock: ManualClock
) -> None:
    await sign_in(client, world.globex)
    page = await client.get("/console/me/keys")
    csrf = csrf_of(page.text)
    assert (await client.post("/console/me/keys", data={"name": "ci"})).status_code == 403

    created = await client.post("/console/me/keys", data={"csrf_token": csrf, "name": "ci"})
    assert created.status_code == 200, created.text
    secret = re.search(r'<code id="new-secret" class="secret">([^<]+)</code>', created.text)
    assert secret, created.text
    new_key = secret.group(1)
    works = await client.post(
        "/v1/models/linreg/predict", json={"inputs": ROW}, headers=bearer(new_key)
    )
    assert works.status_code == 200
    # Predict only: it cannot read billing.
    assert (await client.get("/v1/billing/plan", headers=bearer(new_key))).status_code == 403
    again = await client.get("/console/me/keys")
    assert new_key not in again.text and "ci" in again.text  # the secret was shown once

    audit = await client.get(
        "/admin/audit",
        params={"action": "key.create", "actor_key_id": world.globex.key_id},
        headers=bearer(await make_key(app, "operator", (Scope.admin,))),
    )
    assert audit.status_code == 200 and len(audit.json()["data"]) == 1

    new_id = int(re.findall(r'action="/console/me/keys/(\d+)/revoke"', again.text)[-1])
    # Its own billing key and another customer's key are not its to revoke.
    own = await client.post(
        f"/console/me/keys/{world.globex.key_id}/revoke", data={"csrf_token": csrf}
    )
    assert own.status_code == 403 and 'role="alert"' in own.text
    other = await client.post(
        f"/console/me/keys/{world.acme_predict.key_id}/revoke", data={"csrf_token": csrf}
    )
    missing = await client.post("/console/me/keys/999999999/revoke", data={"csrf_token": csrf})
    assert other.status_code == missing.status_code == 404
    assert await _works(client, world.acme_predict)

    revoked = await client.post(f"/console/me/keys/{new_id}/revoke", data={"csrf_token": csrf})
    assert revoked.status_code == 200, revoked.text
    clock.advance(timedelta(seconds=5))  # past the key cache
    gone = await client.post(
        "/v1/models/linreg/predict", json={"inputs": ROW}, headers=bearer(new_key)
    )
    assert gone.status_code == 401

    past = await client.post(
        "/console/me/keys",
        data={"csrf_token": csrf, "expires_at": "2020-01-01T00:00"},
    )
    assert past.status_code == 422 and 'role="alert"' in past.text


async def _works(client: httpx.AsyncClient, key: CreatedKey) -> bool:
    response = await client.post(
        "/v1/models/linreg/predict", json={"inputs": ROW}, headers=bearer(key)
    )
    return response.status_code == 200


async def test_a_restricted_key_cannot_mint_a_wider_one(
    app: FastAPI, client: httpx.AsyncClient, clock: ManualClock
) -> None:
    clock.set(NOW)
    expiry = NOW + timedelta(days=10)
    key = await make_key(
        app, "initech", (Scope.billing, Scope.predict), allowed_models=["cnn"], expires_at=expiry
    )
    await sign_in(client, key)
    csrf = csrf_of((await client.get("/console/me/keys")).text)
    later = await client.post(
        "/console/me/keys",
        data={
            "csrf_token": csrf,
            "expires_at": (expiry + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"),
        },
    )
    assert later.status_code == 422 and "outlive" in later.text
    created = await client.post("/console/me/keys", data={"csrf_token": csrf})
    secret = re.search(r'<code id="new-secret" class="secret">([^<]+)</code>', created.text)
    assert secret
    denied = await client.post(
        "/v1/models/linreg/predict", json={"inputs": ROW}, headers=bearer(secret.group(1))
    )
    assert denied.status_code == 403  # limited to cnn, like its creator
    listed = await client.get("/console/me/keys")
    assert expiry.strftime("%Y-%m-%d %H:%M") in listed.text.split(key.prefix, 1)[1]


async def test_customer_pages_need_a_session(client: httpx.AsyncClient) -> None:
    for method, path in (
        ("GET", "/console/me"),
        ("GET", "/console/me/invoices"),
        ("GET", "/console/me/invoices/1.pdf"),
        ("GET", "/console/me/keys"),
        ("POST", "/console/me/keys"),
        ("POST", "/console/me/keys/1/revoke"),
    ):
        response = await client.request(method, path)
        assert response.status_code == 303, (method, path)
        assert response.headers["location"].startswith("/console/login")
