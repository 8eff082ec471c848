"""Pure unit tests for the exact pricing engine (no database, no app)."""

from __future__ import annotations

import json
from decimal import Decimal, localcontext
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.money.pricing import (
    PriceComponent,
    Pricing,
    PricingError,
    Tier,
    Unit,
    billable_quantity,
    describe,
    minor_exponent,
    rate,
    to_minor,
)

D = Decimal
PROPS = settings(max_examples=200, deadline=None)

# Stripe's documented tier table: 1-5 at 7, 6-10 at 6.50, 11+ at 6.
STRIPE_TIERS = (Tier(D(5), D(7)), Tier(D(10), D("6.50")), Tier(None, D(6)))


def per_unit(price: str, *, included: str = "0", unit: Unit = Unit.request) -> PriceComponent:
    return PriceComponent(unit, Pricing.per_unit, unit_price=D(price), included=D(included))


def package(price: str, size: str, *, included: str = "0") -> PriceComponent:
    return PriceComponent(
        Unit.request,
        Pricing.package,
        unit_price=D(price),
        package_size=D(size),
        included=D(included),
    )


def tiered(
    pricing: Pricing,
    tiers: tuple[Tier, ...] = STRIPE_TIERS,
    *,
    included: str = "0",
    unit: Unit = Unit.item,
) -> PriceComponent:
    return PriceComponent(unit, pricing, tiers=tiers, included=D(included))


# --- Stripe's documented example -------------------------------------------------------------


@pytest.mark.parametrize(
    ("pricing", "quantity", "expected"),
    [
        (Pricing.volume, 6, "39.00"),
        (Pricing.graduated, 6, "41.50"),
        (Pricing.volume, 20, "120.00"),
        (Pricing.graduated, 20, "127.50"),
    ],
)
def test_stripe_documented_example(pricing: Pricing, quantity: int, expected: str) -> None:
    amount = rate(tiered(pricing), D(quantity))
    assert amount == D(expected)
    assert to_minor(amount, "usd") == int(D(expected) * 100)


# --- per unit --------------------------------------------------------------------------------


def test_per_unit_fraction_of_a_cent() -> None:
    amount = rate(per_unit("0.0004"), D(12345))
    assert amount == D("4.938")
    assert to_minor(amount, "usd") == 494


def test_per_unit_included_and_zero() -> None:
    c = per_unit("0.01", included="1000")
    assert rate(c, D(0)) == 0
    assert rate(c, D(999)) == 0
    assert rate(c, D(1000)) == 0
    assert rate(c, D(1001)) == D("0.01")
    assert rate(c, D(2500)) == D("15.00")


def test_per_unit_fractional_compute_seconds() -> None:
    c = per_unit("0.00002", included="0.5", unit=Unit.compute_second)
    assert rate(c, D("12.75")) == D("0.000245")  # (12.75 - 0.5) * 0.00002
    assert rate(c, D("0.25")) == 0


def test_billable_quantity() -> None:
    c = per_unit("1", included="10")
    assert billable_quantity(c, D(4)) == 0
    assert billable_quantity(c, D(10)) == 0
    assert billable_quantity(c, D("12.5")) == D("2.5")
    assert billable_quantity(per_unit("1"), D(7)) == 7


def test_int_quantity_accepted_but_not_float_or_negative() -> None:
    c = per_unit("0.5")
    assert rate(c, 3) == D("1.5")  # type: ignore[arg-type]
    with pytest.raises(PricingError, match="float"):
        rate(c, 3.0)  # type: ignore[arg-type]
    with pytest.raises(PricingError, match="negative"):
        rate(c, D(-1))
    with pytest.raises(PricingError, match="finite"):
        rate(c, D("NaN"))


# --- package ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [(0, "0"), (1, "2.50"), (1000, "2.50"), (1001, "5.00"), (2000, "5.00"), (2001, "7.50")],
)
def test_package_rounds_packages_up(quantity: int, expected: str) -> None:
    assert rate(package("2.50", "1000"), D(quantity)) == D(expected)


