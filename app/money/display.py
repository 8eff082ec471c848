"""How money and exact quantities are shown: never exponent notation, never internal
precision.

- An amount in minor units is shown at the currency's exponent: ``minor_string(4900, "usd")``
  is ``"49.00"``, ``minor_string(5, "usd")`` is ``"0.05"``, ``minor_string(1250, "jpy")`` is
  ``"1250"``. Every ``X_minor`` integer the API exposes comes with an ``X`` string made so
  (``tests/test_money_display.py`` checks the OpenAPI for the pair).
- An exact decimal that is not a settled amount (a unit price such as 0.0015, a quantity, an
  unrounded line amount) is shown with its significant digits only, in plain notation:
  ``plain(Decimal("0E-10"))`` is ``"0"``, ``plain(Decimal("49.0000000000"))`` is ``"49"``,
  ``plain(Decimal("1.5E+3"))`` is ``"1500"``. :data:`PlainDecimal` is that as a pydantic type
  (a JSON string).

The database keeps the exact values; only their rendering changes here.
"""

from __future__ import annotations

from decimal import Decimal, localcontext
from typing import Annotated

from pydantic import PlainSerializer, WithJsonSchema

from app.money.pricing import minor_exponent

__all__ = ["PlainDecimal", "minor_string", "plain", "with_currency"]


def minor_string(amount_minor: int, currency: str) -> str:
    """An integer of minor units as a decimal string at the currency's exponent."""
    exponent = minor_exponent(currency)
    return f"{Decimal(amount_minor).scaleb(-exponent):.{exponent}f}"


def with_currency(amount_minor: int, currency: str) -> str:
    """For documents: thousands separated, with the code: ``"1,234.50 EUR"``."""
    exponent = minor_exponent(currency)
    return f"{Decimal(amount_minor).scaleb(-exponent):,.{exponent}f} {currency.upper()}"


def plain(value: Decimal) -> str:
    """Significant digits only, plain notation: 0E-10 -> "0", 49.0000000000 -> "49",
    0.0015000000 -> "0.0015", 1E+3 -> "1000"; never "-0"."""
    if not value.is_finite():
        return str(value)
    with localcontext() as context:
        # normalize() rounds to the context's precision (28 digits by default); an
        # invoice line's NUMERIC(30, 10) amount has up to 30: keep every digit.
        context.prec = max(context.prec, len(value.as_tuple().digits))
        text = f"{value.normalize():f}"
    return "0" if text in ("-0", "0") else text


PlainDecimal = Annotated[
    Decimal,
    PlainSerializer(plain, return_type=str, when_used="always"),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^-?\d+(\.\d+)?$",
            "description": "An exact decimal in plain notation, significant digits only",
            "examples": ["0.0015"],
        },
        mode="serialization",
    ),
]
