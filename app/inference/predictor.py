"""One served model version, in the LitServe ``LitAPI`` shape.

``decode`` turns the JSON ``inputs`` into a validated float32 batch, ``predict`` runs the
forward pass on the model's device, ``encode`` turns the output tensor back into JSON-ready
objects. ``decode`` validates on the event loop (numpy, no torch); ``predict`` and
``encode`` run in a worker thread, batched across requests by the model's batcher.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import torch

from app.catalog.archive import ArchiveFormat, load_archive
from app.catalog.graph import CpuGraph, applies_to, optimize_for_cpu
from app.catalog.records import ModelCard
from app.inference.errors import BatchTooLarge, InvalidTensor
from app.inference.warmup import warm_up

Array = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Prediction:
    outputs: list[dict[str, Any]]  # encoded for the /v1 JSON response
    items: int
    compute_us: int
    raw: Array  # this request's slice of the output tensor, for other protocols


class ArchiveChecksumError(Exception):
    """The archive's bytes are not the ones the catalog recorded."""


class LoadedModules:
    """Modules already built from their archives (read, checksummed, optimized for the CPU
    and checked against eager), shared by the model registries given the same instance.

    Without one (the default) an app builds every model itself. A test session passes one
    instance to every app it creates, so each model is built once per session instead of
    once per app. Served modules are only ever called (eval mode, no state), so registries
    on different event loops can share them. Keyed by everything the build depends on: the
    archive's checksum and format, its dtype, the device and the CPU graph asked for.
    """

    def __init__(self) -> None:
        self._built: dict[tuple[str, str, str, str, str], tuple[torch.nn.Module, CpuGraph]] = {}
        self._warmed: set[tuple[int, int]] = set()

    def get(
        self, archive: Path, card: ModelCard, device: torch.device, cpu_graph: CpuGraph
    ) -> tuple[torch.nn.Module, CpuGraph]:
        key = (card.sha256, card.archive_format, card.dtype, str(device), cpu_graph)
        built = self._built.get(key)
        if built is None:
            built = self._built[key] = build_module(archive, card, device, cpu_graph)
        return built

    def claim_warm_up(self, module: torch.nn.Module, max_batch_items: int) -> bool:
        """True the first time ``module`` is warmed up to ``max_batch_items`` (the caller
        warms it); False once it has been."""
        key = (id(module), max_batch_items)
        if key in self._warmed:
            return False
        self._warmed.add(key)
        return True


def build_module(
    archive: Path, card: ModelCard, device: torch.device, cpu_graph: CpuGraph
) -> tuple[torch.nn.Module, CpuGraph]:
    """The module to serve on ``device`` and the CPU graph it actually runs. The archive is
    checked against the catalog's sha256 first: the bytes loaded are the bytes validated."""
    data = archive.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != card.sha256:
        raise ArchiveChecksumError(f"{archive}: sha256 {digest} != catalog {card.sha256}")
    # eval mode already (a torch.export module was fixed at export and refuses eval())
    module = load_archive(archive, cast(ArchiveFormat, card.archive_format), str(device))
    if device.type == "cpu" and applies_to(card.dtype):
        return optimize_for_cpu(module, tuple(card.inputs[0].shape), cpu_graph)
    return module, "eager"