def test_package_included_and_fractional() -> None:
    c = package("2.50", "1000", included="500")
    assert rate(c, D(500)) == 0
    assert rate(c, D(1500)) == D("2.50")
    assert rate(c, D(1501)) == D("5.00")
    hourly = PriceComponent(
        Unit.compute_second, Pricing.package, unit_price=D("0.90"), package_size=D(3600)
    )
    assert rate(hourly, D("0.001")) == D("0.90")
    assert rate(hourly, D("3600.0")) == D("0.90")
    assert rate(hourly, D("3600.001")) == D("1.80")
    # Non-terminating ratios (1/3 package) still compute exactly.
    thirds = PriceComponent(Unit.item, Pricing.package, unit_price=D(1), package_size=D(3))
    assert rate(thirds, D(1)) == 1
    assert rate(thirds, D(4)) == 2


# --- volume and graduated --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [(0, "0"), (1, "7"), (5, "35"), (6, "39.00"), (10, "65.00"), (11, "66")],
)
def test_volume_small_cases(quantity: int, expected: str) -> None:
    assert rate(tiered(Pricing.volume), D(quantity)) == D(expected)


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [(0, "0"), (1, "7"), (5, "35"), (6, "41.50"), (10, "67.50"), (11, "73.50")],
)
def test_graduated_small_cases(quantity: int, expected: str) -> None:
    assert rate(tiered(Pricing.graduated), D(quantity)) == D(expected)


def test_tiers_apply_to_billable_quantity() -> None:
    # 3 free, so 9 used -> 6 billable.
    assert rate(tiered(Pricing.graduated, included="3"), D(9)) == D("41.50")
    assert rate(tiered(Pricing.volume, included="3"), D(9)) == D("39.00")
    assert rate(tiered(Pricing.volume, included="3"), D(3)) == 0


def test_flat_fees() -> None:
    tiers = (Tier(D(10), D(0), D(5)), Tier(None, D(1), D(2)))
    # graduated: the first tier's fee once any usage exists, the second's once past 10.
    assert rate(tiered(Pricing.graduated, tiers), D(0)) == 0
    assert rate(tiered(Pricing.graduated, tiers), D(1)) == 5
    assert rate(tiered(Pricing.graduated, tiers), D(10)) == 5
    assert rate(tiered(Pricing.graduated, tiers), D(12)) == 5 + 2 + 2
    # volume: only the matching tier's fee and price, for the whole quantity.
    assert rate(tiered(Pricing.volume, tiers), D(0)) == 0
    assert rate(tiered(Pricing.volume, tiers), D(10)) == 5
    assert rate(tiered(Pricing.volume, tiers), D(12)) == 2 + 12


def test_graduated_fractional_compute_seconds() -> None:
    tiers = (Tier(D("60"), D("0.001")), Tier(None, D("0.0005")))
    c = tiered(Pricing.graduated, tiers, included="0.5", unit=Unit.compute_second)
    # billable 90.25: 60 * 0.001 + 30.25 * 0.0005
    assert rate(c, D("90.75")) == D("0.075125")
    assert rate(c, D("30.5")) == D("0.030")
    v = tiered(Pricing.volume, tiers, unit=Unit.compute_second)
    assert rate(v, D("60")) == D("0.060")
    assert rate(v, D("60.5")) == D("0.03025")


# --- to_minor --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("0.005", "usd", 1),
        ("0.0049999", "usd", 0),
        ("0.015", "usd", 2),
        ("0.025", "usd", 3),  # half-up, not banker's rounding (which gives 2)
        ("4.938", "USD", 494),
        ("10", "eur", 1000),
        ("0", "gbp", 0),
        ("-0.005", "usd", -1),  # halves go away from zero
        ("123.5", "jpy", 124),
        ("123.49", "JPY", 123),
        ("1000", "krw", 1000),
        ("1.2345", "kwd", 1235),
        ("1.2344", "kwd", 1234),
        ("2", "BHD", 2000),
    ],
)
def test_to_minor(amount: str, currency: str, expected: int) -> None:
    assert to_minor(D(amount), currency) == expected


