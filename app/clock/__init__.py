"""The app's one clock: every "now" that a rule depends on (key expiry and revocation, rotation
grace, the key cache, billing periods and grace, usage timestamps) comes from a ``Clock``.

The lifespan holds one (the system clock unless ``create_app`` is given another) and hands it
to the services that need it; endpoints take it as ``ClockDep`` (``app/clock/deps.py``, kept
apart so that the CLI does not import FastAPI). Tests pass a ``ManualClock`` and move it
forward instead of sleeping.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """Real time shifted by an offset that only tests move: time still flows (rows written
    one after the other keep their order), and ``advance``/``set`` jump it forward or to a
    given instant without waiting."""

    def __init__(self, start: datetime | None = None) -> None:
        self._offset = timedelta(0)
        if start is not None:
            self.set(start)

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset

    def advance(self, delta: timedelta | None = None, *, seconds: float = 0) -> datetime:
        """Move the clock forward by ``delta`` plus ``seconds``; returns the new now."""
        step = (delta or timedelta(0)) + timedelta(seconds=seconds)
        if step < timedelta(0):
            raise ValueError("a clock only moves forward")
        self._offset += step
        return self.now()

    def set(self, when: datetime) -> None:
        """Make ``now()`` read ``when`` (aware), then flow on from there."""
        if when.tzinfo is None:
            raise ValueError("the clock reads aware UTC datetimes; got a naive one")
        self._offset = when - datetime.now(UTC)
