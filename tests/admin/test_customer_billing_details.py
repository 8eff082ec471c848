"""Customers carry the billing details an invoice needs: legal name, billing email, a
multi-line address, an ISO country, a tax id, and a tax treatment (a rate, or an exemption
with its note, never both). PATCH changes only what it is sent; null clears; every change is
audited with the fields before and after."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.customers.countries import COUNTRY_CODES
from app.keys.schemas import CreatedKey, Scope
from tests.conftest import bearer, make_key

ADDRESS = "Hauptstr. 1\n10115 Berlin"


@pytest.fixture
async def admin(app: FastAPI) -> CreatedKey:
    return await make_key(app, "tollgate-ops", (Scope.admin,))


async def _patch(
    client: httpx.AsyncClient, admin: CreatedKey, customer_id: int, body: dict[str, Any]
) -> httpx.Response:
    return await client.patch(f"/admin/customers/{customer_id}", json=body, headers=bearer(admin))


async def _create(client: httpx.AsyncClient, admin: CreatedKey, **body: Any) -> dict[str, Any]:
    created = await client.post("/admin/customers", json=body, headers=bearer(admin))
    assert created.status_code == 201, created.text
    customer: dict[str, Any] = created.json()
    return customer


def test_the_country_list_is_iso_3166_alpha_2() -> None:
    assert len(COUNTRY_CODES) == 249
    assert {"DE", "US", "JP", "GB", "AX", "SS", "XK"} & COUNTRY_CODES == {
        "DE",
        "US",
        "JP",
        "GB",
        "AX",
        "SS",
    }  # XK (Kosovo) is user-assigned, not part of ISO 3166-1
    assert all(len(c) == 2 and c.isupper() and c.isascii() for c in COUNTRY_CODES)


async def test_patch_sets_only_what_is_sent_and_null_clears(
    client: httpx.AsyncClient, admin: CreatedKey
) -> None:
    customer = await _create(client, admin, name="acme", email="ops@acme.example")
    assert {k: customer[k] for k in ("legal_name", "tax_rate", "tax_exempt", "country")} == {
        "legal_name": None,
        "tax_rate": None,
        "tax_exempt": False,
        "country": None,
    }
    details = {
        "legal_name": "Acme GmbH",
        "billing_email": "ap@acme.example",
        "address": "Hauptstr. 1\r\n10115 Berlin  \n",
        "country": "de",
        "tax_id": "DE123456789",
        "tax_rate": "19",
    }
    updated = await _patch(client, admin, customer["id"], details)
    assert updated.status_code == 200, updated.text
    body = updated.json()
    assert body["address"] == ADDRESS  # line breaks kept, \r\n and trailing blanks dropped
    assert body["country"] == "DE"
    assert body["tax_rate"] == "19"
    assert body["email"] == "ops@acme.example" and body["name"] == "acme"  # not sent: kept

    fractional = await _patch(client, admin, customer["id"], {"tax_rate": "7.25"})
    assert fractional.json()["tax_rate"] == "7.25"
    assert fractional.json()["legal_name"] == "Acme GmbH"

    cleared = await _patch(client, admin, customer["id"], {"tax_id": None, "tax_rate": None})
    assert cleared.status_code == 200
    assert cleared.json()["tax_id"] is None and cleared.json()["tax_rate"] is None
    assert cleared.json()["address"] == ADDRESS

    read = await client.get(f"/admin/customers/{customer['id']}", headers=bearer(admin))
    assert read.json() == cleared.json()

    audit = (
        await client.get(
            "/admin/audit",
            params={"target_type": "customer", "action": "customer.update"},
            headers=bearer(admin),
        )
    ).json()["data"]
    first = audit[-1]  # oldest last
    assert first["before"]["legal_name"] is None and first["before"]["tax_rate"] is None
    assert first["after"]["legal_name"] == "Acme GmbH"
    assert first["after"]["tax_rate"] == "19"  # the rate's digits, not "19.0000"
    assert first["after"]["address"] == ADDRESS and first["after"]["country"] == "DE"
    assert audit[0]["before"]["tax_rate"] == "7.25" and audit[0]["after"]["tax_rate"] is None


async def test_create_takes_the_billing_details_too(
    client: httpx.AsyncClient, admin: CreatedKey
) -> None:
    customer = await _create(
        client,
        admin,
        name="lyon",
        legal_name="Lyon SAS",
        address="1 rue de la Paix\n69001 Lyon",
        country="FR",
        tax_exempt=True,
        tax_note="Reverse charge",
    )
    assert customer["tax_exempt"] is True and customer["tax_note"] == "Reverse charge"
    assert customer["tax_rate"] is None
    audit = (
        await client.get(
            "/admin/audit", params={"action": "customer.create"}, headers=bearer(admin)
        )
    ).json()["data"]
    assert audit[0]["after"]["tax_exempt"] is True
    assert audit[0]["after"]["legal_name"] == "Lyon SAS"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("country", "XX"),
        ("country", "DEU"),
        ("country", "D"),
        ("country", 49),
        ("tax_rate", "100"),
        ("tax_rate", "-1"),
        ("tax_rate", "1.23456"),
        ("tax_rate", 7.25),  # a JSON float: its digits may already be gone
        ("tax_rate", True),
        ("tax_rate", "NaN"),
        ("tax_rate", "nineteen"),
        ("billing_email", "not-an-email"),
        ("address", "   \n  "),
        ("address", "\n".join(f"line {i}" for i in range(11))),
        ("address", "x" * 1001),
        ("address", "a\x07b"),
        ("legal_name", ""),
        ("legal_name", "x" * 201),
        ("tax_id", "x" * 65),
        ("tax_note", "x" * 201),
        ("tax_exempt", "maybe"),
    ],
)
async def test_bad_billing_details_are_422(
    client: httpx.AsyncClient, admin: CreatedKey, field: str, value: object
) -> None:
    customer = await _create(client, admin, name="strict")
    response = await _patch(client, admin, customer["id"], {field: value})
    assert response.status_code == 422, (field, value, response.text)
    assert response.json()["error"]["type"] == "invalid_request"
    created = await client.post(
        "/admin/customers", json={"name": "other", field: value}, headers=bearer(admin)
    )
    assert created.status_code == 422, (field, value, created.text)


async def test_a_rate_and_an_exemption_together_are_422(
    client: httpx.AsyncClient, admin: CreatedKey
) -> None:
    customer = await _create(client, admin, name="tax")

    async def refused(body: dict[str, Any]) -> str:
        response = await _patch(client, admin, customer["id"], body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"]["type"] == "invalid_tax_treatment"
        message: str = response.json()["error"]["message"]
        return message

    both = {"tax_rate": "19", "tax_exempt": True, "tax_note": "Reverse charge"}
    assert "not both" in await refused(both)
    assert "tax_note" in await refused({"tax_exempt": True})  # an exemption says why
    assert (await _patch(client, admin, customer["id"], {"tax_rate": "19"})).status_code == 200
    # Exempting a customer that has a rate: the stored rate counts too.
    assert "not both" in await refused({"tax_exempt": True, "tax_note": "Reverse charge"})
    still = await client.get(f"/admin/customers/{customer['id']}", headers=bearer(admin))
    assert still.json()["tax_rate"] == "19" and still.json()["tax_exempt"] is False
    exempt = await _patch(
        client,
        admin,
        customer["id"],
        {"tax_rate": None, "tax_exempt": True, "tax_note": "Reverse charge"},
    )
    assert exempt.status_code == 200, exempt.text
    # Clearing the note of an exempt customer would leave an exemption without a reason.
    assert "tax_note" in await refused({"tax_note": None})
    back = await _patch(client, admin, customer["id"], {"tax_exempt": None, "tax_rate": "7"})
    assert back.status_code == 200 and back.json()["tax_exempt"] is False
    refused_create = await client.post(
        "/admin/customers", json={"name": "both", **both}, headers=bearer(admin)
    )
    assert refused_create.status_code == 422
    assert refused_create.json()["error"]["type"] == "invalid_tax_treatment"
    listed = (await client.get("/admin/customers", headers=bearer(admin))).json()["data"]
    assert "both" not in [c["name"] for c in listed]
