from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from app.customers.countries import COUNTRY_CODES
from app.money.display import PlainDecimal
from app.validation import Text

_EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"

MAX_ADDRESS_LINES = 10


def _address(value: str) -> str:
    # One line per line of the address block; \r\n and trailing blanks are not part of it.
    lines = [line.rstrip() for line in value.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    if not lines:
        raise ValueError("must not be blank")
    if len(lines) > MAX_ADDRESS_LINES:
        raise ValueError(f"at most {MAX_ADDRESS_LINES} lines")
    if any(ord(c) < 32 and c not in "\n\t" for c in value.replace("\r\n", "\n")):
        raise ValueError("must not contain control characters other than line breaks")
    return "\n".join(lines)


Address = Annotated[Text, Field(min_length=1, max_length=1000), AfterValidator(_address)]
"""A postal address, several lines separated by ``\\n`` (at most 10 lines, 1000 characters)."""


def _country(value: str) -> str:
    code = value.upper()
    if code not in COUNTRY_CODES:
        raise ValueError(f"{value!r} is not an ISO 3166-1 alpha-2 country code (e.g. DE, US)")
    return code


Country = Annotated[str, Field(min_length=2, max_length=2), AfterValidator(_country)]
"""ISO 3166-1 alpha-2, stored upper case (``de`` is read as ``DE``)."""


def _not_a_float(value: object) -> object:
    # A JSON number with a fraction is a binary float that may have lost digits already.
    if isinstance(value, bool):
        raise ValueError("must be a decimal percent, not a boolean")
    if isinstance(value, float):
        raise ValueError('give the rate as a string (e.g. "7.25") or an integer')
    return value


def _no_negative_zero(value: Decimal) -> Decimal:
    return value.copy_abs() if value.is_zero() else value


TaxRate = Annotated[
    Decimal,
    BeforeValidator(_not_a_float),
    Field(ge=0, lt=100, decimal_places=4, max_digits=7),
    AfterValidator(_no_negative_zero),
]
"""A tax rate in percent ("19", "7.25"): 0 <= rate < 100, at most 4 decimal places."""


class BillingDetails(BaseModel):
    """What the customer block of an invoice shows, and the customer's tax treatment: a
    ``tax_rate``, or ``tax_exempt`` with a ``tax_note`` (e.g. "Reverse charge"), never both."""

    legal_name: Text | None = Field(default=None, min_length=1, max_length=200)
    billing_email: Text | None = Field(
        default=None,
        max_length=320,
        pattern=_EMAIL,
        description="Where invoices go (the invoice shows `email` when this is not set)",
    )
    address: Address | None = Field(
        default=None, description='Postal address, lines separated by "\\n"'
    )
    country: Country | None = Field(default=None, description="ISO 3166-1 alpha-2, e.g. DE")
    tax_id: Text | None = Field(
        default=None, min_length=1, max_length=64, description="e.g. a VAT number"
    )
    tax_rate: TaxRate | None = Field(
        default=None,
        description='Percent, a decimal string such as "19" or "7.25"; tax is charged once '
        "on the invoice subtotal, rounded half up",
    )
    tax_exempt: bool | None = Field(
        default=None, description="No tax is charged; requires `tax_note`, excludes `tax_rate`"
    )
    tax_note: Text | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description='Shown instead of a tax rate when exempt, e.g. "Reverse charge"',
    )


BILLING_FIELDS = tuple(BillingDetails.model_fields)


class CustomerCreate(BillingDetails):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "Acme Corp", "email": "billing@acme.example"}]}
    )

    name: Text = Field(min_length=1, max_length=200)
    email: Text | None = Field(default=None, max_length=320, pattern=_EMAIL)


class CustomerUpdate(BillingDetails):
    """Only the fields sent change; ``null`` clears one (``tax_exempt: null`` is false)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"email": "accounts@acme.example"},
                {
                    "legal_name": "Acme GmbH",
                    "address": "Hauptstr. 1\n10115 Berlin",
                    "country": "DE",
                    "tax_id": "DE123456789",
                    "tax_rate": "19",
                },
                {"tax_rate": None, "tax_exempt": True, "tax_note": "Reverse charge"},
            ]
        }
    )

    name: Text | None = Field(default=None, min_length=1, max_length=200)
    email: Text | None = Field(default=None, max_length=320, pattern=_EMAIL)


class CustomerOut(BaseModel):
    id: int
    name: str
    email: str | None
    status: str
    stripe_customer_id: str | None
    created_at: datetime
    legal_name: str | None
    billing_email: str | None
    address: str | None
    country: str | None
    tax_id: str | None
    tax_rate: PlainDecimal | None
    tax_exempt: bool
    tax_note: str | None
    is_operator: bool = Field(
        description="The operator account: its keys (and only its) may hold admin and finance"
    )


class CustomerList(BaseModel):
    data: list[CustomerOut]
