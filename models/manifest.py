"""Typed loading of model manifests and checksum-verified weights.

Layout under a models root::

    <root>/<name>/<version>/manifest.json
    <root>/<name>/<version>/weights.pt      (file name given by manifest["weights"]["file"])
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.architectures import ARCHITECTURES

__all__ = [
    "MANIFEST_FILENAME",
    "REQUIRED_KEYS",
    "Manifest",
    "ManifestError",
    "TensorSpec",
    "WeightsChecksumError",
    "discover",
    "load_manifest",
    "load_weights",
    "parse_manifest",
    "sha256_bytes",
    "sha256_file",
]

MANIFEST_FILENAME = "manifest.json"
REQUIRED_KEYS: frozenset[str] = frozenset(
    {
        "name",
        "version",
        "task",
        "architecture",
        "description",
        "inputs",
        "outputs",
        "labels",
        "metrics",
        "dataset",
        "training",
        "weights",
    }
)
TASKS: frozenset[str] = frozenset({"classification", "regression"})
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


class ManifestError(ValueError):
    """A manifest is missing, malformed, or inconsistent with its location."""


class WeightsChecksumError(Exception):
    """The weight file's sha256 (or size) does not match the manifest."""


@dataclass(frozen=True)
class TensorSpec:
    """Shape/dtype of one input or output, excluding the batch dimension."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    range: tuple[float, float] | None = None


@dataclass(frozen=True)
class Manifest:
    """Parsed ``manifest.json``. ``raw`` holds the full decoded JSON object (incl. extra keys).

    Note: ``metrics`` and ``raw`` are dicts, so instances are immutable but not hashable.
    """

    name: str
    version: str
    task: str
    architecture: str
    description: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    labels: tuple[str, ...] | None
    metrics: dict[str, float]
    weights_file: str
    weights_sha256: str
    weights_bytes: int
    raw: dict[str, Any]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _err(source: str, msg: str) -> ManifestError:
    return ManifestError(f"{source}: {msg}")


def _str(obj: Mapping[str, Any], key: str, source: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise _err(source, f"{key!r} must be a non-empty string")
    return value


def _number(value: Any, what: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _err(source, f"{what} must be a number, got {value!r}")
    return value


def _tensor_specs(value: Any, key: str, source: str) -> tuple[TensorSpec, ...]:
    if not isinstance(value, list) or not value:
        raise _err(source, f"{key!r} must be a non-empty list")
    specs: list[TensorSpec] = []
    for i, item in enumerate(value):
        where = f"{key}[{i}]"
        if not isinstance(item, dict):
            raise _err(source, f"{where} must be an object")
        shape = item.get("shape")
        if (
            not isinstance(shape, list)
            or not shape
            or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)
        ):
            raise _err(source, f"{where}.shape must be a non-empty list of positive ints")
        rng_raw = item.get("range")
        rng: tuple[float, float] | None = None
        if rng_raw is not None:
            if not isinstance(rng_raw, list) or len(rng_raw) != 2:
                raise _err(source, f"{where}.range must be [low, high] or absent")
            low = _number(rng_raw[0], f"{where}.range[0]", source)
            high = _number(rng_raw[1], f"{where}.range[1]", source)
            if low > high:
                raise _err(source, f"{where}.range has low > high")
            rng = (float(low), float(high))
        specs.append(
            TensorSpec(
                name=_str(item, "name", f"{source}: {where}"),
                shape=tuple(shape),
                dtype=_str(item, "dtype", f"{source}: {where}"),
                range=rng,
            )
        )
    return tuple(specs)


def parse_manifest(raw: Mapping[str, Any], *, source: str = "<manifest>") -> Manifest:
    """Validate a decoded manifest object. Extra top-level keys are allowed (kept in ``raw``)."""
    if not isinstance(raw, Mapping):
        raise _err(source, "manifest must be a JSON object")
    missing = REQUIRED_KEYS - raw.keys()
    if missing:
        raise _err(source, f"missing keys: {sorted(missing)}")

    task = _str(raw, "task", source)
    if task not in TASKS:
        raise _err(source, f"task must be one of {sorted(TASKS)}, got {task!r}")
    architecture = _str(raw, "architecture", source)
    if architecture not in ARCHITECTURES:
        raise _err(source, f"unknown architecture {architecture!r}")

    outputs = _tensor_specs(raw["outputs"], "outputs", source)
    labels_raw = raw["labels"]
    labels: tuple[str, ...] | None
    if labels_raw is None:
        if task == "classification":
            raise _err(source, "classification manifests need 'labels'")
        labels = None
    else:
        if not isinstance(labels_raw, list) or not all(isinstance(x, str) for x in labels_raw):
            raise _err(source, "'labels' must be a list of strings or null")
        labels = tuple(labels_raw)
        if len(labels) != outputs[0].shape[-1]:
            raise _err(source, f"{len(labels)} labels but output size {outputs[0].shape[-1]}")

    metrics_raw = raw["metrics"]
    if not isinstance(metrics_raw, dict) or not all(isinstance(k, str) for k in metrics_raw):
        raise _err(source, "'metrics' must be an object")
    metrics = {k: _number(v, f"metrics.{k}", source) for k, v in metrics_raw.items()}

    weights = raw["weights"]
    if not isinstance(weights, dict):
        raise _err(source, "'weights' must be an object")
    weights_file = _str(weights, "file", source)
    if Path(weights_file).name != weights_file or weights_file in {".", ".."}:
        raise _err(source, f"weights.file must be a bare file name, got {weights_file!r}")
    weights_sha256 = _str(weights, "sha256", source)
    if not _SHA256_RE.fullmatch(weights_sha256):
        raise _err(source, "weights.sha256 must be 64 lowercase hex characters")
    weights_bytes = weights.get("bytes")
    if not isinstance(weights_bytes, int) or isinstance(weights_bytes, bool) or weights_bytes < 0:
        raise _err(source, "weights.bytes must be a non-negative int")

    return Manifest(
        name=_str(raw, "name", source),
        version=_str(raw, "version", source),
        task=task,
        architecture=architecture,
        description=_str(raw, "description", source),
        inputs=_tensor_specs(raw["inputs"], "inputs", source),
        outputs=outputs,
        labels=labels,
        metrics=metrics,
        weights_file=weights_file,
        weights_sha256=weights_sha256,
        weights_bytes=weights_bytes,
        raw=dict(raw),
    )


def load_manifest(path: Path) -> Manifest:
    """Read and validate one ``manifest.json``. Raises :class:`ManifestError` if invalid."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise _err(str(path), f"invalid JSON: {exc}") from exc
    return parse_manifest(raw, source=str(path))


