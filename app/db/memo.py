"""Per-database memo for reads of settled data.

Ledger rows are final once they are older than the meter's commit window (a row is committed
within seconds of its ``created_at``; ``SETTLED`` leaves ten minutes): an aggregate over a
time range that ended before ``now - SETTLED`` can never change, so it is computed once per
process and database and kept. Callers choose the settled part of a range
(``settled_before``) and read the rest live, or key a read by a revision of everything it
depends on. Keyed by the engine (weakly: a disposed engine takes its entries with it) and
bounded in size.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from datetime import datetime, timedelta
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

from sqlalchemy.ext.asyncio import AsyncSession

T = TypeVar("T")

SETTLED = timedelta(minutes=10)
_MAX_ENTRIES = 256
_memo: WeakKeyDictionary[Any, dict[Hashable, Any]] = WeakKeyDictionary()


def settled_before(now: datetime) -> datetime:
    """The start of the UTC day of ``now - SETTLED``: every ledger row before it is final."""
    return (now - SETTLED).replace(hour=0, minute=0, second=0, microsecond=0)


async def settled(session: AsyncSession, key: Hashable, compute: Callable[[], Awaitable[T]]) -> T:
    """``compute()``'s result for ``key`` on this session's database, computed once. Only for
    reads of rows that can no longer change, or whose key names their revision."""
    entries = _memo.setdefault(session.get_bind(), {})
    if key in entries:
        value: T = entries[key]
        return value
    value = await compute()
    if len(entries) >= _MAX_ENTRIES:
        entries.clear()
    entries[key] = value
    return value
