"""``api_keys.last_used_at`` without a database write per request.

Authentication notes the time in memory; a background task writes all noted keys in one
executemany UPDATE every ``interval_s`` seconds, and once more at shutdown. A failed write
keeps the times for the next round (the newest time per key wins).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime

from sqlalchemy import bindparam, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.clock import Clock, SystemClock
from app.orm import ApiKey

log = logging.getLogger("tollgate.keys")


class LastUsedTracker:
    def __init__(
        self, engine: AsyncEngine, interval_s: float = 30.0, clock: Clock | None = None
    ) -> None:
        self._engine = engine
        self._clock = clock or SystemClock()
        self._interval = interval_s
        self._seen: dict[int, datetime] = {}
        self._task: asyncio.Task[None] | None = None

    def touch(self, key_id: int) -> None:
        self._seen[key_id] = self._clock.now()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="last-used-flusher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()

    async def flush(self) -> int:
        if not self._seen:
            return 0
        pending, self._seen = self._seen, {}
        stmt = (
            update(ApiKey)
            .where(ApiKey.id == bindparam("key_id"))
            .values(last_used_at=bindparam("used_at"))
            .execution_options(synchronize_session=False)
        )
        try:
            async with self._engine.begin() as conn:
                await conn.execute(stmt, [{"key_id": k, "used_at": t} for k, t in pending.items()])
        except Exception as exc:
            log.warning(
                "last_used_at flush failed; will retry", extra={"error": type(exc).__name__}
            )
            for key_id, used_at in pending.items():
                if key_id not in self._seen or self._seen[key_id] < used_at:
                    self._seen[key_id] = used_at
            return 0
        return len(pending)