def test_minor_exponent() -> None:
    zero = ["bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga"]
    zero += ["pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"]
    assert all(minor_exponent(c) == 0 for c in zero)
    assert all(minor_exponent(c.upper()) == 3 for c in ["bhd", "jod", "kwd", "omr", "tnd"])
    assert all(minor_exponent(c) == 2 for c in ["usd", "eur", "gbp", "Cad", "chf"])


@pytest.mark.parametrize("currency", ["", "us", "usdd", "u$d", "12x", "ÜSD", " usd", "usd\n", 840])
def test_bad_currency_raises(currency: Any) -> None:
    with pytest.raises(PricingError, match="currency"):
        to_minor(D(1), currency)


def test_to_minor_rejects_float_and_non_finite() -> None:
    with pytest.raises(PricingError, match="float"):
        to_minor(0.1, "usd")  # type: ignore[arg-type]
    with pytest.raises(PricingError):
        to_minor(D("Infinity"), "usd")


# --- validation ------------------------------------------------------------------------------

INVALID: list[tuple[str, PriceComponent]] = [
    ("per_unit without price", PriceComponent(Unit.request, Pricing.per_unit)),
    ("negative unit price", per_unit("-0.01")),
    ("negative included", per_unit("1", included="-1")),
    ("NaN price", PriceComponent(Unit.request, Pricing.per_unit, unit_price=D("NaN"))),
    ("float price", PriceComponent(Unit.request, Pricing.per_unit, unit_price=0.5)),  # type: ignore[arg-type]
    (
        "tiers on per_unit",
        PriceComponent(Unit.request, Pricing.per_unit, unit_price=D(1), tiers=STRIPE_TIERS),
    ),
    (
        "package_size on per_unit",
        PriceComponent(Unit.request, Pricing.per_unit, unit_price=D(1), package_size=D(10)),
    ),
    ("package without size", PriceComponent(Unit.request, Pricing.package, unit_price=D(1))),
    ("package without price", PriceComponent(Unit.request, Pricing.package, package_size=D(10))),
    ("package size zero", package("1", "0")),
    ("package size negative", package("1", "-5")),
    ("package negative price", package("-1", "10")),
    (
        "tiers on package",
        PriceComponent(
            Unit.request,
            Pricing.package,
            unit_price=D(1),
            package_size=D(10),
            tiers=STRIPE_TIERS,
        ),
    ),
    ("graduated without tiers", PriceComponent(Unit.item, Pricing.graduated)),
    ("volume without tiers", PriceComponent(Unit.item, Pricing.volume)),
    (
        "unit_price on graduated",
        PriceComponent(Unit.item, Pricing.graduated, unit_price=D(1), tiers=STRIPE_TIERS),
    ),
    (
        "package_size on volume",
        PriceComponent(Unit.item, Pricing.volume, package_size=D(1), tiers=STRIPE_TIERS),
    ),
    ("last tier bounded", tiered(Pricing.graduated, (Tier(D(5), D(1)), Tier(D(10), D(1))))),
    ("only tier bounded", tiered(Pricing.volume, (Tier(D(5), D(1)),))),
    ("unbounded tier not last", tiered(Pricing.volume, (Tier(None, D(1)), Tier(None, D(2))))),
    (
        "tiers descending",
        tiered(Pricing.graduated, (Tier(D(10), D(1)), Tier(D(5), D(1)), Tier(None, D(1)))),
    ),
    (
        "tiers repeated bound",
        tiered(Pricing.graduated, (Tier(D(5), D(1)), Tier(D(5), D(1)), Tier(None, D(1)))),
    ),
    ("first bound zero", tiered(Pricing.volume, (Tier(D(0), D(1)), Tier(None, D(1))))),
    ("first bound negative", tiered(Pricing.volume, (Tier(D(-1), D(1)), Tier(None, D(1))))),
    ("negative tier price", tiered(Pricing.graduated, (Tier(None, D(-1)),))),
    ("negative tier fee", tiered(Pricing.graduated, (Tier(None, D(1), D(-1)),))),
    ("empty model", PriceComponent(Unit.request, Pricing.per_unit, unit_price=D(1), model="")),
    ("unit not a Unit", PriceComponent("request", Pricing.per_unit, unit_price=D(1))),  # type: ignore[arg-type]
]


