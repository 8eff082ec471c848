"""Money and exact decimals as the API and documents show them."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import BaseModel

from app.billing.parties import tax_on
from app.money.display import PlainDecimal, minor_string, plain, with_currency


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
