"""Warm-up at load time, so that no customer pays for it.

A freshly built module is slow on its first calls: TorchScript's profiling executor records
a couple of runs before it specializes and optimizes the graph, a new batch shape makes it
(and oneDNN/FBGEMM kernels, for the int8 variant) plan again, and the allocator grows its
pools on the first large batch. An admin saw the first call after a load take 155 ms of
compute (issue 16), and compute time is billed (``compute_us`` is the request's share of its
forward pass). So the load runs these forwards itself, on zeros, before the model is added to
the registry: never through the batcher, the meter or the metrics, so they are neither billed
nor counted. The shapes depend only on the batch size, so zeros warm what real inputs use.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt


class Warmable(Protocol):
    """What warm-up needs of a predictor (``app.inference.predictor.Predictor``, which
    calls :func:`warm_up` from its ``load``: a Protocol keeps the import one-way)."""

    @property
    def max_batch_items(self) -> int: ...

    @property
    def item_shape(self) -> tuple[int, ...]: ...

    def predict(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]: ...


# Forwards per batch size: the profiling executor optimizes after its profiled runs (one or
# two, by torch version); the third runs the optimized graph once more.
RUNS_PER_SIZE = 3
# Besides batch 1 and the largest batch: one size in between, so a batch of a few items
# (the usual dynamic batch under load) does not plan from scratch either.
MIDDLE_BATCH = 8


def warm_up_sizes(max_batch_items: int) -> tuple[int, ...]:
    """The batch sizes warmed, smallest first: 1, a small batch, the largest batch."""
    return tuple(sorted({1, min(MIDDLE_BATCH, max_batch_items), max_batch_items}))


def warm_up(predictor: Warmable) -> None:
    """Run :data:`RUNS_PER_SIZE` forwards at each of :func:`warm_up_sizes`, in the loading
    thread (the event loop keeps serving the models already loaded)."""
    for size in warm_up_sizes(predictor.max_batch_items):
        batch = np.zeros((size, *predictor.item_shape), dtype=np.float32)
        for _ in range(RUNS_PER_SIZE):
            predictor.predict(batch)
