"""Strings that cannot be stored or sent back (NUL: Postgres text refuses it; a lone
surrogate: no UTF-8 form) are a 422 at every admin input, never a 500 or a 503 from the
database, and nothing is written. Found by fuzzing."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.keys.schemas import Scope
from tests.conftest import bearer, make_key

BAD = ["a\x00b", "\x00", "\ud800", "x\udc00y"]


def _requests(bad: str, customer_id: int) -> list[tuple[str, str, dict[str, Any]]]:
    component = {"unit": "request", "pricing": "per_unit", "unit_price": "0.001"}
    return [
        ("POST", "/admin/customers", {"name": bad}),
        ("POST", "/admin/customers", {"name": "ok", "email": f"a{bad}@b.io"}),
        ("PATCH", f"/admin/customers/{customer_id}", {"name": bad}),
        ("POST", "/admin/plans", {"name": bad, "currency": "usd"}),
        (
            "POST",
            "/admin/plans",
            {"name": "p", "currency": "usd", "components": [{**component, "model": bad}]},
        ),
        (
            "POST",
            "/admin/plans",
            {"name": "p", "currency": "usd", "components": [{**component, "variant": bad}]},
        ),
        ("POST", "/admin/keys", {"customer_id": customer_id, "scopes": ["predict"], "name": bad}),
        (
            "POST",
            "/admin/keys",
            {"customer_id": customer_id, "scopes": ["predict"], "allowed_models": [bad]},
        ),
        ("PUT", "/admin/models/linreg/default", {"version": bad}),
    ]


@pytest.mark.parametrize("bad", BAD)
async def test_unstorable_strings_are_422(
    app: FastAPI, client: httpx.AsyncClient, bad: str
) -> None:
    admin = await make_key(app, "ops", (Scope.admin,))
    customers = (await client.get("/admin/customers", headers=bearer(admin))).json()["data"]
    plans = (await client.get("/admin/plans", headers=bearer(admin))).json()["data"]
    keys = (await client.get("/admin/keys", headers=bearer(admin))).json()["data"]
    for method, path, body in _requests(bad, admin.customer_id):
        r = await client.request(
            method,
            path,
            content=json.dumps(body),  # ASCII with \u escapes, as a JSON client sends them
            headers={**bearer(admin), "Content-Type": "application/json"},
        )
        assert r.status_code == 422, (method, path, body, r.status_code, r.text)
        assert r.json()["error"]["type"] == "invalid_request"
    if "\x00" in bad:  # a URL cannot carry a lone surrogate (%ED%A0%80 decodes to U+FFFD)
        audit = await client.get("/admin/audit", params={"action": bad}, headers=bearer(admin))
        assert audit.status_code == 422, audit.text
    assert (await client.get("/admin/customers", headers=bearer(admin))).json()["data"] == customers
    assert (await client.get("/admin/plans", headers=bearer(admin))).json()["data"] == plans
    assert (await client.get("/admin/keys", headers=bearer(admin))).json()["data"] == keys


async def test_component_names_fit_the_invoice_line(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """A component's model and variant end up in invoice_lines (128 and 32 characters): a
    longer one used to be accepted and then fail the whole month's close."""
    admin = await make_key(app, "ops", (Scope.admin,))
    component = {"unit": "request", "pricing": "per_unit", "unit_price": "0.001"}
    for extra, status in [
        ({"model": "m" * 129}, 422),
        ({"variant": "v" * 33}, 422),
        ({"model": ""}, 422),
        ({"model": "m" * 128, "variant": "v" * 32}, 201),
    ]:
        r = await client.post(
            "/admin/plans",
            json={
                "name": f"p{status}{len(extra)}",
                "currency": "usd",
                "components": [{**component, **extra}],
            },
            headers=bearer(admin),
        )
        assert r.status_code == status, (extra, r.text)
