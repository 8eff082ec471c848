"""The model registry: every shipped model version, loaded once at start-up on its device."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from app.inference.batcher import Batcher
from app.inference.errors import ModelNotFound
from app.inference.predictor import Predictor
from app.observability.metrics import Metrics
from models.manifest import Manifest, discover

log = logging.getLogger("tollgate.models")


def choose_device(preference: str) -> torch.device:
    if preference in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    if preference == "cuda":
        log.warning("CUDA requested but not available; serving on CPU")
    return torch.device("cpu")


@dataclass(frozen=True, slots=True)
class ServedModel:
    name: str
    version: str
    manifest: Manifest
    predictor: Predictor
    batcher: Batcher

    @property
    def device(self) -> str:
        return self.predictor.device.type


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (-1, version)


class ModelRegistry:
    def __init__(
        self,
        models_dir: Path,
        metrics: Metrics,
        *,
        device: str,
        max_batch_items: int,
        threads: int,
        batch_max_items: int = 64,
        batch_max_delay_s: float = 0.0,
        batch_queue_size: int = 1024,
    ) -> None:
        self._models_dir = models_dir
        self._metrics = metrics
        self._device = choose_device(device)
        self._max_batch_items = max_batch_items
        self._batch_max_items = batch_max_items
        self._batch_max_delay_s = batch_max_delay_s
        self._batch_queue_size = batch_queue_size
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="torch")
        self._models: dict[str, dict[str, ServedModel]] = {}

    def load_all(self) -> None:
        for manifest_dir, manifest in discover(self._models_dir):
            predictor = Predictor(manifest_dir, manifest, max_batch_items=self._max_batch_items)
            predictor.load(self._device)
            batcher = Batcher(
                predictor,
                self._executor,
                self._metrics,
                max_items=self._batch_max_items,
                max_delay_s=self._batch_max_delay_s,
                queue_size=self._batch_queue_size,
            )
            served = ServedModel(manifest.name, manifest.version, manifest, predictor, batcher)
            self._models.setdefault(manifest.name, {})[manifest.version] = served
            log.info(
                "model loaded",
                extra={
                    "model": manifest.name,
                    "version": manifest.version,
                    "device": served.device,
                },
            )

    @property
    def loaded(self) -> int:
        return sum(len(v) for v in self._models.values())

    def list(self) -> list[ServedModel]:
        return [
            self._models[name][version]
            for name in sorted(self._models)
            for version in sorted(self._models[name], key=_version_key)
        ]

    def get(self, name: str, version: str | None = None) -> ServedModel:
        versions = self._models.get(name)
        if not versions:
            raise ModelNotFound(f"model '{name}' does not exist", details={"model": name})
        if version is None:
            return versions[max(versions, key=_version_key)]
        served = versions.get(version)
        if served is None:
            raise ModelNotFound(
                f"model '{name}' has no version '{version}'",
                details={"model": name, "versions": sorted(versions, key=_version_key)},
            )
        return served

    def start(self) -> None:
        for served in self.list():
            served.batcher.start()

    async def close(self) -> None:
        for served in self.list():
            await served.batcher.stop()
        self._executor.shutdown(wait=True)
