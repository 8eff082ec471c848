"""The staff's admin pages: overview, customers, keys, plans, models, audit log. Each page
calls the API's services; these tests read what an admin would see."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from app.keys.schemas import CreatedKey, Scope
from app.orm import ApiKey, AuditEntry, Customer
from app.resources import resources
from tests.conftest import bearer, make_key
from tests.console.helpers import csrf_of, sign_in

STAFF_PAGES = ("/console/customers", "/console/keys", "/console/plans", "/console/models")
ADMIN_PAGES = (*STAFF_PAGES, "/console/audit", "/console/plans/new")


async def _admin(app: FastAPI, client: httpx.AsyncClient) -> tuple[CreatedKey, str]:
    """Sign in with a new admin key; the key and a CSRF token of the session."""
    key = await make_key(app, "operator", (Scope.admin,))
    assert (await sign_in(client, key)).status_code == 303
    page = await client.get("/console/")
    assert page.status_code == 200
    return key, csrf_of(page.text)


def _no_inline_script_or_style(html: str) -> None:
    assert "<script>" not in html and "<style" not in html
    assert " style=" not in html and "onclick=" not in html
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "a script without src"


async def _customer_id(app: FastAPI, name: str) -> int:
    async with resources(app).sessionmaker() as session:
        found = await session.scalar(select(Customer.id).where(Customer.name == name))
        assert found is not None
        return found


# --- overview ---------------------------------------------------------------------------


async def test_overview_counts_the_last_30_days_and_draws_a_chart(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    developer = await make_key(app, "acme")
    for _ in range(3):
        served = await client.post(
            "/v1/models/linreg/predict", json={"inputs": [0.0] * 10}, headers=bearer(developer)
        )
        assert served.status_code == 200
    await _admin(app, client)
    page = await client.get("/console/")
    assert page.status_code == 200
    assert re.search(r'id="stat-requests">3<', page.text)
    assert re.search(r'id="stat-billable">3<', page.text)
    assert re.search(r'id="stat-items">3<', page.text)  # a number, not dict.items
    assert "data-chart=" in page.text and "&#34;requests&#34;" in page.text
    assert "Billable usage" in page.text and "linreg" in page.text
    _no_inline_script_or_style(page.text)


async def test_finance_opens_the_overview_but_no_admin_page(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    finance = await make_key(app, "operator", (Scope.finance,))
    await sign_in(client, finance)
    overview = await client.get("/console/")
    assert overview.status_code == 200
    for path in ADMIN_PAGES:
        page = await client.get(path)
        assert page.status_code == 403, path
        assert "admin scope" in page.text
    refused = await client.post(
        "/console/customers", data={"csrf_token": csrf_of(overview.text), "name": "Sneaky"}
    )
    assert refused.status_code == 403
    async with resources(app).sessionmaker() as session:
        assert await session.scalar(select(Customer).where(Customer.name == "Sneaky")) is None


async def test_a_customers_billing_key_opens_no_staff_page(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    billing = await make_key(app, "acme", (Scope.billing,))
    await sign_in(client, billing)
    for path in ("/console/", *ADMIN_PAGES):
        assert (await client.get(path)).status_code == 403, path


# --- customers --------------------------------------------------------------------------


async def test_customer_search_is_case_insensitive_and_paginates(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await _admin(app, client)
    async with resources(app).sessionmaker() as session, session.begin():
        session.add_all(Customer(name=f"Cust-{i:03d}", status="active") for i in range(120))
        session.add(Customer(name="under_score", status="suspended"))
    first = await client.get("/console/customers")
    assert first.status_code == 200
    assert "122 in all" in first.text and "page 1 of 3" in first.text  # + the operator
    assert first.text.count('href="/console/customers/') == 50
    assert 'href="/console/customers?page=2"' in first.text
    last = await client.get("/console/customers?page=3")
    assert last.text.count('href="/console/customers/') == 22
    found = await client.get("/console/customers", params={"q": "cust-01"})
    assert "10 in all" in found.text and "Cust-019" in found.text and "Cust-020" not in found.text
    # LIKE wildcards are taken literally; the status filter applies.
    assert "1 in all" in (await client.get("/console/customers?q=_")).text
    assert "0 in all" in (await client.get("/console/customers?q=%25")).text
    suspended = await client.get("/console/customers?status=suspended")
    assert "1 in all" in suspended.text and "under_score" in suspended.text
    kept = await client.get("/console/customers?q=cust&page=2")
    assert 'href="/console/customers?q=cust&amp;page=3"' in kept.text


async def test_new_customer_form_needs_the_csrf_token(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    _, csrf = await _admin(app, client)
    forged = await client.post("/console/customers", data={"name": "Acme", "email": "a@acme.io"})
    assert forged.status_code == 403
    wrong = await client.post("/console/customers", data={"name": "Acme", "csrf_token": "x"})
    assert wrong.status_code == 403
    async with resources(app).sessionmaker() as session:
        assert await session.scalar(select(Customer).where(Customer.name == "Acme")) is None

    created = await client.post(
        "/console/customers", data={"name": "Acme", "email": "a@acme.io", "csrf_token": csrf}
    )
    assert created.status_code == 303
    customer_id = await _customer_id(app, "Acme")
    assert created.headers["location"] == f"/console/customers/{customer_id}"
    page = await client.get(created.headers["location"])
    assert page.status_code == 200 and "Acme" in page.text and "a@acme.io" in page.text
    _no_inline_script_or_style(page.text)

    again = await client.post("/console/customers", data={"name": "Acme", "csrf_token": csrf})
    assert again.status_code == 409
    assert 'role="alert"' in again.text and "already exists" in again.text
    bad = await client.post(
        "/console/customers", data={"name": "Other", "email": "nope", "csrf_token": csrf}
    )
    assert bad.status_code == 422 and "email" in bad.text and 'value="Other"' in bad.text
    async with resources(app).sessionmaker() as session:
        entry = await session.scalar(
            select(AuditEntry).where(AuditEntry.action == "customer.create")
        )
        assert entry is not None and entry.target_id == str(customer_id)


async def test_customer_page_shows_plan_keys_usage_and_spend(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    developer = await make_key(app, "acme")
    served = await client.post(
        "/v1/models/linreg/predict", json={"inputs": [[0.0] * 10] * 2}, headers=bearer(developer)
    )
    assert served.status_code == 200
    admin, csrf = await _admin(app, client)
    plan = await client.post(
        "/admin/plans",
        headers=bearer(admin),
        json={
            "name": "Metered",
            "currency": "eur",
            "base_fee": "10",
            "spend_cap": "50",
            "components": [{"unit": "item", "pricing": "per_unit", "unit_price": "0.25"}],
        },
    )
    assert plan.status_code == 201
    acme = developer.customer_id
    assigned = await client.post(
        f"/console/customers/{acme}/plan",
        data={"plan_id": str(plan.json()["id"]), "effective": "immediately", "csrf_token": csrf},
    )
    assert assigned.status_code == 303
    served = await client.post(
        "/v1/models/linreg/predict", json={"inputs": [[0.0] * 10] * 4}, headers=bearer(developer)
    )
    assert served.status_code == 200

    page = await client.get(f"/console/customers/{acme}")
    assert page.status_code == 200
    assert "Metered" in page.text and "v1" in page.text
    assert "base fee 10 EUR, spend cap 50 EUR" in page.text  # plain decimals, not 1.0E+1
    assert developer.prefix in page.text and developer.secret not in page.text
    assert re.search(r'id="spend">1.00 EUR of usage', page.text)  # 4 items at 0.25
    assert "against a cap of 50.00 EUR" in page.text
    assert "data-chart=" in page.text and "linreg" in page.text
    assert (await client.get("/console/customers/999999")).status_code == 404


async def test_billing_details_edit_and_refusals_show_on_the_page(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    developer = await make_key(app, "acme")
    admin, csrf = await _admin(app, client)
    acme = developer.customer_id
    fields = {
        "csrf_token": csrf,
        "name": "Acme",
        "email": "",
        "legal_name": "Acme GmbH",
        "address": "Hauptstr. 1\r\n10115 Berlin",
        "country": "de",
        "tax_rate": "19",
        "tax_note": "",
    }
    saved = await client.post(f"/console/customers/{acme}", data=fields)
    assert saved.status_code == 303
    async with resources(app).sessionmaker() as session:
        customer = await session.get(Customer, acme)
        assert customer is not None
        assert (customer.name, customer.country, customer.address) == (
            "Acme",
            "DE",
            "Hauptstr. 1\n10115 Berlin",
        )
    refused = await client.post(
        f"/console/customers/{acme}", data={**fields, "legal_name": "Changed", "tax_exempt": "on"}
    )
    assert refused.status_code == 422 and 'role="alert"' in refused.text
    assert "tax rate or is tax exempt" in refused.text
    async with resources(app).sessionmaker() as session:
        customer = await session.get(Customer, acme)
        assert customer is not None and customer.legal_name == "Acme GmbH"  # rolled back

    suspended = await client.post(f"/console/customers/{acme}/suspend", data={"csrf_token": csrf})
    assert suspended.status_code == 303
    assert (
        'id="customer-status">suspended<' in (await client.get(f"/console/customers/{acme}")).text
    )
    back = await client.post(f"/console/customers/{acme}/reactivate", data={"csrf_token": csrf})
    assert back.status_code == 303
    operator = admin.customer_id
    own = await client.post(f"/console/customers/{operator}/suspend", data={"csrf_token": csrf})
    assert own.status_code == 409 and "cannot suspend its own customer" in own.text
    assert (await client.post(f"/console/customers/{acme}/suspend")).status_code == 403


# --- keys -------------------------------------------------------------------------------


async def test_a_new_keys_secret_is_shown_once(app: FastAPI, client: httpx.AsyncClient) -> None:
    developer = await make_key(app, "acme")
    _, csrf = await _admin(app, client)
    acme = developer.customer_id
    form = {"csrf_token": csrf, "customer_id": str(acme), "name": "ci", "scopes": ["predict"]}
    assert (await client.post("/console/keys", data={**form, "csrf_token": ""})).status_code == 403
    created = await client.post("/console/keys", data=form)
    assert created.status_code == 201
    match = re.search(r'<code id="new-secret" class="secret">([^<]+)</code>', created.text)
    assert match and 'data-copy="#new-secret"' in created.text
    secret = match.group(1)
    _no_inline_script_or_style(created.text)
    # The secret works, and no other page shows it again.
    assert (await client.get("/v1/models", headers=bearer(secret))).status_code == 200
    for path in ("/console/keys", f"/console/customers/{acme}", "/console/audit", "/console/"):
        page = await client.get(path)
        assert page.status_code == 200 and secret not in page.text, path
    assert secret[:11] in (await client.get("/console/keys")).text  # its prefix is listed

    staff_for_customer = await client.post("/console/keys", data={**form, "scopes": ["admin"]})
    assert staff_for_customer.status_code == 422 and "operator account" in staff_for_customer.text
    no_scope = await client.post("/console/keys", data={**form, "scopes": []})
    assert no_scope.status_code == 422 and 'role="alert"' in no_scope.text


async def test_keys_rotate_with_grace_revoke_and_filter(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    developer = await make_key(app, "acme")
    other = await make_key(app, "globex")
    _, csrf = await _admin(app, client)
    rotated = await client.post(
        f"/console/keys/{developer.key_id}/rotate", data={"csrf_token": csrf, "grace_hours": "2"}
    )
    assert rotated.status_code == 201
    match = re.search(r'id="new-secret" class="secret">([^<]+)<', rotated.text)
    assert match and "works until" in rotated.text
    new_secret = match.group(1)
    assert (await client.get("/v1/models", headers=bearer(new_secret))).status_code == 200
    assert (await client.get("/v1/models", headers=bearer(developer))).status_code == 200  # grace

    revoked = await client.post(
        f"/console/keys/{other.key_id}/revoke",
        data={"csrf_token": csrf, "return_to": f"/console/customers/{other.customer_id}"},
    )
    assert revoked.status_code == 303
    assert revoked.headers["location"] == f"/console/customers/{other.customer_id}"
    async with resources(app).sessionmaker() as session:
        key = await session.get(ApiKey, other.key_id)
        assert key is not None and key.revoked_at is not None

    listed = await client.get("/console/keys?state=revoked")
    assert "1 in all" in listed.text and other.prefix in listed.text
    active = await client.get(f"/console/keys?state=active&customer_id={developer.customer_id}")
    assert "2 in all" in active.text  # the old key in its grace period and the new one
    assert new_secret not in active.text
    offsite = await client.post(
        f"/console/keys/{developer.key_id}/revoke",
        data={"csrf_token": csrf, "return_to": "//evil.example/"},
    )
    assert offsite.headers["location"] == "/console/keys"


# --- plans ------------------------------------------------------------------------------


def _graduated_form(csrf: str, name: str = "Graduated") -> dict[str, str]:
    return {
        "csrf_token": csrf,
        "name": name,
        "currency": "usd",
        "base_fee": "0",
        "c0_unit": "request",
        "c0_pricing": "graduated",
        "c0_t0_up_to": "5",
        "c0_t0_unit_price": "7.00",
        "c0_t1_up_to": "10",
        "c0_t1_unit_price": "6.50",
        "c0_t2_up_to": "",
        "c0_t2_unit_price": "6.00",
        # a blank second component row and blank tier rows are ignored
        "c1_unit": "",
        "c1_pricing": "per_unit",
    }


async def test_plan_editor_and_its_price_calculator(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    _, csrf = await _admin(app, client)
    editor = await client.get("/console/plans/new")
    assert editor.status_code == 200 and 'for="c0-t0-up"' in editor.text
    _no_inline_script_or_style(editor.text)
    assert (
        await client.post("/console/plans", data={**_graduated_form(csrf), "csrf_token": ""})
    ).status_code == 403
    created = await client.post("/console/plans", data=_graduated_form(csrf))
    assert created.status_code == 303, created.text
    plan_path = created.headers["location"]
    plan_id = int(plan_path.rsplit("/", 1)[1])

    page = await client.get(plan_path)
    assert page.status_code == 200
    assert "graduated per request: 1-5 at 7.00, 6-10 at 6.50, 11+ at 6.00" in page.text
    for amount in ("41.50", "127.50", "6007.50"):  # 6, 20 and 1,000 units
        assert f'<td class="num">{amount}</td>' in page.text
    assert f'hx-get="/console/plans/{plan_id}/quote"' in page.text

    htmx = {"HX-Request": "true"}
    six = await client.get(f"/console/plans/{plan_id}/quote?units=6&component=0", headers=htmx)
    assert six.status_code == 200 and "<strong>41.50</strong> USD" in six.text
    assert "exact" not in six.text  # 41.5 is 41.50: no rounding to point out
    assert "<html" not in six.text
    twenty = await client.get(f"/console/plans/{plan_id}/quote?units=20&component=0", headers=htmx)
    assert "<strong>127.50</strong>" in twenty.text
    plain_get = await client.get(f"/console/plans/{plan_id}/quote?units=6&component=0")
    assert plain_get.status_code == 200 and "<html" in plain_get.text and "41.50" in plain_get.text
    bad = await client.get(f"/console/plans/{plan_id}/quote?units=abc", headers=htmx)
    assert bad.status_code == 200 and "must be a number" in bad.text  # htmx swaps only 2xx
    missing = await client.get(f"/console/plans/{plan_id}/quote?units=1&component=5", headers=htmx)
    assert "no such component" in missing.text
    no_js = await client.get(f"/console/plans/{plan_id}/quote?units=abc")
    assert no_js.status_code == 422 and 'role="alert"' in no_js.text

    # A new version through the same editor; the history lists both.
    form = _graduated_form(csrf)
    form.pop("name")
    form["base_fee"] = "49"
    v2 = await client.post(f"/console/plans/{plan_id}/versions", data=form)
    assert v2.status_code == 303
    history = await client.get(plan_path)
    assert "v2" in history.text and "Save as v3" in history.text
    listed = await client.get("/console/plans")
    assert "Graduated" in listed.text and "v2" in listed.text


async def test_the_calculator_shows_the_exact_amount_only_when_rounding_changes_it(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    _, csrf = await _admin(app, client)
    form = {
        "csrf_token": csrf,
        "name": "Fractional",
        "currency": "usd",
        "base_fee": "0",
        "c0_unit": "request",
        "c0_pricing": "per_unit",
        "c0_unit_price": "0.0015",
    }
    created = await client.post("/console/plans", data=form)
    assert created.status_code == 303, created.text
    quote = created.headers["location"] + "/quote?component=0&units="
    htmx = {"HX-Request": "true"}
    three = await client.get(quote + "3", headers=htmx)
    assert "<strong>0.00</strong> USD (exact 0.0045)" in three.text
    thousand = await client.get(quote + "1000", headers=htmx)
    assert "<strong>1.50</strong> USD</span>" in thousand.text and "exact" not in thousand.text


async def test_plan_editor_shows_validation_errors_next_to_the_form(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    _, csrf = await _admin(app, client)
    unbounded_first = {**_graduated_form(csrf), "c0_t0_up_to": "", "c0_t1_up_to": "10"}
    refused = await client.post("/console/plans", data=unbounded_first)
    assert refused.status_code == 422 and 'role="alert"' in refused.text
    assert "not the last tier" in refused.text
    assert 'value="6.50"' in refused.text  # what was typed stays in the form
    bad_amount = await client.post(
        "/console/plans", data={**_graduated_form(csrf), "c0_t0_unit_price": "seven"}
    )
    assert bad_amount.status_code == 422 and "components.0.tiers.0.unit_price" in bad_amount.text
    assert (await client.post("/console/plans", data=_graduated_form(csrf))).status_code == 303
    taken = await client.post("/console/plans", data=_graduated_form(csrf))
    assert taken.status_code == 409 and "already exists" in taken.text
    assert (await client.get("/console/plans/424242")).status_code == 404


# --- models and audit -------------------------------------------------------------------


async def test_models_page_lists_cards_and_manages_versions(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    _, csrf = await _admin(app, client)
    page = await client.get("/console/models")
    assert page.status_code == 200
    assert "cnn" in page.text and "linreg" in page.text and "default" in page.text
    assert "items/s" in page.text
    _no_inline_script_or_style(page.text)
    missing = await client.post(
        "/console/models/load", data={"csrf_token": csrf, "name": "cnn", "version": "99"}
    )
    assert missing.status_code == 404 and 'role="alert"' in missing.text
    default = await client.post(
        "/console/models/default", data={"csrf_token": csrf, "name": "cnn", "version": "1"}
    )
    assert default.status_code == 303
    assert (
        await client.post("/console/models/unload", data={"name": "cnn", "version": "1"})
    ).status_code == 403
    async with resources(app).sessionmaker() as session:
        entry = await session.scalar(select(AuditEntry).where(AuditEntry.action == "model.default"))
        assert entry is not None and entry.target_id == "cnn"


@pytest.mark.parametrize("per_page", [50])
async def test_audit_log_filters_and_paginates_newest_first(
    app: FastAPI, client: httpx.AsyncClient, per_page: int
) -> None:
    admin, csrf = await _admin(app, client)
    for i in range(per_page + 3):
        created = await client.post(
            "/console/customers", data={"name": f"Audited {i}", "csrf_token": csrf}
        )
        assert created.status_code == 303
    await client.post("/console/plans", data=_graduated_form(csrf))
    page = await client.get("/console/audit?action=customer.create")
    assert page.status_code == 200 and f"{per_page + 3} in all" in page.text
    assert page.text.index("Audited 52") < page.text.index("Audited 51")  # newest first
    second = await client.get("/console/audit?action=customer.create&page=2")
    assert "Audited 0" in second.text and "Audited 52" not in second.text
    plans = await client.get("/console/audit?target_type=plan")
    assert "1 in all" in plans.text
    by_actor = await client.get(f"/console/audit?actor=key:{admin.key_id}")
    assert f"{per_page + 4} in all" in by_actor.text
    assert "0 in all" in (await client.get("/console/audit?until=2000-01-01")).text
    assert f"{per_page + 4} in all" in (await client.get("/console/audit?since=2000-01-01")).text


async def test_models_page_uploads_a_version_and_shows_a_refusal(
    app: FastAPI, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """The console's upload form runs the same upload as the API: the new version and its
    int8 variant appear on the page; a bad manifest is shown next to the form."""
    from tests.catalog.mlp import write_mlp

    _, csrf = await _admin(app, client)
    made = write_mlp(tmp_path, "torchscript")
    manifest = json.dumps({**made.manifest, "name": "console-mlp", "version": "1"}).encode()
    files = {
        "archive": ("model.pt", made.archive.read_bytes()),
        "manifest": ("manifest.json", manifest),
        "eval": ("eval.npz", made.eval_npz.read_bytes()),
    }
    form = {"csrf_token": csrf, "name": "console-mlp", "version": "1"}
    done = await client.post("/console/models/upload", data=form, files=files, timeout=300)
    assert done.status_code == 303, done.text
    page = (await client.get("/console/models")).text
    assert "console-mlp" in page and "int8" in page
    wrong = {**form, "version": "2"}  # the manifest says version 1
    refused = await client.post("/console/models/upload", data=wrong, files=files, timeout=300)
    assert refused.status_code == 422
    assert 'role="alert"' in refused.text and "uploaded as console-mlp version 2" in refused.text
