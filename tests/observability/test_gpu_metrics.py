"""GPU gauges: absent without a GPU, and mapped correctly from NVML readings.

The second test feeds the collector a simulated NVML module (fixed readings), since CI has
no GPU; on a GPU machine the first test sees real series instead."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from prometheus_client import CollectorRegistry, generate_latest

from app.observability.gpu import GpuCollector


def test_real_nvml_or_nothing() -> None:
    collector = GpuCollector()
    registry = CollectorRegistry()
    registry.register(collector)
    exposition = generate_latest(registry).decode()
    if torch.cuda.is_available():
        assert collector.available
        assert "tollgate_gpu_memory_total_bytes" in exposition
    else:
        assert "tollgate_gpu_" not in exposition


class SimulatedNvml:
    def nvmlDeviceGetCount(self) -> int:  # noqa: N802 - NVML's names
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:  # noqa: N802
        return index

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> SimpleNamespace:  # noqa: N802
        return SimpleNamespace(gpu=[35, 90][handle])

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:  # noqa: N802
        return SimpleNamespace(used=[1 << 30, 70 << 30][handle], total=80 << 30)

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:  # noqa: N802
        if handle == 1:
            raise RuntimeError("not supported")
        return 212_500  # milliwatts


def test_collector_maps_nvml_readings() -> None:
    registry = CollectorRegistry()
    registry.register(GpuCollector(SimulatedNvml()))

    def sample(name: str, gpu: str) -> float | None:
        return registry.get_sample_value(name, {"gpu": gpu})

    assert sample("tollgate_gpu_utilization_ratio", "0") == 0.35
    assert sample("tollgate_gpu_utilization_ratio", "1") == 0.9
    assert sample("tollgate_gpu_memory_used_bytes", "1") == float(70 << 30)
    assert sample("tollgate_gpu_memory_total_bytes", "0") == float(80 << 30)
    assert sample("tollgate_gpu_power_watts", "0") == 212.5
    assert sample("tollgate_gpu_power_watts", "1") is None  # unsupported: no series
