"""Declarative base, naming convention, the UTC timestamp type and the exact numeric type."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Context, Decimal
from typing import Any

from sqlalchemy import BigInteger, DateTime, Integer, MetaData, Numeric, String, TypeDecorator
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeEngine

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# 64-bit ids on Postgres; SQLite only auto-increments an ``INTEGER PRIMARY KEY``.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """``TIMESTAMP WITH TIME ZONE`` that always hands back aware UTC datetimes.

    SQLite has no time zones and returns naive values; they are stored as UTC and re-tagged.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return as_utc(value)


# Room for any NUMERIC column's digits when rounding to its scale.
WIDE = Context(prec=100)


class ExactNumeric(TypeDecorator[Decimal]):
    """``NUMERIC(precision, scale)`` that is exact on SQLite too.

    SQLite has no decimal type: a NUMERIC column keeps a value as a double (about 15
    significant digits), so 12345678901234.1234567891 would read back as 12345678901234.123.
    On SQLite the value is therefore stored as its fixed-point text in a VARCHAR column;
    Postgres keeps its NUMERIC. On both a value is rounded to ``scale`` places (half up, as
    Postgres does), and one that does not fit the precision is refused, never truncated.
    """

    impl = Numeric
    cache_ok = True

    def __init__(self, precision: int, scale: int) -> None:
        super().__init__(precision=precision, scale=scale, asdecimal=True)
        self.precision = precision
        self.scale = scale
        self._quantum = Decimal(1).scaleb(-scale)
        self._limit = Decimal(10) ** (precision - scale)

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            # Sign, digits and the point: wide enough for every value that fits.
            return dialect.type_descriptor(String(self.precision + 2))
        return dialect.type_descriptor(Numeric(self.precision, self.scale, asdecimal=True))

    def fits(self, number: Decimal) -> bool:
        """Whether ``number`` is finite and below 10^(precision - scale) in magnitude."""
        return number.is_finite() and number.copy_abs() < self._limit

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, float | bool) or not isinstance(value, Decimal | int):
            raise TypeError(f"exact numeric columns take a Decimal or an int, got {value!r}")
        number = Decimal(value)
        if self.fits(number):  # rounded as Postgres would, which may carry it past the limit
            number = number.quantize(self._quantum, ROUND_HALF_UP, WIDE)
        if not self.fits(number):
            raise ValueError(f"{value} does not fit NUMERIC({self.precision}, {self.scale})")
        if dialect.name != "sqlite":
            return number
        return f"{number.copy_abs() if number.is_zero() else number:f}"  # never "-0"

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None or isinstance(value, Decimal):
            return value
        # SQLite: the text written above; a double or an integer only in a row written
        # before the column held text (repr is the double's shortest exact spelling).
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
        return number.quantize(self._quantum, context=WIDE) if self.fits(number) else number


def as_utc(value: datetime) -> datetime:
    """Aware UTC; a naive value is taken to be UTC already."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
