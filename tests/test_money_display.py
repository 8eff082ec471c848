"""Money and exact decimals as the API and documents show them."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from app.billing.parties import tax_on
from app.keys.schemas import Scope
from app.main import create_app
from app.money.display import PlainDecimal, minor_string, plain, with_currency
from tests.billing.helpers import add_usage, assign, create_plan
from tests.conftest import bearer, make_key, make_settings


@pytest.mark.parametrize(
    ("minor", "currency", "shown"),
    [
        (4900, "usd", "49.00"),
        (5, "usd", "0.05"),
        (0, "eur", "0.00"),
        (-5, "usd", "-0.05"),
        (1250, "jpy", "1250"),
        (1234, "kwd", "1.234"),
        (10**17, "usd", "1000000000000000.00"),
    ],
)
def test_minor_string_is_at_the_currency_exponent(minor: int, currency: str, shown: str) -> None:
    assert minor_string(minor, currency) == shown


def test_with_currency_groups_thousands() -> None:
    assert with_currency(123450, "eur") == "1,234.50 EUR"
    assert with_currency(1250, "jpy") == "1,250 JPY"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("0E-10", "0"),
        ("-0.000", "0"),
        ("49.0000000000", "49"),
        ("0.0015000000", "0.0015"),
        ("1E+3", "1000"),
        ("966.2093040621266427718040621", "966.2093040621266427718040621"),
        # past the default 28-digit context: an invoice line's NUMERIC(30, 10) amount
        ("99999999999999999999.9999999999", "99999999999999999999.9999999999"),
        ("1.00000000000000000000000000001000", "1.00000000000000000000000000001"),
    ],
)
def test_plain_has_no_exponent_and_no_trailing_zeros(value: str, shown: str) -> None:
    assert plain(Decimal(value)) == shown


def test_plain_decimal_serializes_as_a_json_string() -> None:
    class Out(BaseModel):
        price: PlainDecimal

    assert Out(price=Decimal("0E-10")).model_dump_json() == '{"price":"0"}'
    schema = Out.model_json_schema(mode="serialization")
    assert schema["properties"]["price"]["type"] == "string"


@pytest.mark.parametrize(
    ("subtotal", "rate", "tax"),
    [
        (24, Decimal(19), 5),  # 4.56 cents, half up
        (4900, Decimal(19), 931),
        (250, Decimal("7.25"), 18),  # 18.125
        (2, Decimal(25), 1),  # 0.5: half up
        (4900, None, 0),
        (0, Decimal(19), 0),
    ],
)
def test_tax_is_rounded_once_half_up(subtotal: int, rate: Decimal | None, tax: int) -> None:
    assert tax_on(subtotal, rate) == tax


def _types(prop: dict[str, Any]) -> set[str]:
    if "type" in prop:
        return {prop["type"]}
    return {t for option in prop.get("anyOf", []) for t in _types(option)}


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"].rsplit("/", 1)[-1]} if "$ref" in node else set()
        return found.union(*(_refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node))
    return set()


def _response_schemas(spec: dict[str, Any]) -> set[str]:
    """The component schemas a response can contain (request bodies such as a credit
    note's lines take minor units alone)."""
    schemas = spec["components"]["schemas"]
    todo = _refs(
        [op.get("responses", {}) for item in spec["paths"].values() for op in item.values()]
    )
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo |= _refs(schemas[name])
    return seen


def test_every_minor_amount_has_its_decimal_string() -> None:
    """Every integer ``X_minor`` a response schema exposes comes with an ``X`` string."""
    spec = create_app(make_settings("sqlite://")).openapi()
    responses = _response_schemas(spec)
    assert {"InvoiceOut", "CreditNoteOut", "MarginReport"} <= responses
    missing = []
    checked = 0
    for name, schema in spec["components"]["schemas"].items():
        if name not in responses:
            continue
        properties = schema.get("properties", {})
        for field, prop in properties.items():
            if not (field.endswith("_minor") and "integer" in _types(prop)):
                continue
            checked += 1
            sibling = properties.get(field.removesuffix("_minor"))
            if sibling is None or "string" not in _types(sibling):
                missing.append(f"{name}.{field}")
    assert missing == []
    assert checked >= 10  # the reports' amounts at least: the walk found them


# A number in exponent notation ("0E-10", "1E+3") or with a NUMERIC column's padding.
_EXPONENT = re.compile(r"\d[eE][+-]?\d")


async def test_plans_usage_and_reports_show_no_exponent_or_padding(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    admin = await make_key(app, "ops", (Scope.admin,))
    finance = await make_key(app, "fin", (Scope.finance,))
    free = await create_plan(
        client,
        admin,
        name="free",
        currency="usd",
        base_fee="0",
        spend_cap="0",
        components=[{"unit": "request", "pricing": "per_unit", "unit_price": "0", "included": "0"}],
    )
    paid = await create_plan(
        client,
        admin,
        name="paid",
        currency="eur",
        base_fee="49",
        spend_cap="500.00",
        components=[
            {"unit": "item", "pricing": "per_unit", "unit_price": "0.0015", "included": "1000"},
            {
                "unit": "compute_second",
                "pricing": "graduated",
                "tiers": [
                    {"up_to": "10", "unit_price": "0"},
                    {"up_to": None, "unit_price": "0.0000000001", "flat_fee": "1.50"},
                ],
            },
        ],
    )
    ann, eva = await make_key(app, "ann"), await make_key(app, "eva")
    august = datetime(2026, 8, 1, tzinfo=UTC)
    await assign(app, ann.customer_id, free["id"], august, immediately=True)
    await assign(app, eva.customer_id, paid["id"], august, immediately=True)
    at = datetime(2026, 9, 3, tzinfo=UTC)
    await add_usage(app, ann, at, count=2, compute_us=1)
    await add_usage(app, eva, at, count=3, items=700, compute_us=3_600_000_000)
    await add_usage(app, eva, at, compute_us=0, model="foo", billable=False)
    closed = await client.post("/finance/periods/2026-09/close", headers=bearer(finance))
    assert closed.status_code == 200, closed.text

    period = {"period": "2026-09"}
    reads = [
        ("/admin/plans", admin, {}),
        (f"/admin/plans/{free['id']}", admin, {}),
        (f"/admin/plans/{paid['id']}/versions/1", admin, {}),
        ("/v1/usage", eva, {"start": "2026-09-01T00:00:00", "end": "2026-10-01T00:00:00"}),
        ("/v1/usage", ann, {"start": "2026-09-01T00:00:00", "group_by": "model"}),
        ("/finance/reports/revenue", finance, period),
        ("/finance/reports/margin", finance, period),
        ("/finance/reports/margin", finance, {**period, "investment": "49", "currency": "eur"}),
    ]
    for path, key, params in reads:
        response = await client.get(path, params=params, headers=bearer(key))
        assert response.status_code == 200, (path, response.text)
        assert not _EXPONENT.search(response.text), (path, response.text)
        assert "0000000000" not in response.text, (path, response.text)

    plan = (await client.get(f"/admin/plans/{paid['id']}", headers=bearer(admin))).json()
    current = plan["current"]
    assert (current["base_fee"], current["spend_cap"]) == ("49", "500")
    item, compute = current["components"]
    assert (item["unit_price"], item["included"]) == ("0.0015", "1000")
    assert compute["tiers"][1] == {"up_to": None, "unit_price": "0.0000000001", "flat_fee": "1.5"}
