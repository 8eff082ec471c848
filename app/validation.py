"""Input types shared by the endpoints, bounded to what the database and ``datetime`` can
hold: a value outside them is a 422 at the door, never an overflow deep in a query."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field

from app.orm.base import as_utc

INT64_MAX = 2**63 - 1

MAX_MODEL_NAME = 128
"""Longest model name a path accepts (the usage ledger's column holds it)."""
MAX_VERSION = 32
"""Longest model version a path or body accepts."""
MAX_PER_MINUTE = 75_059_993
"""The largest per-minute limit the rate limiter keeps exactly (1.25 M per second);
``app.limits.policy`` checks at import that its GCRA arithmetic agrees."""


def _whole_number(value: object) -> object:
    # Lax int parsing reads true as 1 and 2.0 as 2: a boolean or a fraction where a count or
    # an id belongs is a mistake to refuse, not a number. (Digit strings still pass: a path
    # or a query gives every id as text.)
    if isinstance(value, bool | float):
        raise ValueError(f"must be a whole number, not {type(value).__name__} {value!r}")
    return value


WholeNumber = BeforeValidator(_whole_number)

DbId = Annotated[int, WholeNumber, Field(ge=1, le=INT64_MAX)]
"""A row id (BIGINT): a path, query or body id outside 1..2^63-1 is a 422."""

PerMinute = Annotated[int, Field(strict=True, gt=0, le=MAX_PER_MINUTE)]
"""A per-minute rate limit: at most what the limiter keeps exactly (75,059,993, well inside
the INTEGER column)."""

EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def _utc_in_range(value: datetime) -> datetime:
    # Naive input is taken as UTC, as the ledger and /v1/usage always have. The range keeps
    # the arithmetic done on it (default windows, period ends) far from year 1 and 9999.
    try:
        moment = as_utc(value)
    except OverflowError:
        moment = None
    if moment is None or not EARLIEST <= moment < LATEST:
        raise ValueError(f"must be from {EARLIEST:%Y-%m-%d} to before {LATEST:%Y-%m-%d} UTC")
    return moment


_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")


def _iso_8601_only(value: object) -> object:
    # pydantic reads a number, or a string of one, as Unix time (?end=0.5 was 1970): a time
    # must be written as one.
    if isinstance(value, bool | int | float) or (
        isinstance(value, str) and _NUMBER.fullmatch(value)
    ):
        raise ValueError("must be an ISO 8601 date-time (e.g. 2026-01-31T00:00:00Z), not a number")
    return value


Timestamp = Annotated[datetime, BeforeValidator(_iso_8601_only), AfterValidator(_utc_in_range)]
"""An ISO 8601 moment, returned as an aware UTC datetime; without a time zone it is UTC."""


def _storable(value: str) -> str:
    # Postgres text cannot hold NUL, and a lone surrogate (valid in JSON's \u escapes) has no
    # UTF-8 form: neither could be stored, logged or sent back.
    if "\x00" in value:
        raise ValueError("must not contain NUL (\\u0000)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no lone surrogates)") from None
    return value


Text = Annotated[str, AfterValidator(_storable)]
"""A string that can be stored and echoed: no NUL, no lone surrogates (lengths set per field)."""
