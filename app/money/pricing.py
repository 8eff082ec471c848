"""Exact pricing engine: turns a period's total usage of one unit into an amount of money.

Everything here is :class:`decimal.Decimal`; floats are refused at every entry point because
they cannot represent prices such as 0.0004 exactly. Arithmetic runs in a private context with
200 significant digits that *traps* ``Inexact``: an amount is either computed exactly or the
call raises :class:`PricingError` -- it is never silently rounded.

A :class:`PriceComponent` prices one :class:`Unit` (requests, items or compute seconds). The
component's ``included`` quantity is free and is subtracted first, so every model below prices
the billable quantity ``q = max(0, quantity - included)`` (``q`` may be fractional, e.g. for
compute seconds):

``per_unit``
    ``q * unit_price``.
``package``
    ``ceil(q / package_size) * unit_price``; a started package is charged in full, ``q = 0``
    costs nothing.
``graduated``
    Each tier prices only the units that fall inside it. For tier ``i`` with previous bound
    ``p_i`` (0 for the first tier) and ``q > p_i`` the tier adds
    ``flat_fee_i + unit_price_i * (min(q, up_to_i) - p_i)``. Bounds are inclusive, so with whole
    units the tiers ``up_to = 5, 10, None`` read "1-5, 6-10, 11+".
``volume``
    The whole quantity is priced at the rate of the single tier it lands in -- the first tier
    with ``q <= up_to`` (or the unbounded last one): ``flat_fee_k + unit_price_k * q``;
    ``q = 0`` costs nothing.

With Stripe's documented table (1-5 at 7, 6-10 at 6.50, 11+ at 6) six units cost 39.00 on
volume pricing (6 * 6.50) and 41.50 graduated (5 * 7 + 6.50); twenty units cost 120.00 on
volume pricing and 127.50 graduated (35 + 32.50 + 60).

Rounding rule: :func:`rate` returns the exact, unrounded amount in major currency units (it may
carry fractions of a cent: 12345 requests at 0.0004 is 4.938). It is rounded exactly **once per
invoice line**, by :func:`to_minor`, to the currency's minor unit with ``ROUND_HALF_UP`` (halves
go away from zero): 4.938 USD -> 494 cents. Rounding per unit or per event and summing would
drift -- three requests at 0.004 are 0.012, i.e. 1 cent, whereas rounding each request first
gives 0 cents -- so callers must sum exact amounts and round the total.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import (
    ROUND_HALF_UP,
    Context,
    Decimal,
    DecimalException,
    DivisionByZero,
    FloatOperation,
    Inexact,
    InvalidOperation,
    Overflow,
    localcontext,
)
from enum import StrEnum
from typing import Any

__all__ = [
    "PriceComponent",
    "Pricing",
    "PricingError",
    "Tier",
    "Unit",
    "billable_quantity",
    "describe",
    "minor_exponent",
    "rate",
    "to_minor",
]


class PricingError(ValueError):
    """A price component, quantity, amount or currency that cannot be priced exactly."""


class Pricing(StrEnum):
    per_unit = "per_unit"
    package = "package"
    graduated = "graduated"
    volume = "volume"


class Unit(StrEnum):
    request = "request"
    item = "item"
    compute_second = "compute_second"


_ZERO = Decimal(0)
_ONE = Decimal(1)

# Exact arithmetic: plenty of digits, and any operation that would have to round raises.
EXACT = Context(
    prec=200,
    rounding=ROUND_HALF_UP,
    traps=[InvalidOperation, DivisionByZero, Overflow, Inexact, FloatOperation],
)

# Stripe's zero-decimal currencies, plus the three-decimal ones (ISO 4217 exponent 3).
_ZERO_DECIMAL = frozenset(
    {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga"}
    | {"pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"}
)
_THREE_DECIMAL = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})
_CURRENCY = re.compile(r"[a-z]{3}", re.ASCII | re.IGNORECASE)

_UNIT_NAMES: dict[Unit, tuple[str, str]] = {
    Unit.request: ("request", "requests"),
    Unit.item: ("item", "items"),
    Unit.compute_second: ("compute second", "compute seconds"),
}


@contextmanager
def _exact() -> Iterator[None]:
    """Run Decimal arithmetic exactly; turn any decimal signal into a :class:`PricingError`."""
    try:
        with localcontext(EXACT):
            yield
    except DecimalException as exc:
        raise PricingError(
            f"amount cannot be computed exactly ({type(exc).__name__}); "
            "prices and quantities have too many significant digits"
        ) from exc


def _check_decimal(value: object, what: str) -> Decimal:
    if isinstance(value, float):
        raise PricingError(f"{what} must be a Decimal, not a float (floats are inexact)")
    if not isinstance(value, Decimal):
        raise PricingError(f"{what} must be a Decimal, got {type(value).__name__}")
    if not value.is_finite():
        raise PricingError(f"{what} must be a finite number, got {value}")
    return value


def _check_non_negative(value: object, what: str) -> Decimal:
    checked = _check_decimal(value, what)
    if checked < 0:
        raise PricingError(f"{what} must not be negative, got {checked}")
    return checked


def _coerce_decimal(value: object, what: str) -> Decimal:
    """Parse a decimal from a str, int or Decimal -- never from a float (or a bool)."""
    if isinstance(value, float):
        raise PricingError(
            f"{what} must be given as a string or an integer, not a float (floats are inexact)"
        )
    if isinstance(value, bool):
        raise PricingError(f"{what} must be a number, not a boolean")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            raise PricingError(f"{what} is not a decimal number: {value!r}") from None
    else:
        raise PricingError(f"{what} must be a decimal string or an integer, got {value!r}")
    if not result.is_finite():
        raise PricingError(f"{what} must be a finite number, got {value!r}")
    return result


def _optional_decimal(value: object, what: str) -> Decimal | None:
    return None if value is None else _coerce_decimal(value, what)


def _fmt(value: Decimal) -> str:
    """A decimal as plain digits, never scientific notation (``1E+3`` -> ``1000``)."""
    return f"{value:f}"


@dataclass(frozen=True, slots=True)
class Tier:
    """One row of a graduated or volume table.

    ``up_to`` is the inclusive upper bound in units (``None``: unbounded, only for the last
    tier); ``unit_price`` applies per unit and ``flat_fee`` once when the tier is reached.
    """

    up_to: Decimal | None
    unit_price: Decimal = _ZERO
    flat_fee: Decimal = _ZERO

    def to_dict(self) -> dict[str, Any]:
        return {
            "up_to": None if self.up_to is None else _fmt(self.up_to),
            "unit_price": _fmt(self.unit_price),
            "flat_fee": _fmt(self.flat_fee),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "tier") -> Tier:
        if not isinstance(data, Mapping):
            raise PricingError(f"{where} must be an object, got {type(data).__name__}")
        unknown = set(data) - {"up_to", "unit_price", "flat_fee"}
        if unknown:
            raise PricingError(
                f"{where} has unknown fields: {', '.join(sorted(map(str, unknown)))}"
            )
        if "up_to" not in data:
            raise PricingError(f"{where} is missing 'up_to' (use null for the unbounded last tier)")
        return cls(
            up_to=_optional_decimal(data["up_to"], f"{where} up_to"),
            unit_price=_coerce_decimal(data.get("unit_price", 0), f"{where} unit_price"),
            flat_fee=_coerce_decimal(data.get("flat_fee", 0), f"{where} flat_fee"),
        )


_FIELDS = (
    "unit",
    "pricing",
    "unit_price",
    "package_size",
    "tiers",
    "included",
    "model",
    "variant",
)


@dataclass(frozen=True, slots=True)
class PriceComponent:
    """How one unit of usage is priced. Construct freely; :meth:`validate` (run by
    :meth:`from_dict`, :func:`rate` and :func:`describe`) rejects inconsistent components."""

    unit: Unit
    pricing: Pricing
    unit_price: Decimal | None = None  # per_unit: per unit; package: per package
    package_size: Decimal | None = None  # package only, > 0
    tiers: tuple[Tier, ...] = ()  # graduated / volume only
    included: Decimal = _ZERO  # free quantity, subtracted before pricing
    model: str | None = None  # optional filter, applied by callers
    variant: str | None = None  # optional filter, applied by callers

    def validate(self) -> None:
        """Raise :class:`PricingError` unless the component is consistent."""
        if not isinstance(self.unit, Unit):
            raise PricingError(f"unit must be one of {', '.join(Unit)}, got {self.unit!r}")
        if not isinstance(self.pricing, Pricing):
            raise PricingError(f"pricing must be one of {', '.join(Pricing)}, got {self.pricing!r}")
        _check_non_negative(self.included, "included")
        for name in ("model", "variant"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise PricingError(f"{name} must be a non-empty string or null, got {value!r}")
        p = self.pricing
        if p in (Pricing.per_unit, Pricing.package):
            if self.unit_price is None:
                raise PricingError(f"{p} pricing requires unit_price")
            _check_non_negative(self.unit_price, f"{p} unit_price")
            if self.tiers:
                raise PricingError(f"{p} pricing takes no tiers (tiers are for graduated/volume)")
            if p is Pricing.package:
                if self.package_size is None:
                    raise PricingError("package pricing requires package_size")
                _check_decimal(self.package_size, "package_size")
                if self.package_size <= 0:
                    raise PricingError(
                        f"package_size must be greater than 0, got {self.package_size}"
                    )
            elif self.package_size is not None:
                raise PricingError("package_size is only valid for package pricing")
            return
        # graduated / volume
        if self.unit_price is not None:
            raise PricingError(f"{p} pricing takes its prices from tiers, not unit_price")
        if self.package_size is not None:
            raise PricingError("package_size is only valid for package pricing")
        if not isinstance(self.tiers, tuple) or not self.tiers:
            raise PricingError(f"{p} pricing requires a non-empty tuple of tiers")
        previous = _ZERO
        last = len(self.tiers) - 1
        for i, tier in enumerate(self.tiers):
            where = f"{p} tier {i + 1}"
            if not isinstance(tier, Tier):
                raise PricingError(f"{where} must be a Tier, got {type(tier).__name__}")
            _check_non_negative(tier.unit_price, f"{where} unit_price")
            _check_non_negative(tier.flat_fee, f"{where} flat_fee")
            if tier.up_to is None:
                if i != last:
                    raise PricingError(
                        f"{where} is unbounded (up_to=None) but is not the last tier"
                    )
                continue
            if i == last:
                raise PricingError(
                    f"the last {p} tier must be unbounded (up_to=None), got up_to={tier.up_to}"
                )
            _check_decimal(tier.up_to, f"{where} up_to")
            if tier.up_to <= previous:
                raise PricingError(
                    f"{where} up_to ({tier.up_to}) must be greater than "
                    + ("0" if i == 0 else f"the previous tier's ({previous})")
                    + "; tiers must be strictly ascending"
                )
            previous = tier.up_to

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (decimals as strings) that :meth:`from_dict` reads back."""
        return {
            "unit": str(self.unit),
            "pricing": str(self.pricing),
            "unit_price": None if self.unit_price is None else _fmt(self.unit_price),
            "package_size": None if self.package_size is None else _fmt(self.package_size),
            "tiers": [tier.to_dict() for tier in self.tiers],
            "included": _fmt(self.included),
            "model": self.model,
            "variant": self.variant,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PriceComponent:
        """Build and validate a component; decimals may be strings, ints or Decimals, never
        floats. Unknown keys are rejected so that typos do not silently drop a setting."""
        if not isinstance(data, Mapping):
            raise PricingError(f"price component must be an object, got {type(data).__name__}")
        unknown = set(data) - set(_FIELDS)
        if unknown:
            raise PricingError(
                f"price component has unknown fields: {', '.join(sorted(map(str, unknown)))}"
            )
        for key in ("unit", "pricing"):
            if key not in data:
                raise PricingError(f"price component is missing '{key}'")
        try:
            unit = Unit(data["unit"])
        except ValueError:
            raise PricingError(
                f"unit must be one of {', '.join(Unit)}, got {data['unit']!r}"
            ) from None
        try:
            pricing = Pricing(data["pricing"])
        except ValueError:
            raise PricingError(
                f"pricing must be one of {', '.join(Pricing)}, got {data['pricing']!r}"
            ) from None
        raw_tiers = data.get("tiers") or ()
        if isinstance(raw_tiers, str | bytes | Mapping) or not isinstance(raw_tiers, list | tuple):
            raise PricingError(f"tiers must be a list, got {type(raw_tiers).__name__}")
        component = cls(
            unit=unit,
            pricing=pricing,
            unit_price=_optional_decimal(data.get("unit_price"), "unit_price"),
            package_size=_optional_decimal(data.get("package_size"), "package_size"),
            tiers=tuple(Tier.from_dict(t, where=f"tier {i + 1}") for i, t in enumerate(raw_tiers)),
            included=_coerce_decimal(data.get("included", 0), "included"),
            model=data.get("model"),
            variant=data.get("variant"),
        )
        component.validate()
        return component


def _quantity(quantity: object) -> Decimal:
    if isinstance(quantity, int) and not isinstance(quantity, bool):
        quantity = Decimal(quantity)
    return _check_non_negative(quantity, "quantity")


def _billable(component: PriceComponent, quantity: Decimal) -> Decimal:
    with _exact():
        return max(_ZERO, quantity - component.included)


def billable_quantity(component: PriceComponent, quantity: Decimal) -> Decimal:
    """``max(0, quantity - included)``: the quantity left to price after the free quota."""
    _check_non_negative(component.included, "included")
    return _billable(component, _quantity(quantity))


def rate(component: PriceComponent, quantity: Decimal) -> Decimal:
    """The exact, unrounded amount (major currency units) for a period's total ``quantity``.

    The included quota is subtracted first. Round the result -- or the sum of several exact
    amounts on one invoice line -- once, with :func:`to_minor`.
    """
    component.validate()
    q = _billable(component, _quantity(quantity))
    with _exact():
        if component.pricing is Pricing.per_unit:
            assert component.unit_price is not None
            return q * component.unit_price
        if component.pricing is Pricing.package:
            assert component.unit_price is not None and component.package_size is not None
            if q == 0:
                return _ZERO
            # divmod on positive decimals is exact floor division; a started package counts.
            packages, rest = divmod(q, component.package_size)
            if rest:
                packages += 1
            return packages * component.unit_price
        if component.pricing is Pricing.graduated:
            total = _ZERO
            previous = _ZERO
            for tier in component.tiers:
                if q <= previous:
                    break
                top = q if tier.up_to is None else min(q, tier.up_to)
                total += tier.flat_fee + tier.unit_price * (top - previous)
                if tier.up_to is not None:
                    previous = tier.up_to
            return total
        # volume
        if q == 0:
            return _ZERO
        for tier in component.tiers:
            if tier.up_to is None or q <= tier.up_to:
                return tier.flat_fee + tier.unit_price * q
        raise AssertionError("unreachable: validated tiers end with an unbounded tier")


def minor_exponent(currency: str) -> int:
    """Decimal places of ``currency``'s minor unit: 0 (JPY, KRW, ...), 3 (KWD, ...) or 2."""
    if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
        raise PricingError(f"currency must be a three-letter code such as 'usd', got {currency!r}")
    code = currency.lower()
    if code in _ZERO_DECIMAL:
        return 0
    if code in _THREE_DECIMAL:
        return 3
    return 2


def to_minor(amount: Decimal, currency: str) -> int:
    """Round an exact amount once, ``ROUND_HALF_UP``, to an integer of the currency's minor
    unit (cents for USD): ``to_minor(Decimal("4.938"), "usd") == 494``."""
    exponent = minor_exponent(currency)
    if isinstance(amount, int) and not isinstance(amount, bool):
        amount = Decimal(amount)
    amount = _check_decimal(amount, "amount")
    with _exact():
        minor = amount.scaleb(exponent)
        return int(minor.to_integral_value(rounding=ROUND_HALF_UP))


def _unit_name(unit: Unit, count: Decimal | None = None) -> str:
    singular, plural = _UNIT_NAMES[unit]
    return singular if count == _ONE else plural


def _tier_ranges(component: PriceComponent) -> list[str]:
    """Human ranges: "1-5", "6-10", "11+" for whole units; "up to 5", "5-10", "over 10"
    when quantities can be fractional (compute seconds or fractional bounds)."""
    tiers = component.tiers
    if len(tiers) == 1:
        return ["all"]
    bounds = [t.up_to for t in tiers if t.up_to is not None]
    whole = component.unit is not Unit.compute_second and all(
        b == b.to_integral_value() for b in bounds
    )
    ranges: list[str] = []
    previous = _ZERO
    for i, tier in enumerate(tiers):
        if whole:
            start = previous + 1
            if tier.up_to is None:
                ranges.append(f"{_fmt(start)}+")
            elif tier.up_to == start:
                ranges.append(_fmt(start))
            else:
                ranges.append(f"{_fmt(start)}-{_fmt(tier.up_to)}")
        elif tier.up_to is None:
            ranges.append(f"over {_fmt(previous)}")
        elif i == 0:
            ranges.append(f"up to {_fmt(tier.up_to)}")
        else:
            ranges.append(f"{_fmt(previous)}-{_fmt(tier.up_to)}")
        if tier.up_to is not None:
            previous = tier.up_to
    return ranges


def describe(component: PriceComponent) -> str:
    """A short, currency-agnostic description for an invoice line, e.g.
    ``"0.0004 per request"``, ``"package of 1000 requests at 2.50"`` or
    ``"graduated per item: 1-5 at 7, 6-10 at 6.5, 11+ at 6"``, followed by
    ``"(first N included)"`` when part of the usage is free."""
    component.validate()
    unit = component.unit
    if component.pricing is Pricing.per_unit:
        assert component.unit_price is not None
        text = f"{_fmt(component.unit_price)} per {_unit_name(unit, _ONE)}"
    elif component.pricing is Pricing.package:
        assert component.unit_price is not None and component.package_size is not None
        size = component.package_size
        text = f"package of {_fmt(size)} {_unit_name(unit, size)} at {_fmt(component.unit_price)}"
    else:
        parts = []
        for label, tier in zip(_tier_ranges(component), component.tiers, strict=True):
            part = f"{label} at {_fmt(tier.unit_price)}"
            if tier.flat_fee:
                part += f" + {_fmt(tier.flat_fee)} flat"
            parts.append(part)
        text = f"{component.pricing} per {_unit_name(unit, _ONE)}: {', '.join(parts)}"
    if component.included > 0:
        text += f" (first {_shown_quantity(component.included)} included)"
    return text


_SHOWN_PLACES = Decimal("0.000001")
_SHOWN = Context(prec=100)  # wide enough for any bounded quantity; never traps


def _shown_quantity(value: Decimal) -> str:
    """A quantity for a description: at most 6 decimal places (the invoice's quantity
    scale), rounded half up, significant digits only. A prorated included quantity is exact
    to 28 digits in the rating; a description shows ``966.209304``, never all of them."""
    rounded = value.quantize(_SHOWN_PLACES, rounding=ROUND_HALF_UP, context=_SHOWN)
    text = f"{rounded.normalize(context=_SHOWN):f}"
    return "0" if text in ("-0", "0") else text