@pytest.mark.parametrize("component", [c for _, c in INVALID], ids=[n for n, _ in INVALID])
def test_invalid_components_raise(component: PriceComponent) -> None:
    with pytest.raises(PricingError):
        component.validate()
    with pytest.raises(PricingError):
        rate(component, D(1))


def test_pricing_error_is_value_error_with_clear_message() -> None:
    assert issubclass(PricingError, ValueError)
    with pytest.raises(PricingError, match=r"tier 2 up_to \(5\) must be greater"):
        tiered(
            Pricing.graduated, (Tier(D(10), D(1)), Tier(D(5), D(1)), Tier(None, D(1)))
        ).validate()
    with pytest.raises(PricingError, match="last graduated tier must be unbounded"):
        tiered(Pricing.graduated, (Tier(D(5), D(1)),)).validate()
    with pytest.raises(PricingError, match="package_size must be greater than 0"):
        package("1", "0").validate()


# --- serialisation ---------------------------------------------------------------------------


def test_to_dict_is_json_safe_and_round_trips() -> None:
    c = PriceComponent(
        Unit.item,
        Pricing.graduated,
        tiers=(Tier(D(5), D(7), D("0.50")), Tier(None, D("6.50"))),
        included=D(2),
        model="digits",
        variant="int8",
    )
    data = c.to_dict()
    assert data["tiers"][0] == {"up_to": "5", "unit_price": "7", "flat_fee": "0.50"}
    assert data["tiers"][1]["up_to"] is None
    assert PriceComponent.from_dict(json.loads(json.dumps(data))) == c


def test_from_dict_accepts_strings_and_ints() -> None:
    c = PriceComponent.from_dict(
        {"unit": "request", "pricing": "package", "unit_price": "2.50", "package_size": 1000}
    )
    assert c == package("2.50", "1000")
    t = PriceComponent.from_dict(
        {
            "unit": "item",
            "pricing": "volume",
            "tiers": [{"up_to": 5, "unit_price": "7"}, {"up_to": None, "unit_price": 6}],
        }
    )
    assert t.tiers == (Tier(D(5), D(7)), Tier(None, D(6)))


@pytest.mark.parametrize(
    "data",
    [
        {"unit": "request", "pricing": "per_unit", "unit_price": 0.0004},
        {"unit": "request", "pricing": "per_unit", "unit_price": "1", "included": 10.0},
        {"unit": "request", "pricing": "package", "unit_price": "1", "package_size": 10.5},
        {"unit": "item", "pricing": "volume", "tiers": [{"up_to": None, "unit_price": 6.5}]},
        {"unit": "item", "pricing": "volume", "tiers": [{"up_to": 5.0}, {"up_to": None}]},
    ],
)
def test_from_dict_rejects_floats(data: dict[str, Any]) -> None:
    with pytest.raises(PricingError, match="float"):
        PriceComponent.from_dict(data)


