"""GPU gauges from NVML, read at scrape time. On a machine without an NVIDIA driver the
collector yields nothing: no series, no errors."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("tollgate.gpu")


def _load_nvml() -> ModuleType | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError: no driver or no device
        return None
    module: ModuleType = pynvml
    return module


class GpuCollector(Collector):
    def __init__(self, nvml: Any | None = None) -> None:
        self._nvml = nvml if nvml is not None else _load_nvml()

    @property
    def available(self) -> bool:
        return self._nvml is not None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        nvml = self._nvml
        if nvml is None:
            return
        util = GaugeMetricFamily(
            "tollgate_gpu_utilization_ratio", "GPU busy fraction (NVML).", labels=["gpu"]
        )
        used = GaugeMetricFamily(
            "tollgate_gpu_memory_used_bytes", "GPU memory in use (NVML).", labels=["gpu"]
        )
        total = GaugeMetricFamily(
            "tollgate_gpu_memory_total_bytes", "GPU memory size (NVML).", labels=["gpu"]
        )
        power = GaugeMetricFamily(
            "tollgate_gpu_power_watts", "GPU power draw (NVML).", labels=["gpu"]
        )
        try:
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                label = [str(index)]
                rates = nvml.nvmlDeviceGetUtilizationRates(handle)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                util.add_metric(label, rates.gpu / 100)
                used.add_metric(label, float(memory.used))
                total.add_metric(label, float(memory.total))
                with contextlib.suppress(Exception):  # not supported on every board
                    power.add_metric(label, nvml.nvmlDeviceGetPowerUsage(handle) / 1000)
        except Exception as exc:
            log.warning("NVML read failed", extra={"error": type(exc).__name__})
            return
        yield from (util, used, total, power)
