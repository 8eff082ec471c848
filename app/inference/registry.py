"""The model registry: every shipped model version and variant, loaded on its device.

Models are addressed as ``name`` or ``name:variant`` (``cnn``, ``cnn:int8``), optionally with
a version; without one, the model's default version (the newest, unless an admin set
another). A variant that needs hardware this server lacks (``fp16`` without CUDA) is listed
as unavailable and refused with a clear 4xx. Unloading removes a model from new requests
and lets the ones already queued finish.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from app.config import ModelOverride
from app.errors import Unprocessable
from app.inference.batcher import Batcher
from app.inference.errors import ModelNotFound
from app.inference.graph import CpuGraph
from app.inference.predictor import LoadedModules, Predictor
from app.observability.metrics import Metrics
from models.manifest import Manifest, discover

log = logging.getLogger("tollgate.models")


class VariantUnavailable(Unprocessable):
    type = "variant_unavailable"


def choose_device(preference: str) -> torch.device:
    if preference in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    if preference == "cuda":
        log.warning("CUDA requested but not available; serving on CPU")
    return torch.device("cpu")


def variant_of(manifest: Manifest) -> str | None:
    variant: str | None = getattr(manifest, "variant", None)
    return variant


def requires_device(manifest: Manifest) -> str | None:
    device: str | None = getattr(manifest, "requires_device", None)
    return device


@dataclass(frozen=True, slots=True)
class ServedModel:
    name: str
    version: str
    variant: str | None
    manifest: Manifest
    manifest_dir: Path
    predictor: Predictor | None  # None: listed but unavailable on this server
    batcher: Batcher | None
    unavailable_reason: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.variant}" if self.variant else self.name

    @property
    def device(self) -> str:
        return self.predictor.device_type if self.predictor else "none"

    @property
    def graph(self) -> str:
        return self.predictor.graph if self.predictor else "none"

    @property
    def available(self) -> bool:
        return self.predictor is not None


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``name`` or ``name:variant``; ``name:`` names an empty variant, which no model has."""
    name, colon, variant = ref.partition(":")
    return name, variant if colon else None


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
        overrides: dict[str, ModelOverride] | None = None,
        cpu_graph: CpuGraph = "script",
        modules: LoadedModules | None = None,
    ) -> None:
        self._models_dir = models_dir
        self._modules = modules
        self._metrics = metrics
        self._device = choose_device(device)
        self._max_batch_items = max_batch_items
        self._batch_max_items = batch_max_items
        self._batch_max_delay_s = batch_max_delay_s
        self._batch_queue_size = batch_queue_size
        self._overrides = overrides or {}
        self._cpu_graph: CpuGraph = cpu_graph
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="torch")
        # name -> version -> variant -> model
        self._models: dict[str, dict[str, dict[str | None, ServedModel]]] = {}
        self._defaults: dict[str, str] = {}
        self._started = False
        self._admin_lock = asyncio.Lock()

    # -- loading -----------------------------------------------------------------------

    def _build(self, manifest_dir: Path, manifest: Manifest) -> ServedModel:
        variant = variant_of(manifest)
        needs = requires_device(manifest)
        ref = f"{manifest.name}:{variant}" if variant else manifest.name
        override = self._overrides.get(ref) or self._overrides.get(manifest.name)
        device = choose_device(override.device) if override and override.device else self._device
        if needs == "cuda" and device.type != "cuda":
            return ServedModel(
                manifest.name,
                manifest.version,
                variant,
                manifest,
                manifest_dir,
                None,
                None,
                unavailable_reason=f"the {variant} variant needs a CUDA GPU; this server has none",
            )
        if getattr(manifest, "format", "state_dict") == "quantized_state_dict":
            device = torch.device("cpu")  # int8 kernels here are x86 CPU kernels
        predictor = Predictor(manifest_dir, manifest, max_batch_items=self._max_batch_items)
        cpu_graph = override.cpu_graph if override and override.cpu_graph else self._cpu_graph
        predictor.load(device, cpu_graph, self._modules)
        max_items = self._batch_max_items
        max_delay_s = self._batch_max_delay_s
        if override is not None:
            max_items = override.max_batch_items or max_items
            if override.max_queue_delay_ms is not None:
                max_delay_s = override.max_queue_delay_ms / 1000
        batcher = Batcher(
            predictor,
            self._executor,
            self._metrics,
            max_items=max_items,
            max_delay_s=max_delay_s,
            queue_size=self._batch_queue_size,
        )
        return ServedModel(
            manifest.name, manifest.version, variant, manifest, manifest_dir, predictor, batcher
        )

    def _add(self, served: ServedModel) -> None:
        self._models.setdefault(served.name, {}).setdefault(served.version, {})[served.variant] = (
            served
        )
        if served.batcher is not None and self._started:
            served.batcher.start()
        self._metrics.models_loaded.set(self.loaded)
        log.info(
            "model loaded" if served.available else "model listed as unavailable",
            extra={
                "model": served.ref,
                "version": served.version,
                "device": served.device,
                "graph": served.graph,
            },
        )

    def load_all(self) -> None:
        for manifest_dir, manifest in discover(self._models_dir):
            self._add(self._build(manifest_dir, manifest))

    def start(self) -> None:
        self._started = True
        for served in self.list(include_unavailable=False):
            assert served.batcher is not None
            served.batcher.start()

    async def close(self) -> None:
        for served in self.list(include_unavailable=False):
            assert served.batcher is not None
            await served.batcher.stop()
        self._executor.shutdown(wait=True)

    # -- lookup ------------------------------------------------------------------------

    @property
    def loaded(self) -> int:
        return len(self.list(include_unavailable=False))

    def list(self, *, include_unavailable: bool = True) -> list[ServedModel]:
        out = []
        for name in sorted(self._models):
            for version in sorted(self._models[name], key=_version_key):
                for variant in sorted(self._models[name][version], key=lambda v: v or ""):
                    served = self._models[name][version][variant]
                    if include_unavailable or served.available:
                        out.append(served)
        return out

    def default_version(self, name: str) -> str | None:
        versions = self._models.get(name)
        if not versions:
            return None
        chosen = self._defaults.get(name)
        return chosen if chosen in versions else max(versions, key=_version_key)

    def find(self, ref: str, version: str | None = None) -> ServedModel:
        """The model for ``name[:variant]`` (available or not); 404 if it does not exist."""
        name, variant = parse_ref(ref)
        versions = self._models.get(name)
        if not versions:
            raise ModelNotFound(f"model '{name}' does not exist", details={"model": name})
        chosen = version or self.default_version(name)
        assert chosen is not None
        variants = versions.get(chosen)
        if variants is None:
            raise ModelNotFound(
                f"model '{name}' has no version '{chosen}'",
                details={"model": name, "versions": sorted(versions, key=_version_key)},
            )
        served = variants.get(variant)
        if served is None:
            raise ModelNotFound(
                f"model '{name}' version {chosen} has no variant '{variant}'",
                details={"model": name, "variants": sorted(v or "" for v in variants)},
            )
        return served

    def get(self, ref: str, version: str | None = None) -> ServedModel:
        """A model that can serve now: 404 if unknown, 422 if unavailable here."""
        served = self.find(ref, version)
        if not served.available:
            raise VariantUnavailable(served.unavailable_reason or f"{ref} is unavailable")
        return served

    # -- administration ----------------------------------------------------------------

    def set_default(self, name: str, version: str) -> None:
        if version not in self._models.get(name, {}):
            raise ModelNotFound(f"model '{name}' has no loaded version '{version}'")
        self._defaults[name] = version

    async def load(self, name: str, version: str) -> builtins.list[ServedModel]:
        """Load (or reload) every variant of name/version from the models directory.

        Reading weights, building the CPU graph and the warm-up run in a worker thread, so
        the event loop keeps serving other models meanwhile; loads and unloads are
        serialized."""
        async with self._admin_lock:
            found = [
                (d, m)
                for d, m in discover(self._models_dir)
                if m.name == name and m.version == version
            ]
            if not found:
                raise ModelNotFound(f"no manifest for model '{name}' version '{version}'")
            loaded = []
            for manifest_dir, manifest in found:
                existing = self._models.get(name, {}).get(version, {}).get(variant_of(manifest))
                if existing is not None and existing.available:
                    loaded.append(existing)
                    continue
                served = await asyncio.to_thread(self._build, manifest_dir, manifest)
                self._add(served)
                loaded.append(served)
            return loaded

    async def unload(self, name: str, version: str) -> builtins.list[ServedModel]:
        """Stop routing new requests to name/version; queued requests finish first."""
        async with self._admin_lock:
            return await self._unload(name, version)

    async def _unload(self, name: str, version: str) -> builtins.list[ServedModel]:
        variants = self._models.get(name, {}).pop(version, None)
        if variants is None:
            raise ModelNotFound(f"model '{name}' has no loaded version '{version}'")
        if not self._models[name]:
            del self._models[name]
            self._defaults.pop(name, None)
        elif self._defaults.get(name) == version:
            del self._defaults[name]
        self._metrics.models_loaded.set(self.loaded)
        for served in variants.values():
            if served.batcher is not None:
                await served.batcher.drain()
                await served.batcher.stop()
        return list(variants.values())
