"""Every route of the OpenAPI schema x every role, with the expected outcome.

A route missing from ``EXPECTED`` fails the test: a new route must state who may call it.
"Allowed" means the caller gets past authentication and authorization (any status but
401/403; validation or not-found answers are fine). Denied roles get exactly 401 or 403.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, insert, text

from app.keys.schemas import CreatedKey, Scope
from app.orm import CreditNote, Invoice
from tests.conftest import bearer, make_key

# admin, finance: keys of the operator account (its staff). billing_a: customer-a's
# self-service key. legacy: an admin and finance key of a customer left by the migration
# that introduced operator accounts (grandfathered until re-issued). forged: a customer's key
# whose row says admin and finance although it is neither the operator's nor legacy (no
# service issues one): those scopes must not count.
ROLES = ("anonymous", "dev_a", "dev_b", "admin", "finance", "billing_a", "legacy", "forged")
KEYS = ROLES[1:]
PUBLIC = dict.fromkeys(ROLES, "ok")


def _only(*allowed: str) -> dict[str, int | str]:
    return {"anonymous": 401, **{r: "ok" if r in allowed else 403 for r in KEYS}}


ANY_KEY = _only(*KEYS)
PREDICT = _only("dev_a", "dev_b")
ADMIN = _only("admin", "legacy")
FINANCE = _only("finance", "legacy")
BILLING = _only("billing_a")
# Stripe authenticates webhooks by signature, not by key: every role without one gets 503
# here (Stripe is not configured in this app) and never a change.
SIGNED = dict.fromkeys(ROLES, 503)

EXPECTED: dict[tuple[str, str], dict[str, int | str]] = {
    ("GET", "/v1/models"): ANY_KEY,
    ("GET", "/v1/models/{model}"): ANY_KEY,
    ("POST", "/v1/models/{model}/predict"): PREDICT,
    # Open Inference Protocol V2: health and server metadata are public like /healthz (probes
    # carry no key); model metadata and readiness need any key like /v1/models/{model}.
    ("GET", "/v2"): PUBLIC,
    ("GET", "/v2/health/live"): PUBLIC,
    ("GET", "/v2/health/ready"): PUBLIC,
    ("GET", "/v2/models/{model}"): ANY_KEY,
    ("GET", "/v2/models/{model}/versions/{version}"): ANY_KEY,
    ("GET", "/v2/models/{model}/ready"): ANY_KEY,
    ("GET", "/v2/models/{model}/versions/{version}/ready"): ANY_KEY,
    ("POST", "/v2/models/{model}/infer"): PREDICT,
    ("POST", "/v2/models/{model}/versions/{version}/infer"): PREDICT,
    ("GET", "/v1/usage"): ANY_KEY,
    ("GET", "/v1/billing/plan"): BILLING,
    ("GET", "/v1/billing/usage"): BILLING,
    ("GET", "/v1/billing/spend"): BILLING,
    ("GET", "/v1/billing/invoices"): BILLING,
    ("GET", "/v1/billing/invoices/{invoice_id}"): BILLING,
    ("GET", "/v1/billing/invoices/{invoice_id}.csv"): BILLING,
    ("GET", "/v1/billing/invoices/{invoice_id}.pdf"): BILLING,
    ("GET", "/v1/billing/credit-notes"): BILLING,
    ("GET", "/v1/billing/credit-notes/{credit_note_id}"): BILLING,
    ("GET", "/v1/billing/credit-notes/{credit_note_id}.csv"): BILLING,
    ("GET", "/v1/billing/credit-notes/{credit_note_id}.pdf"): BILLING,
    ("POST", "/admin/customers"): ADMIN,
    ("GET", "/admin/customers"): ADMIN,
    ("GET", "/admin/customers/{customer_id}"): ADMIN,
    ("PATCH", "/admin/customers/{customer_id}"): ADMIN,
    ("POST", "/admin/customers/{customer_id}/suspend"): ADMIN,
    ("POST", "/admin/customers/{customer_id}/reactivate"): ADMIN,
    ("PUT", "/admin/customers/{customer_id}/plan"): ADMIN,
    ("POST", "/admin/keys"): ADMIN,
    ("GET", "/admin/keys"): ADMIN,
    ("GET", "/admin/keys/{id_or_prefix}"): ADMIN,
    ("POST", "/admin/keys/{id_or_prefix}/revoke"): ADMIN,
    ("POST", "/admin/keys/{id_or_prefix}/expire"): ADMIN,
    ("POST", "/admin/keys/{id_or_prefix}/rotate"): ADMIN,
    ("GET", "/admin/plans"): ADMIN,
    ("POST", "/admin/plans"): ADMIN,
    ("GET", "/admin/plans/{plan_id}"): ADMIN,
    ("PUT", "/admin/plans/{plan_id}"): ADMIN,
    ("DELETE", "/admin/plans/{plan_id}"): ADMIN,
    ("GET", "/admin/plans/{plan_id}/versions/{version}"): ADMIN,
    ("GET", "/admin/audit"): ADMIN,
    ("GET", "/admin/models"): ADMIN,
    ("POST", "/admin/models/{name}/versions/{version}/load"): ADMIN,
    ("POST", "/admin/models/{name}/versions/{version}/unload"): ADMIN,
    ("POST", "/admin/models/{name}/versions/{version}"): ADMIN,
    ("PUT", "/admin/models/{name}/versions/{version}/published"): ADMIN,
    ("PUT", "/admin/models/{name}/default"): ADMIN,
    ("POST", "/finance/periods/{period}/close"): FINANCE,
    ("GET", "/finance/invoices"): FINANCE,
    ("GET", "/finance/invoices/preview"): FINANCE,
    ("GET", "/finance/invoices/{invoice_id}"): FINANCE,
    ("GET", "/finance/invoices/{invoice_id}.csv"): FINANCE,
    ("GET", "/finance/invoices/{invoice_id}.pdf"): FINANCE,
    ("GET", "/finance/periods/{period}/lines.csv"): FINANCE,
    ("GET", "/finance/reports/revenue"): FINANCE,
    ("GET", "/finance/reports/margin"): FINANCE,
    ("POST", "/finance/sync"): FINANCE,
    ("GET", "/finance/reports/reconciliation"): FINANCE,
    ("POST", "/finance/invoices/{invoice_id}/void"): FINANCE,
    ("POST", "/finance/invoices/{invoice_id}/credit-notes"): FINANCE,
    ("GET", "/finance/invoices/{invoice_id}/credit-notes"): FINANCE,
    ("GET", "/finance/credit-notes"): FINANCE,
    ("GET", "/finance/credit-notes/{credit_note_id}"): FINANCE,
    ("GET", "/finance/credit-notes/{credit_note_id}.pdf"): FINANCE,
    ("GET", "/finance/credit-notes/{credit_note_id}.csv"): FINANCE,
    ("POST", "/webhooks/stripe"): SIGNED,
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
}

QUERY = {
    "/finance/invoices/preview": {"customer": "1"},
    "/finance/reports/revenue": {"period": "2026-09"},
    "/finance/reports/margin": {"period": "2026-09"},
    "/finance/reports/reconciliation": {"period": "2026-09"},
}


def test_every_route_has_an_entry(app: FastAPI) -> None:
    routes = {
        (method.upper(), path)
        for path, methods in app.openapi()["paths"].items()
        for method in methods
    }
    assert routes - EXPECTED.keys() == set(), "new routes need an authorization entry"
    assert EXPECTED.keys() - routes == set(), "stale entries"


async def test_authorization_matrix(
    app: FastAPI, client: httpx.AsyncClient, pg_sync: Engine
) -> None:
    keys = {
        "dev_a": await make_key(app, "customer-a"),
        "dev_b": await make_key(app, "customer-b"),
        "admin": await make_key(app, "operator", (Scope.admin,)),
        "finance": await make_key(app, "operator", (Scope.finance,)),
        "billing_a": await make_key(app, "customer-a", (Scope.billing,)),
        "legacy": await make_key(app, "legacy-co", (Scope.admin, Scope.finance), legacy_staff=True),
        "forged": await make_key(app, "customer-c"),
    }
    with pg_sync.begin() as conn:
        conn.execute(
            text("""UPDATE api_keys SET scopes = '["admin", "finance"]' WHERE id = :id"""),
            {"id": keys["forged"].key_id},
        )
    # Targets for destructive admin routes, so the matrix never breaks its own callers.
    victim = await make_key(app, "victim")
    params = {
        "model": "linreg",
        "customer_id": str(victim.customer_id),
        "id_or_prefix": str(victim.key_id),
        "plan_id": "999",
        "name": "no-such-model",
        "version": "1",
        "invoice_id": "999",
        "credit_note_id": "999",
        "period": "2026-09",
    }
    failures = []
    for (method, template), expected_by_role in EXPECTED.items():
        path = template
        for name, value in params.items():
            path = path.replace("{" + name + "}", value)
        for role in ROLES:
            headers = bearer(keys[role]) if role in keys else {}
            body = {"inputs": [0.0] * 10} if template.endswith("/predict") else {}
            response = await client.request(
                method,
                path,
                headers=headers,
                params=QUERY.get(template),
                json=body if method in ("POST", "PUT", "PATCH") else None,
            )
            expected = expected_by_role[role]
            ok = (
                response.status_code not in (401, 403, 500)
                if expected == "ok"
                else response.status_code == expected
            )
            if not ok:
                failures.append(
                    f"{method} {template} as {role}: {response.status_code} (expected {expected})"
                )
    assert failures == []


@pytest.mark.parametrize("role", ["dev_a", "dev_b"])
async def test_developers_see_only_their_own_usage(
    app: FastAPI, client: httpx.AsyncClient, role: str
) -> None:
    a, b = await make_key(app, "customer-a"), await make_key(app, "customer-b")
    await client.post("/v1/models/linreg/predict", json={"inputs": [0.0] * 10}, headers=bearer(a))
    mine = a if role == "dev_a" else b
    usage = (await client.get("/v1/usage", headers=bearer(mine))).json()
    assert usage["customer_id"] == mine.customer_id
    assert usage["total"]["requests"] == (1 if role == "dev_a" else 0)


async def test_another_customers_document_is_404_like_a_missing_one(
    app: FastAPI, client: httpx.AsyncClient, pg_sync: Engine
) -> None:
    """Every /v1/billing route that names a document by id: a billing key of customer-b
    asking for customer-a's gets what a missing id gets (404, never a 403 that would say it
    exists); customer-a gets it. Also a draft, which nobody outside finance sees."""
    a = await make_key(app, "customer-a", (Scope.billing,))
    b = await make_key(app, "customer-b", (Scope.billing,))
    with pg_sync.begin() as conn:
        ids = {
            status: conn.scalar(
                insert(Invoice)
                .values(
                    number=None if status == "draft" else "TG-2026-000001",
                    customer_id=a.customer_id,
                    period="2026-09" if status == "draft" else "2026-08",
                    period_start=datetime(2026, 9, 1, tzinfo=UTC),
                    period_end=datetime(2026, 10, 1, tzinfo=UTC),
                    status=status,
                    currency="usd",
                    subtotal_minor=100,
                    total_minor=100,
                )
                .returning(Invoice.id)
            )
            for status in ("finalized", "draft")
        }
        note = conn.scalar(
            insert(CreditNote)
            .values(
                number="CN-2026-000001",
                invoice_id=ids["finalized"],
                customer_id=a.customer_id,
                currency="usd",
                reason="outage",
                subtotal_minor=10,
                tax_minor=0,
                total_minor=10,
                issued_at=datetime(2026, 9, 2, tzinfo=UTC),
            )
            .returning(CreditNote.id)
        )
    routes = [
        path for path in app.openapi()["paths"] if path.startswith("/v1/billing/") and "{" in path
    ]
    assert len(routes) >= 3
    missing = 10**9
    for template in routes:

        def at(document: int, template: str = template) -> str:
            return re.sub(r"\{[a-z_]+\}", str(document), template)

        if "{credit_note_id}" in template:
            # customer-a's own note answers; customer-b gets the 404 of a missing id.
            own = await client.get(at(note), headers=bearer(a))
            assert own.status_code == 200, (template, own.text)
            others: tuple[tuple[int, CreatedKey], ...] = ((note, b),)
        else:
            own = await client.get(at(ids["finalized"]), headers=bearer(a))
            assert own.status_code == 200, (template, own.text)
            others = ((ids["finalized"], b), (ids["draft"], b), (ids["draft"], a))
        absent = (await client.get(at(missing), headers=bearer(b))).json()["error"]
        for document, key in others:
            response = await client.get(at(document), headers=bearer(key))
            assert response.status_code == 404, (template, document, response.text)
            error = response.json()["error"]
            assert error["type"] == absent["type"]
            assert error["message"].replace(str(document), "N") == absent["message"].replace(
                str(missing), "N"
            )