class Predictor:
    def __init__(self, archive: Path, manifest: ModelCard, *, max_batch_items: int) -> None:
        self.archive = archive
        self.manifest = manifest
        self.max_batch_items = max_batch_items
        self.item_shape = tuple(manifest.inputs[0].shape)
        # The manifest's declared value range, enforced (refused, not clipped): a model
        # trained on [0, 1] pixels answers garbage for 0..255 ones, and silently.
        self.input_range = manifest.inputs[0].range
        self.labels = manifest.labels
        self.output_name = manifest.outputs[0].name
        self.device = torch.device("cpu")
        self.device_type = "cpu"  # self.device.type, read per request (a plain str is cheaper)
        self.input_dtype = torch.float16 if manifest.dtype == "float16" else torch.float32
        self.graph: CpuGraph = "eager"  # how the forward pass runs (app/catalog/graph.py)
        self._module: torch.nn.Module | None = None

    def load(
        self,
        device: torch.device,
        cpu_graph: CpuGraph = "script",
        modules: LoadedModules | None = None,
    ) -> None:
        """Build the module (or take it from ``modules``, built once there) and warm it up."""
        if modules is not None:
            module, graph = modules.get(self.archive, self.manifest, device, cpu_graph)
            # a shared module warms once, for the first registry that takes it
            warm = modules.claim_warm_up(module, self.max_batch_items)
        else:
            module, graph = build_module(self.archive, self.manifest, device, cpu_graph)
            warm = True
        self._module = module
        self.graph = graph
        self.device = device
        self.device_type = device.type
        if warm:
            warm_up(self)  # at load time, never billed (app/inference/warmup.py)

    def decode(self, inputs: Any, *, numbers_only: bool = False) -> Array:
        """The request's items as a float32 batch, or InvalidTensor/BatchTooLarge saying why not.

        ``numbers_only``: the caller knows ``inputs`` holds nothing but (nested lists of)
        numbers (``_parse_inputs`` on a body without strings, booleans or nulls). They are
        then read straight to float32, one pass instead of a float64 array and a copy (the
        35 KB image, parse and decode: 132 -> 122 us, docs/benchmarks.md); anything that
        pass refuses (a ragged list, an empty object) is read again the general way for its
        precise message."""
        batch: Array | None = None
        if numbers_only:
            try:
                with np.errstate(over="ignore"):  # 1e39 is inf in float32: refused below
                    batch = np.asarray(inputs, dtype=np.float32)
            except (ValueError, TypeError, OverflowError):
                batch = None
        if batch is None:
            batch = self._decode_any(inputs)
        if batch.shape == self.item_shape:
            batch = batch[np.newaxis]
        self._check_shape(batch)
        # min and max carry any NaN (numpy propagates it) and any infinity, so two
        # reductions check finiteness and the declared range at once.
        least, most = float(batch.min()), float(batch.max())
        if not (math.isfinite(least) and math.isfinite(most)):
            raise InvalidTensor("inputs must be finite float32 numbers (no NaN or Infinity)")
        if self.input_range is not None:
            low, high = self.input_range
            if least < low or most > high:
                raise InvalidTensor(
                    f"inputs must lie in [{low:g}, {high:g}] (the model's declared range); "
                    f"got values from {least:g} to {most:g}",
                    details={"range": [low, high], "min": least, "max": most},
                )
        return batch

    def _decode_any(self, inputs: Any) -> Array:
        """Any JSON value or array to float32, refusing non-numbers by name."""
        try:
            raw = np.asarray(inputs)
        except (ValueError, TypeError) as exc:
            raise InvalidTensor(
                "inputs must be a (nested) list of numbers with a regular shape"
            ) from exc
        if raw.dtype.kind not in "iuf":
            raise InvalidTensor(
                f"inputs must be numbers (got {_kind_name(raw.dtype.kind)})",
                details={"expected_dtype": "float32"},
            )
        with np.errstate(over="ignore"):
            batch: Array = raw.astype(np.float32, copy=False)
        return batch

    def _check_shape(self, raw: npt.NDArray[Any]) -> None:
        if raw.shape[1:] != self.item_shape or raw.ndim != len(self.item_shape) + 1:
            raise InvalidTensor(
                f"inputs must have shape {list(self.item_shape)} or "
                f"[n, {', '.join(map(str, self.item_shape))}], got {list(raw.shape)}",
                details={"expected_item_shape": list(self.item_shape), "got": list(raw.shape)},
            )
        n = raw.shape[0]
        if n == 0:
            raise InvalidTensor("inputs must hold at least one item")
        if n > self.max_batch_items:
            raise BatchTooLarge(
                f"at most {self.max_batch_items} items per request, got {n}",
                details={"max_items": self.max_batch_items},
            )

    def predict(self, batch: Array) -> Array:
        assert self._module is not None, "predictor used before load()"
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device, self.input_dtype, non_blocking=True)
            y = self._module(x)
            out: Array = y.float().cpu().numpy()
        return out

    def encode(self, outputs: Array) -> list[dict[str, Any]]:
        rows = outputs.tolist()
        if self.labels is not None:
            best = outputs.argmax(axis=1).tolist()
            return [
                {"label": self.labels[i], self.output_name: row}
                for i, row in zip(best, rows, strict=True)
            ]
        return [{self.output_name: row} for row in rows]


def _kind_name(kind: str) -> str:
    return {"b": "booleans", "U": "strings", "S": "strings", "O": "mixed or null values"}.get(
        kind, "non-numeric values"
    )
