"""Background loops: one asyncio task that runs a step over and over until stopped.

Every long-lived task in the service (the meter's lanes, the batchers, the last-used flusher,
the spend reconciler, the month-to-date gauges) is one of these, so start, stop and failure
handling are written once:
``stop()`` cancels the task and waits for it (idempotent, safe before ``start``), and an
exception from a step is logged and the loop goes on, so one bad step never silently ends a
loop that the service depends on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("tollgate.tasks")


class BackgroundLoop:
    """Run ``step`` repeatedly in a task named ``name``.

    ``interval_s`` > 0 makes it periodic (sleep, then step; ``step_first`` steps once before
    the first sleep); with 0 the step paces itself (it awaits its own work, e.g. a queue).
    """

    def __init__(
        self,
        name: str,
        step: Callable[[], Awaitable[object]],
        *,
        interval_s: float = 0.0,
        step_first: bool = False,
    ) -> None:
        self.name = name
        self._step = step
        self._interval_s = interval_s
        self._step_first = step_first
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        """Cancel the loop and wait until it has ended (a step in progress is cancelled)."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        interval, step = self._interval_s, self._step
        skip_sleep = self._step_first
        while True:
            if interval > 0 and not skip_sleep:
                await asyncio.sleep(interval)
            skip_sleep = False
            try:
                await step()
            except Exception as exc:
                log.warning(
                    "background step failed",
                    extra={"task": self.name, "error": type(exc).__name__},
                    exc_info=True,
                )
                if interval <= 0:
                    await asyncio.sleep(0.1)  # a failing self-paced step must not spin
