"""The models this replica serves, reconciled to the catalog (app/catalog).

The catalog (in the database) says which variants exist, which are published, which
version is each model's default and which variants replicas should load; this registry
holds what this process actually has: a :class:`ServedModel` (predictor and batcher) per
loaded variant. :meth:`ModelRegistry.apply` moves it to a catalog snapshot: loads what is
wanted and missing (in worker threads, so the event loop keeps serving), unloads what is no
longer wanted (queued requests finish first). app/inference/sync.py calls it when the
catalog changes.

Models are addressed as ``name`` or ``name:variant`` (``cnn``, ``cnn:int8``), optionally
with a version; without one, the model's default version. A variant that needs hardware
this server lacks (``fp16`` without CUDA) is listed as unavailable and refused with a clear
4xx.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from app.catalog.graph import CpuGraph
from app.catalog.records import CatalogSnapshot, ModelCard, version_key
from app.catalog.service import parse_ref
from app.catalog.store import ModelStore
from app.config import ModelOverride
from app.errors import Unprocessable
from app.inference.batcher import Batcher
from app.inference.errors import ModelNotFound, ModelUnavailable
from app.inference.predictor import LoadedModules, Predictor
from app.observability.metrics import Metrics

__all__ = ["ModelRegistry", "ServedModel", "VariantUnavailable", "choose_device", "parse_ref"]

log = logging.getLogger("tollgate.models")

Key = tuple[str, str, str | None]


class VariantUnavailable(Unprocessable):
    type = "variant_unavailable"


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
    variant: str | None
    manifest: ModelCard
    predictor: Predictor | None  # None: not serving here (see unavailable_reason)
    batcher: Batcher | None
    unavailable_reason: str | None = None
    state: str = "loaded"  # loaded | unavailable | failed | loading | unloaded | unpublished

    @property
    def ref(self) -> str:
        return self.manifest.ref

    @property
    def device(self) -> str:
        return self.predictor.device_type if self.predictor else "none"

    @property
    def graph(self) -> str:
        return self.predictor.graph if self.predictor else "none"

    @property
    def available(self) -> bool:
        return self.predictor is not None


def _placeholder(card: ModelCard, state: str, reason: str) -> ServedModel:
    return ServedModel(
        card.name,
        card.version,
        card.variant,
        card,
        None,
        None,
        unavailable_reason=reason,
        state=state,
    )


class ModelRegistry:
    def __init__(
        self,
        store: ModelStore,
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
        self._store = store
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
        self._snapshot = CatalogSnapshot(revision=-1, defaults={}, cards=())
        self._served: dict[Key, ServedModel] = {}  # loaded, or unavailable on this hardware
        self._failed: dict[Key, str] = {}  # wanted but failed to load: why
        self._loading: set[Key] = set()
        # (ref, version) -> the served model, for the hot path: a request resolves its model
        # with one dict lookup; cleared whenever the snapshot or the served set changes.
        self._routes: dict[tuple[str, str | None], ServedModel] = {}
        self._started = False
        self._apply_lock = asyncio.Lock()

    # -- loading -----------------------------------------------------------------------

    def _build(self, card: ModelCard) -> ServedModel:
        override = self._overrides.get(card.ref) or self._overrides.get(card.name)
        device = choose_device(override.device) if override and override.device else self._device
        if card.requires_device == "cuda" and device.type != "cuda":
            return _placeholder(
                card,
                "unavailable",
                f"the {card.variant or 'base'} variant needs a CUDA GPU; this server has none",
            )
        if card.dtype == "qint8":
            device = torch.device("cpu")  # int8 kernels here are x86 CPU kernels
        archive = self._store.local_path(card.archive_uri)
        predictor = Predictor(archive, card, max_batch_items=self._max_batch_items)
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
        return ServedModel(card.name, card.version, card.variant, card, predictor, batcher)

    def _try_build(self, card: ModelCard) -> ServedModel | None:
        try:
            return self._build(card)
        except Exception as exc:  # a broken or missing archive fails that variant only
            log.exception(
                "model failed to load", extra={"model": card.ref, "version": card.version}
            )
            self._failed[card.key] = f"{type(exc).__name__}: {exc}"
            return None

    def _add(self, served: ServedModel) -> None:
        self._routes.clear()
        self._served[(served.name, served.version, served.variant)] = served
        self._failed.pop((served.name, served.version, served.variant), None)
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

    def apply_now(self, snapshot: CatalogSnapshot) -> None:
        """Load everything ``snapshot`` wants, on this thread (start-up, before serving)."""
        self._snapshot = snapshot
        self._routes.clear()
        for card in snapshot.wanted():
            if card.key not in self._served:
                served = self._try_build(card)
                if served is not None:
                    self._add(served)

    async def apply(self, snapshot: CatalogSnapshot) -> None:
        """Move to ``snapshot``: new requests see its routing at once; variants no longer
        wanted are unloaded after their queued requests finish; wanted ones are loaded in a
        worker thread. Serialized: one reconcile at a time."""
        async with self._apply_lock:
            if snapshot.revision < self._snapshot.revision:
                return  # an older read finishing late
            self._snapshot = snapshot
            wanted = {c.key: c for c in snapshot.wanted()}
            gone = [k for k in self._served if k not in wanted or self._stale(k, wanted[k])]
            removed = [self._served.pop(k) for k in gone]
            self._routes.clear()
            for key in [k for k in self._failed if k not in wanted]:
                del self._failed[key]
            self._metrics.models_loaded.set(self.loaded)
            for old in removed:
                if old.batcher is not None:
                    await old.batcher.drain()
                    await old.batcher.stop()
                log.info("model unloaded", extra={"model": old.ref, "version": old.version})
            for key, card in wanted.items():
                if key in self._served:
                    continue
                self._loading.add(key)
                try:
                    served = await asyncio.to_thread(self._try_build, card)
                finally:
                    self._loading.discard(key)
                if served is not None and self._snapshot is snapshot:
                    self._add(served)

    async def settled(self) -> None:
        """Wait for a reconcile in progress (possibly another task's) to finish."""
        async with self._apply_lock:
            pass

    def _stale(self, key: Key, card: ModelCard) -> bool:
        """A served variant whose archive the catalog no longer names (never for an
        immutable version; a safety net)."""
        return self._served[key].manifest.sha256 != card.sha256

    def start(self) -> None:
        self._started = True
        for served in self._served.values():
            if served.batcher is not None:
                served.batcher.start()

    async def close(self) -> None:
        for served in list(self._served.values()):
            if served.batcher is not None:
                await served.batcher.stop()
        self._executor.shutdown(wait=True)

    # -- lookup ------------------------------------------------------------------------

    @property
    def snapshot(self) -> CatalogSnapshot:
        return self._snapshot

    @property
    def loaded(self) -> int:
        return sum(1 for s in self._served.values() if s.available)

    def _view(self, card: ModelCard) -> ServedModel:
        served = self._served.get(card.key)
        if served is not None:
            return served
        if not card.published:
            return _placeholder(
                card,
                "unpublished",
                f"{card.ref} version {card.version} is not "
                f"published: {card.unpublished_reason or 'no reason given'}",
            )
        if not card.loaded:
            return _placeholder(card, "unloaded", f"{card.ref} version {card.version} is unloaded")
        if card.key in self._failed:
            return _placeholder(
                card,
                "failed",
                f"{card.ref} version {card.version} failed to "
                f"load on this replica: {self._failed[card.key]}",
            )
        return _placeholder(card, "loading", f"{card.ref} version {card.version} is loading")

    def list(self, *, include_unavailable: bool = True) -> builtins.list[ServedModel]:
        """Every variant in the catalog, as this replica has it, sorted by name, version
        and variant (``include_unavailable=False``: only those serving here)."""
        cards = sorted(
            self._snapshot.cards, key=lambda c: (c.name, version_key(c.version), c.variant or "")
        )
        views = [self._view(c) for c in cards]
        return [v for v in views if include_unavailable or v.available]

    def default_version(self, name: str) -> str | None:
        return self._snapshot.default_version(name)

    def versions(self, name: str) -> builtins.list[str]:
        return sorted({c.version for c in self._snapshot.cards if c.name == name}, key=version_key)

    def find(self, ref: str, version: str | None = None) -> ServedModel:
        """The variant for ``name[:variant]`` at ``version`` (default: the model's default
        version), as this replica has it, served or not; 404 if the catalog has none."""
        name, variant = parse_ref(ref)
        cards = [c for c in self._snapshot.cards if c.name == name]
        if not cards:
            raise ModelNotFound(f"model '{name}' does not exist", details={"model": name})
        chosen = version or self._snapshot.default_version(name)
        in_version = [c for c in cards if c.version == chosen]
        if not in_version:
            raise ModelNotFound(
                f"model '{name}' has no version '{chosen}'",
                details={"model": name, "versions": self.versions(name)},
            )
        card = next((c for c in in_version if c.variant == variant), None)
        if card is None:
            raise ModelNotFound(
                f"model '{name}' version {chosen} has no variant '{variant}'",
                details={"model": name, "variants": sorted(c.variant or "" for c in in_version)},
            )
        return self._view(card)

    def get(self, ref: str, version: str | None = None) -> ServedModel:
        """A variant that can serve now: 404 if unknown, unpublished or unloaded; 422 if
        this hardware cannot run it; 503 while it loads or if it failed to load here."""
        served = self._routes.get((ref, version))
        if served is not None:
            return served
        served = self.find(ref, version)
        if served.available:
            if len(self._routes) < 10_000:  # names come from callers: bound it
                self._routes[(ref, version)] = served
            return served
        reason = served.unavailable_reason or f"{ref} is unavailable"
        if served.state in ("unpublished", "unloaded"):
            raise ModelNotFound(reason, details={"model": served.ref, "state": served.state})
        if served.state == "unavailable":
            raise VariantUnavailable(reason)
        raise ModelUnavailable(reason, details={"model": served.ref, "state": served.state})

    # -- state -------------------------------------------------------------------------

    def actual(self) -> builtins.list[dict[str, Any]]:
        """What this replica has of every variant the catalog wants loaded."""
        return [
            {
                "model": v.ref,
                "version": v.version,
                "state": v.state,
                "device": v.device,
                "graph": v.graph,
                "reason": v.unavailable_reason,
            }
            for v in self.list()
            if v.manifest.published and v.manifest.loaded
        ]

    def readiness(self) -> tuple[bool, str]:
        """Ready while every published, wanted variant of every model's default version is
        loaded here (or cannot run on this hardware at all, like fp16 without CUDA)."""
        if self._snapshot.revision < 0:
            return False, "catalog not read yet"
        missing = [
            f"{v.ref}@{v.version} {v.state}"
            for v in self.list()
            if v.manifest.published
            and v.manifest.loaded
            and v.version == self.default_version(v.name)
            and v.state not in ("loaded", "unavailable")
        ]
        if missing:
            return False, "not loaded: " + ", ".join(missing)
        return True, f"{self.loaded} loaded"

    def archive_path(self, card: ModelCard) -> Path:
        return self._store.local_path(card.archive_uri)
