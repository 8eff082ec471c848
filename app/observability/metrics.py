"""Prometheus metrics, held in a per-app registry created in the lifespan.

Labels are model, version, device and status only: never an API key or a customer.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess

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


def exposition_registry(metrics: Metrics) -> CollectorRegistry:
    """The registry to expose: this process's, or with several workers, every worker's
    samples merged from the multiprocess directory (plus the GPU gauges, read live)."""
    if multiprocess_dir() is None:
        return metrics.registry
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    registry.register(metrics.gpu)
    return registry


class Metrics:
    def __init__(
        self, registry: CollectorRegistry | None = None, gpu: GpuCollector | None = None
    ) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.gpu = gpu or GpuCollector()
        r.register(self.gpu)
        self.requests_total = Counter(
            "tollgate_requests_total",
            "Inference requests by model, version and HTTP status.",
            ["model", "version", "status"],
            registry=r,
        )
        self.request_duration = Histogram(
            "tollgate_request_duration_seconds",
            "Wall time of inference requests, from arrival to response, metering included.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_duration = Histogram(
            "tollgate_inference_duration_seconds",
            "Time spent in the model's forward pass per call.",
            ["model", "version", "device"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.items_total = Counter(
            "tollgate_items_total",
            "Items (batch elements) predicted, by model and version.",
            ["model", "version"],
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
            ["model", "version"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.queue_seconds = Histogram(
            "tollgate_inference_queue_seconds",
            "Time a request waited in its model's batch queue.",
            ["model", "version"],
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
        self.models_loaded = Gauge(
            "tollgate_models_loaded",
            "Model versions loaded and serving.",
            multiprocess_mode="livemax",
            registry=r,
        )