@pytest.mark.parametrize(
    "data",
    [
        {"pricing": "per_unit", "unit_price": "1"},
        {"unit": "request", "unit_price": "1"},
        {"unit": "token", "pricing": "per_unit", "unit_price": "1"},
        {"unit": "request", "pricing": "tiered", "unit_price": "1"},
        {"unit": "request", "pricing": "per_unit", "unit_price": "abc"},
        {"unit": "request", "pricing": "per_unit", "unit_price": True},
        {"unit": "request", "pricing": "per_unit", "unit_price": "1", "inclued": "5"},
        {"unit": "request", "pricing": "per_unit"},
        {"unit": "request", "pricing": "per_unit", "unit_price": "-1"},
        {"unit": "item", "pricing": "volume", "tiers": "5"},
        {"unit": "item", "pricing": "volume", "tiers": [{"unit_price": "1"}]},
        {"unit": "item", "pricing": "volume", "tiers": [{"up_to": None, "price": "1"}]},
    ],
)
def test_from_dict_rejects_bad_input(data: dict[str, Any]) -> None:
    with pytest.raises(PricingError):
        PriceComponent.from_dict(data)


# --- describe --------------------------------------------------------------------------------


def test_describe() -> None:
    assert describe(per_unit("0.0004")) == "0.0004 per request"
    assert describe(package("2.50", "1000")) == "package of 1000 requests at 2.50"
    graduated = tiered(
        Pricing.graduated, (Tier(D(5), D(7)), Tier(D(10), D("6.5")), Tier(None, D(6)))
    )
    assert describe(graduated) == "graduated per item: 1-5 at 7, 6-10 at 6.5, 11+ at 6"
    assert describe(tiered(Pricing.volume, included="3")) == (
        "volume per item: 1-5 at 7, 6-10 at 6.50, 11+ at 6 (first 3 included)"
    )
    assert describe(per_unit("0.01", included="1000")) == "0.01 per request (first 1000 included)"
    seconds = tiered(
        Pricing.graduated,
        (Tier(D(60), D("0.001"), D(1)), Tier(None, D("0.0005"))),
        unit=Unit.compute_second,
    )
    assert describe(seconds) == (
        "graduated per compute second: up to 60 at 0.001 + 1 flat, over 60 at 0.0005"
    )
    assert describe(tiered(Pricing.volume, (Tier(None, D(2)),))) == "volume per item: all at 2"


# --- properties ------------------------------------------------------------------------------

prices = st.decimals(min_value=0, max_value=1000, places=4)
whole = st.integers(min_value=0, max_value=10**6).map(Decimal)
fractional = st.decimals(min_value=0, max_value=10**6, places=3)
quantities = st.one_of(whole, fractional)


@st.composite
def tier_tables(draw: st.DrawFn) -> tuple[Tier, ...]:
    steps = draw(
        st.lists(
            st.one_of(
                st.integers(min_value=1, max_value=10_000).map(Decimal),
                st.decimals(min_value="0.001", max_value=10_000, places=3),
            ),
            max_size=5,
        )
    )
    tiers: list[Tier] = []
    bound = D(0)
    for step in steps:
        bound += step
        tiers.append(Tier(bound, draw(prices), draw(prices)))
    tiers.append(Tier(None, draw(prices), draw(prices)))
    return tuple(tiers)


@st.composite
def components(draw: st.DrawFn) -> PriceComponent:
    pricing = draw(st.sampled_from(Pricing))
    unit = draw(st.sampled_from(Unit))
    included = draw(st.one_of(st.just(D(0)), quantities))
    if pricing is Pricing.per_unit:
        return PriceComponent(unit, pricing, unit_price=draw(prices), included=included)
    if pricing is Pricing.package:
        size = draw(st.decimals(min_value="0.001", max_value=10**5, places=3))
        return PriceComponent(
            unit, pricing, unit_price=draw(prices), package_size=size, included=included
        )
    return PriceComponent(unit, pricing, tiers=draw(tier_tables()), included=included)


