"""Dynamic batching: one batcher per served model version.

Requests are decoded and validated on their own, then queued here. The batcher's loop takes
everything waiting (up to ``max_items`` items; optionally waiting up to ``max_delay_s`` for
more), runs one forward pass for all of it in the worker pool, and hands each request its
slice. Like the meter's group commit, the batch grows with load by itself: while one forward
runs, the next batch gathers. Each request's ``compute_us`` is its share (by items) of the
batch's forward time. The queue is bounded: when full, callers get 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from app.errors import ServiceUnavailable
from app.inference.predictor import Array, Prediction, Predictor
from app.observability.metrics import Metrics, metric_variant
from app.tasks import BackgroundLoop


class ModelOverloaded(ServiceUnavailable):
    type = "model_overloaded"


@dataclass(slots=True)
class _Job:
    batch: Array
    future: asyncio.Future[Prediction]
    queued_at: float


class Batcher:
    def __init__(
        self,
        predictor: Predictor,
        executor: Executor,
        metrics: Metrics,
        *,
        max_items: int,
        max_delay_s: float,
        queue_size: int,
    ) -> None:
        self._predictor = predictor
        self._executor = executor
        self._max_items = max_items
        self._max_delay_s = max_delay_s
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=queue_size)
        self._carry: _Job | None = None
        m = predictor.manifest
        self._loop = BackgroundLoop(f"batcher-{m.ref}", self._run_next_batch)
        self._in_flight = 0  # submitted and not yet answered
        self._stopped = False
        self._idle = asyncio.Event()
        self._idle.set()
        labels = (m.name, metric_variant(m.variant), m.version)
        self._batch_size = metrics.batch_size.labels(*labels)
        self._queue_time = metrics.queue_seconds.labels(*labels)

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        self._stopped = True
        await self._loop.stop()
        leftovers = [self._carry] if self._carry else []
        while not self._queue.empty():
            leftovers.append(self._queue.get_nowait())
        for job in leftovers:
            if not job.future.done():
                job.future.set_exception(ModelOverloaded("the model is shutting down"))

    async def submit(self, batch: Array) -> Prediction:
        if self._stopped:
            # A request that found the model before an unload and submits after it (it was
            # still reading its body): nothing would ever answer it here.
            raise ModelOverloaded("the model was unloaded while this request arrived; retry")
        loop = asyncio.get_running_loop()
        job = _Job(batch, loop.create_future(), time.perf_counter())
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            raise ModelOverloaded("the model's queue is full; retry shortly") from None
        self._in_flight += 1
        self._idle.clear()
        try:
            return await job.future
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    @property
    def max_items(self) -> int:
        return self._max_items

    @property
    def max_delay_s(self) -> float:
        return self._max_delay_s

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def drain(self, timeout_s: float = 30.0) -> None:
        """Wait until every submitted request has its answer (used before unloading)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)

    async def _next_batch(self) -> list[_Job]:
        first = self._carry or await self._queue.get()
        self._carry = None
        jobs, items = [first], len(first.batch)
        deadline = time.perf_counter() + self._max_delay_s
        while items < self._max_items:
            try:
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            if items + len(job.batch) > self._max_items:
                self._carry = job  # starts the next batch
                break
            jobs.append(job)
            items += len(job.batch)
        return jobs

    async def _run_next_batch(self) -> None:
        """The loop's step: one forward pass for whatever is queued."""
        jobs = await self._next_batch()
        started = time.perf_counter()
        for job in jobs:
            self._queue_time.observe(started - job.queued_at)
        try:
            results = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._execute, [job.batch for job in jobs]
            )
        except Exception as exc:
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        for job, result in zip(jobs, results, strict=True):
            if not job.future.done():  # the caller may have gone away
                job.future.set_result(result)

    def _execute(self, batches: list[Array]) -> list[Prediction]:
        """Worker thread: one forward for all requests, then each request's slice."""
        sizes = [len(b) for b in batches]
        total = sum(sizes)
        self._batch_size.observe(total)
        merged = batches[0] if len(batches) == 1 else np.concatenate(batches)
        started = time.perf_counter_ns()
        outputs = self._predictor.predict(merged)
        forward_us = (time.perf_counter_ns() - started) / 1000
        results, offset = [], 0
        for n in sizes:
            part = outputs[offset : offset + n]
            offset += n
            results.append(
                Prediction(
                    self._predictor.encode(part),
                    items=n,
                    compute_us=round(forward_us * n / total),
                    raw=part,
                )
            )
        return results