def load_weights(manifest_dir: Path, manifest: Manifest) -> nn.Module:
    """Verify the weight file against the manifest, then build and load the model (CPU, eval).

    The file is read once; the checksum is computed on exactly the bytes that get deserialized.
    Raises :class:`WeightsChecksumError` on size/sha256 mismatch, :class:`FileNotFoundError` if
    the file is missing, and ``RuntimeError`` if the state dict does not fit the architecture.
    """
    path = manifest_dir / manifest.weights_file
    data = path.read_bytes()
    if len(data) != manifest.weights_bytes:
        raise WeightsChecksumError(
            f"{path}: size {len(data)} bytes != manifest {manifest.weights_bytes}"
        )
    digest = sha256_bytes(data)
    if digest != manifest.weights_sha256:
        raise WeightsChecksumError(f"{path}: sha256 {digest} != manifest {manifest.weights_sha256}")
    try:
        factory = ARCHITECTURES[manifest.architecture]
    except KeyError:
        raise ManifestError(f"unknown architecture {manifest.architecture!r}") from None
    model = factory()
    state = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    model.load_state_dict(state)
    model.eval()
    return model


def discover(root: Path) -> list[tuple[Path, Manifest]]:
    """Find every ``<root>/<name>/<version>/manifest.json``, sorted by path.

    Returns ``(manifest_dir, manifest)`` pairs; ``manifest_dir`` is what :func:`load_weights`
    expects. Raises :class:`ManifestError` if a manifest is invalid or its name/version do not
    match its directory names.
    """
    found: list[tuple[Path, Manifest]] = []
    for path in sorted(root.glob(f"*/*/{MANIFEST_FILENAME}")):
        manifest = load_manifest(path)
        mdir = path.parent
        if (manifest.name, manifest.version) != (mdir.parent.name, mdir.name):
            raise _err(
                str(path),
                f"name/version {manifest.name}/{manifest.version} do not match directory "
                f"{mdir.parent.name}/{mdir.name}",
            )
        found.append((mdir, manifest))
    return found