@PROPS
@given(tiers=tier_tables(), a=quantities, b=quantities, included=quantities)
def test_graduated_never_decreases(
    tiers: tuple[Tier, ...], a: Decimal, b: Decimal, included: Decimal
) -> None:
    low, high = sorted((a, b))
    c = PriceComponent(Unit.compute_second, Pricing.graduated, tiers=tiers, included=included)
    assert rate(c, low) <= rate(c, high)


@PROPS
@given(price=prices, fee=prices, q=quantities, included=quantities)
def test_single_unbounded_volume_tier_is_per_unit(
    price: Decimal, fee: Decimal, q: Decimal, included: Decimal
) -> None:
    volume = PriceComponent(
        Unit.item, Pricing.volume, tiers=(Tier(None, price, fee),), included=included
    )
    plain = PriceComponent(Unit.item, Pricing.per_unit, unit_price=price, included=included)
    expected = rate(plain, q) + (fee if billable_quantity(plain, q) > 0 else 0)
    assert rate(volume, q) == expected
    graduated = PriceComponent(
        Unit.item, Pricing.graduated, tiers=(Tier(None, price, fee),), included=included
    )
    assert rate(graduated, q) == expected


@PROPS
@given(price=prices, q=whole, included=whole)
def test_package_of_one_is_per_unit(price: Decimal, q: Decimal, included: Decimal) -> None:
    pack = PriceComponent(
        Unit.request, Pricing.package, unit_price=price, package_size=D(1), included=included
    )
    plain = PriceComponent(Unit.request, Pricing.per_unit, unit_price=price, included=included)
    assert rate(pack, q) == rate(plain, q)


@PROPS
@given(price=prices, q1=quantities, q2=quantities)
def test_per_unit_is_linear(price: Decimal, q1: Decimal, q2: Decimal) -> None:
    c = PriceComponent(Unit.compute_second, Pricing.per_unit, unit_price=price)
    assert rate(c, q1 + q2) == rate(c, q1) + rate(c, q2)


def test_rounding_happens_once_per_line() -> None:
    c = per_unit("0.004")
    exact = rate(c, D(3))
    assert exact == D("0.012")
    assert to_minor(exact, "usd") == 1  # the line: one rounding of the exact total
    assert sum(to_minor(rate(c, D(1)), "usd") for _ in range(3)) == 0  # per-unit rounding: wrong


@PROPS
@given(
    price=st.decimals(min_value=0, max_value=1, places=6),
    n=st.integers(min_value=1, max_value=500),
    currency=st.sampled_from(["usd", "jpy", "kwd"]),
)
def test_single_rounding_error_is_at_most_half_a_minor_unit(
    price: Decimal, n: int, currency: str
) -> None:
    c = per_unit(str(price))
    line = to_minor(rate(c, D(n)), currency)
    scale = D(10) ** minor_exponent(currency)
    part = rate(c, D(1))
    exact_parts = sum((part for _ in range(n)), D(0))
    assert line == to_minor(exact_parts, currency)  # sum exact parts, then round once
    assert abs(D(line) - exact_parts * scale) <= D("0.5")
    per_unit_rounded = n * to_minor(part, currency)
    # Rounding each unit can only be worse (its error grows with n); never better.
    assert abs(D(per_unit_rounded) - exact_parts * scale) >= abs(D(line) - exact_parts * scale)


@PROPS
@given(component=components(), q=quantities)
def test_rate_is_never_negative_and_round_trips(component: PriceComponent, q: Decimal) -> None:
    assert rate(component, q) >= 0
    assert PriceComponent.from_dict(json.loads(json.dumps(component.to_dict()))) == component
    assert describe(component)


def test_never_silently_rounds() -> None:
    # 150 + 150 significant digits exceed the exact context: raise rather than round.
    c = per_unit("0." + "3" * 150)
    with pytest.raises(PricingError, match="exactly"):
        rate(c, D("1" * 150))
    with localcontext(prec=400):
        assert rate(c, D("1" * 40)) == D("0." + "3" * 150) * D("1" * 40)
