"""Billing periods: calendar months in UTC, written ``YYYY-MM``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from app.errors import Unprocessable
from app.validation import EARLIEST, LATEST

_PERIOD = re.compile(r"([0-9]{4})-(0[1-9]|1[0-2])")
# Every period, its end included, stays inside the range the API accepts for a moment.
_FIRST_YEAR, _LAST_YEAR = EARLIEST.year, LATEST.year - 1


class InvalidPeriod(Unprocessable):
    type = "invalid_period"


@dataclass(frozen=True, slots=True)
class Period:
    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> Period:
        m = _PERIOD.fullmatch(text)
        if not m:
            raise InvalidPeriod(f"period must be YYYY-MM, got {text!r}")
        if not _FIRST_YEAR <= int(m[1]) <= _LAST_YEAR:
            raise InvalidPeriod(
                f"period must be from {_FIRST_YEAR}-01 to {_LAST_YEAR}-12, got {text!r}"
            )
        return cls(int(m[1]), int(m[2]))

    @classmethod
    def containing(cls, moment: datetime) -> Period:
        moment = moment.astimezone(UTC)
        return cls(moment.year, moment.month)

    @property
    def start(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        return self.next().start

    def next(self) -> Period:
        return Period(self.year + self.month // 12, self.month % 12 + 1)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"
