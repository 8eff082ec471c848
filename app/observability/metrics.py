"""Prometheus metrics, held in a per-app registry created in the lifespan.

Labels are model, variant, version, device, unit and status only: never an API key or a
customer. ``variant`` is the variant served (``int8``, ``pruned``, ...) and empty for the base
model: Prometheus treats an empty label as an absent one, so ``{variant=""}`` selects the base
models and ``sum by (model)`` adds every variant of a model together.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from functools import partial

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    multiprocess,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from app.observability.gpu import GpuCollector

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def multiprocess_dir() -> str | None:
    """Set (PROMETHEUS_MULTIPROC_DIR) when several worker processes share one /metrics."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


_WORKER_FILE = re.compile(r"_(\d+)\.db$")


class WorkerProcessCollector(Collector):
    """``process_*`` (CPU seconds, resident memory, open fds, ...) of every worker that
    writes to the multiprocess directory, one series per worker (label ``pid``):
    prometheus-client's ProcessCollector reads only the process that answers the scrape."""

    def __init__(self, directory: str) -> None:
        self._directory = directory

    def _pids(self) -> set[int]:
        pids = {os.getpid()}
        for name in os.listdir(self._directory):
            if m := _WORKER_FILE.search(name):
                pids.add(int(m.group(1)))
        return pids

    def collect(self) -> Iterable[Metric]:
        merged: dict[str, Metric] = {}
        for pid in sorted(self._pids()):
            # A dead worker's /proc entry is gone: its collector yields nothing.
            one = ProcessCollector(pid=partial(int, pid), registry=None)
            for metric in one.collect():
                family = merged.setdefault(
                    metric.name, Metric(metric.name, metric.documentation, metric.type)
                )
                for sample in metric.samples:
                    family.add_sample(sample.name, {**sample.labels, "pid": str(pid)}, sample.value)
        return list(merged.values())


class ResponseCounter:
    """Counts every response for the request middleware, which is built with the app, before
    the lifespan creates the app's :class:`Metrics`: the lifespan attaches them (and detaches
    them at shutdown); until then nothing is counted."""

    def __init__(self) -> None:
        self.metrics: Metrics | None = None

    def count(self, status: int) -> None:
        if self.metrics is not None:
            self.metrics.count_response(status)


def exposition_registry(metrics: Metrics) -> CollectorRegistry:
    """The registry to expose: this process's, or with several workers, every worker's
    samples merged from the multiprocess directory (plus the GPU gauges, read live, and
    each worker's process metrics)."""
    directory = multiprocess_dir()
    if directory is None:
        return metrics.registry
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    registry.register(metrics.gpu)
    registry.register(WorkerProcessCollector(directory))
    PlatformCollector(registry=registry)
    return registry


def metric_variant(variant: str | None) -> str:
    """The ``variant`` label of a model variant: its name, or "" for the base model."""
    return variant or ""


class Metrics:
    def __init__(
        self, registry: CollectorRegistry | None = None, gpu: GpuCollector | None = None
    ) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.gpu = gpu or GpuCollector()
        r.register(self.gpu)
        # process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, ...
        # and python_info, read at scrape time (single-process; see WorkerProcessCollector).
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.requests_total = Counter(
            "tollgate_requests_total",
            "Inference requests by model, variant, version and HTTP status.",
            ["model", "variant", "version", "status"],
            registry=r,
        )
        self.request_duration = Histogram(
            "tollgate_request_duration_seconds",
            "Wall time of inference requests, from arrival to response, metering included.",
            ["model", "variant"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_duration = Histogram(
            "tollgate_inference_duration_seconds",
            "Time spent in the model's forward pass per call.",
            ["model", "variant", "version", "device"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.items_total = Counter(
            "tollgate_items_total",
            "Items (batch elements) predicted, by model, variant and version.",
            ["model", "variant", "version"],
            registry=r,
        )
        self.meter_batch_size = Histogram(
            "tollgate_meter_batch_size",
            "Usage rows written per ledger transaction (group commit).",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.meter_commit_seconds = Histogram(
            "tollgate_meter_commit_seconds",
            "Duration of one ledger group commit.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.meter_queue_depth = Gauge(
            "tollgate_meter_queue_depth",
            "Usage rows waiting for the next ledger commit.",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.meter_failures_total = Counter(
            "tollgate_meter_failures_total",
            "Usage rows whose commit failed (their requests got 503).",
            registry=r,
        )
        self.batch_size = Histogram(
            "tollgate_inference_batch_size",
            "Items per forward pass (dynamic batching across requests).",
            ["model", "variant", "version"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.queue_seconds = Histogram(
            "tollgate_inference_queue_seconds",
            "Time a request waited in its model's batch queue.",
            ["model", "variant", "version"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ratelimited_total = Counter(
            "tollgate_ratelimited_total",
            "Requests refused with 429 by per-key rate limits.",
            registry=r,
        )
        self.quota_exceeded_total = Counter(
            "tollgate_quota_exceeded_total",
            "Requests refused with 402 by a plan's spend cap.",
            registry=r,
        )
        self.ratelimit_backend = Gauge(
            "tollgate_ratelimit_backend",
            "Which rate-limit state is in use (1 = active): shared Redis or per-process memory.",
            ["backend"],
            multiprocess_mode="liveall",
            registry=r,
        )
        self.http_responses_total = Counter(
            "tollgate_http_responses_total",
            "Every HTTP response by status, on every route, authentication failures (401) "
            "included: tollgate_requests_total counts only authenticated inference requests.",
            ["status"],
            registry=r,
        )
        # Refreshed from the ledger (app/metering/month_to_date.py): every process reads the
        # same rows, so with several processes or replicas take the max, not the sum.
        self.billable_month_to_date = Gauge(
            "tollgate_billable_month_to_date",
            "Billable usage in the current UTC calendar month, read from the usage ledger, "
            "by model, variant and unit (requests, items, compute_seconds).",
            ["model", "variant", "unit"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.billable_month_to_date_refreshed = Gauge(
            "tollgate_billable_month_to_date_refreshed_timestamp_seconds",
            "When tollgate_billable_month_to_date was last read from the ledger (Unix time).",
            multiprocess_mode="livemax",
            registry=r,
        )
        self.models_loaded = Gauge(
            "tollgate_models_loaded",
            "Model versions loaded and serving.",
            multiprocess_mode="livemax",
            registry=r,
        )
        self._responses: dict[int, Counter] = {}

    def count_response(self, status: int) -> None:
        """One response on any route (the request middleware calls this for every one)."""
        child = self._responses.get(status)
        if child is None:
            child = self._responses[status] = self.http_responses_total.labels(str(status))
        child.inc()
