"""Typed loading of model manifests and checksum-verified weights.

Layout under a models root::

    <root>/<name>/<version>/manifest.json
    <root>/<name>/<version>/weights.pt      (file name given by manifest["weights"]["file"])
    <root>/<name>/<version>-<variant>/...   (a compressed variant of <name>/<version>)

Base manifests have ``"variant": null`` (or no ``variant`` key at all). Variant manifests say
how their weights are stored (``format``/``dtype``), which device they need
(``requires_device``), the architecture's constructor arguments (``architecture_args``) and
CPU measurements (``measured``); every one of those keys has a default so older manifests
still parse.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.architectures import ARCHITECTURES, FUSE_PATTERNS
from models.quantization import QUANT_ENGINE, convert_static, prepare_static

__all__ = [
    "DTYPES",
    "FORMATS",
    "MANIFEST_FILENAME",
    "OPTIONAL_KEYS",
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
OPTIONAL_KEYS: frozenset[str] = frozenset(
    {
        "variant",
        "base",
        "format",
        "dtype",
        "requires_device",
        "architecture_args",
        "measured",
        "measured_env",
        "metrics_note",
        "compression",
    }
)
"""Top-level keys a manifest may have besides :data:`REQUIRED_KEYS` (others are kept in ``raw``)."""
TASKS: frozenset[str] = frozenset({"classification", "regression"})
FORMATS: frozenset[str] = frozenset({"state_dict", "quantized_state_dict"})
DTYPES: frozenset[str] = frozenset({"float32", "float16", "qint8"})
DEVICES: frozenset[str] = frozenset({"cpu", "cuda"})
_FORMAT_DTYPES: dict[str, frozenset[str]] = {
    "state_dict": frozenset({"float32", "float16"}),
    "quantized_state_dict": frozenset({"qint8"}),
}
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_VARIANT_RE = re.compile(r"[a-z0-9][a-z0-9_]*")


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
    variant: str | None = None
    format: str = "state_dict"
    dtype: str = "float32"
    requires_device: str | None = None
    architecture_args: dict[str, Any] = field(default_factory=dict)
    measured: dict[str, float] = field(default_factory=dict)

    @property
    def dir_name(self) -> str:
        """The directory this manifest must live in: ``<version>`` or ``<version>-<variant>``."""
        return self.version if self.variant is None else f"{self.version}-{self.variant}"


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

    variant = raw.get("variant")
    if variant is not None and (not isinstance(variant, str) or not _VARIANT_RE.fullmatch(variant)):
        raise _err(source, "'variant' must be null or a lowercase identifier like 'int8'")
    fmt = raw.get("format", "state_dict")
    if fmt not in FORMATS:
        raise _err(source, f"format must be one of {sorted(FORMATS)}, got {fmt!r}")
    dtype = raw.get("dtype", "float32")
    if dtype not in DTYPES:
        raise _err(source, f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if dtype not in _FORMAT_DTYPES[fmt]:
        raise _err(source, f"dtype {dtype!r} does not fit format {fmt!r}")
    if fmt == "quantized_state_dict" and architecture not in FUSE_PATTERNS:
        raise _err(source, f"architecture {architecture!r} cannot be loaded quantized")
    requires_device = raw.get("requires_device")
    if requires_device is not None and requires_device not in DEVICES:
        raise _err(source, f"requires_device must be null or one of {sorted(DEVICES)}")
    arch_args = raw.get("architecture_args", {})
    if not isinstance(arch_args, dict) or not all(isinstance(k, str) for k in arch_args):
        raise _err(source, "'architecture_args' must be an object")
    measured_raw = raw.get("measured", {})
    if not isinstance(measured_raw, dict) or not all(isinstance(k, str) for k in measured_raw):
        raise _err(source, "'measured' must be an object")
    measured = {k: _number(v, f"measured.{k}", source) for k, v in measured_raw.items()}

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
        variant=variant,
        format=fmt,
        dtype=dtype,
        requires_device=requires_device,
        architecture_args=dict(arch_args),
        measured=measured,
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
    The module is built as ``ARCHITECTURES[architecture](**architecture_args)``, then per format:

    * ``state_dict`` / ``float32``: the state dict is loaded as is.
    * ``state_dict`` / ``float16``: the module is converted with ``.half()`` and the fp16 state
      dict loaded into it; the returned module is float16 (it expects float16 inputs; on CPU,
      call ``.float()`` on it to evaluate the upcast weights).
    * ``quantized_state_dict`` / ``qint8``: the eager-mode int8 structure is rebuilt (QuantWrapper
      -> fuse -> prepare -> convert, x86 engine) and the quantized state dict loaded into it.
      It takes float32 inputs, returns float32 logits, and runs on CPU only.

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
    try:
        model = factory(**manifest.architecture_args)
    except TypeError as exc:
        raise ManifestError(
            f"{manifest_dir}: architecture_args {manifest.architecture_args!r} do not fit "
            f"{manifest.architecture!r}: {exc}"
        ) from exc
    with warnings.catch_warnings():
        # Loading quantized tensors trips torch's own deprecation notices; nothing to act on.
        warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions")
        state = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    if manifest.format == "quantized_state_dict":
        model = _quantized_structure(model, manifest)
    elif manifest.dtype == "float16":
        model = model.half()
    model.load_state_dict(state)
    model.eval()
    return model


def _quantized_structure(model: nn.Module, manifest: Manifest) -> nn.Module:
    """The converted int8 module for ``model`` (scales are placeholders until loaded)."""
    compression = manifest.raw.get("compression")
    engine = QUANT_ENGINE
    if isinstance(compression, dict) and isinstance(compression.get("quantized_engine"), str):
        engine = compression["quantized_engine"]
    prepared = prepare_static(model, manifest.architecture, engine)
    shape = (1, *manifest.inputs[0].shape)
    # A fixed, RNG-free pass so every observer has seen data before convert (the resulting
    # scales/zero points are overwritten by load_state_dict).
    probe = torch.linspace(0.0, 1.0, steps=int(torch.Size(shape).numel())).reshape(shape)
    with torch.no_grad():
        prepared(probe)
    return convert_static(prepared)


def discover(root: Path) -> list[tuple[Path, Manifest]]:
    """Find every ``<root>/<name>/<version>[-<variant>]/manifest.json``, sorted by path.

    Returns ``(manifest_dir, manifest)`` pairs; ``manifest_dir`` is what :func:`load_weights`
    expects. A directory named ``<version>`` must hold a manifest with ``variant`` null, one
    named ``<version>-<variant>`` a manifest with that variant. Raises :class:`ManifestError`
    if a manifest is invalid or its name/version/variant do not match its directory names.
    """
    found: list[tuple[Path, Manifest]] = []
    for path in sorted(root.glob(f"*/*/{MANIFEST_FILENAME}")):
        manifest = load_manifest(path)
        mdir = path.parent
        if (manifest.name, manifest.dir_name) != (mdir.parent.name, mdir.name):
            variant = "" if manifest.variant is None else f" variant {manifest.variant}"
            raise _err(
                str(path),
                f"name/version {manifest.name}/{manifest.version}{variant} do not match "
                f"directory {mdir.parent.name}/{mdir.name} (expected "
                f"{manifest.name}/{manifest.dir_name})",
            )
        found.append((mdir, manifest))
    return found
