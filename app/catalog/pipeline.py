"""From an uploaded archive to the variants Tollgate may serve, each one measured.

:func:`process_archive` validates the uploaded model against its manifest (it loads, takes
the declared input at batch 1 and 2, returns the declared float32 output, finite), checks
the optional eval data, builds an int8 variant (and an fp16 one on a CUDA host), and
measures every model the same way: accuracy or R^2/MAE on the eval data, file size, CPU
items/s at batch 1 and 32, GPU items/s at batch 32 where there is a GPU. A variant is
published only if its accuracy is within ``tolerance`` of the base's, measured on the
operator's eval data; without eval data none is.

It runs the operator's model in this process: call it through
app/catalog/isolate.py's ``process_archive_isolated`` (a child process with a time and
memory limit) unless the archive is trusted.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import statistics
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray

from app.catalog.archive import ArchiveFormat, ArchiveRejected, inspect_archive, load_archive
from app.catalog.graph import optimize_for_cpu
from app.catalog.spec import ArchiveManifest

__all__ = [
    "BuiltVariant",
    "FailureCode",
    "PipelineReport",
    "ValidationFailed",
    "is_out_of_memory",
    "process_archive",
]

FailureCode = Literal[
    "archive_rejected",
    "manifest_mismatch",
    "output_shape",
    "output_dtype",
    "nan_output",
    "load_failed",
    "eval_invalid",
    "timeout",
    "memory_limit",
    "crashed",
]
EVAL_MAX_ITEMS = 100_000
CALIBRATION_ITEMS = 256  # static int8: a seeded subset of the eval inputs
SEED = 0
TIMING_LOOPS = 3  # items/s is the median of this many loops of >= measure_seconds each
EVAL_BATCH = 256
QUANT_ENGINE = "x86"

_CONV_OPS = {"aten::conv1d", "aten::conv2d", "aten::conv3d", "aten::_convolution"}
# What quantize_dynamic_jit rewrites: aten::linear (scripted nn.Linear, traced F.linear).
_LINEAR_OPS = {"aten::linear", "aten::addmm", "aten::matmul"}


class ValidationFailed(Exception):
    """The upload is refused: ``code`` is machine-readable, ``reason`` (also ``str(exc)``)
    says what is wrong in words an operator can act on."""

    def __init__(self, code: FailureCode, reason: str) -> None:
        super().__init__(reason)
        self.code: FailureCode = code
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.code, self.reason))


@dataclass(frozen=True)
class BuiltVariant:
    """One servable model built from an upload: the base (``variant=None``) or a variant."""

    variant: str | None  # None = the uploaded base, "int8", "fp16"
    format: ArchiveFormat  # the base: as uploaded; variants: "torchscript"
    file: str  # inside out_dir; "" for the base (the uploaded archive is not copied)
    sha256: str
    bytes: int
    dtype: str  # "float32" | "qint8" | "float16"
    requires_device: str | None
    published: bool
    unpublished_reason: str | None
    measured: dict[str, float]
    compression: dict[str, str]


@dataclass(frozen=True)
class PipelineReport:
    format: ArchiveFormat
    variants: list[BuiltVariant]  # the base first
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (variant, reason)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "variants": [asdict(variant) for variant in self.variants],
            "skipped": [[variant, reason] for variant, reason in self.skipped],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PipelineReport:
        return cls(
            format=data["format"],
            variants=[BuiltVariant(**variant) for variant in data["variants"]],
            skipped=[(str(variant), str(reason)) for variant, reason in data["skipped"]],
        )


@dataclass(frozen=True)
class _EvalData:
    inputs: torch.Tensor  # float32, (N, *input shape)
    labels: NDArray[np.int64] | None  # classification: (N, *output shape[:-1])
    targets: NDArray[np.float64] | None  # regression: (N, output items)


@dataclass
class _Candidate:
    """A model to measure, before it becomes a :class:`BuiltVariant`."""

    variant: str | None
    module: torch.nn.Module
    format: ArchiveFormat
    path: Path
    file: str
    dtype: str
    device: str
    compression: dict[str, str]


def process_archive(
    archive: Path,
    manifest: ArchiveManifest,
    eval_path: Path | None,
    out_dir: Path,
    *,
    tolerance: float = 0.01,
    measure_seconds: float = 0.2,
    threads: int = 1,
) -> PipelineReport:
    """Validate ``archive`` against ``manifest``, build its variants into ``out_dir`` and
    measure them all.

    Raises :class:`ValidationFailed` if the uploaded model itself is unusable; a variant that
    cannot be built is only listed in ``skipped``. ``tolerance`` is the accuracy drop
    allowed (0.01 = 1 point; for regression, of R^2). On failure ``out_dir`` may hold
    partial files: give it a fresh folder and discard it."""
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError("tolerance must be a finite number >= 0")
    out_dir.mkdir(parents=True, exist_ok=True)
    with _torch_settings(threads):
        try:
            fmt = inspect_archive(archive)
        except ArchiveRejected as exc:
            raise ValidationFailed("archive_rejected", exc.reason) from None
        try:
            module = load_archive(archive, fmt)
        except ArchiveRejected as exc:
            raise ValidationFailed("archive_rejected", exc.reason) from None
        except Exception as exc:
            raise _failure("load_failed", f"the archive did not load: {_short(exc)}", exc) from None
        _check_output(module, manifest, "the model")
        evaluation = _load_eval(eval_path, manifest) if eval_path is not None else None

        base = _Candidate(None, module, fmt, archive, "", "float32", "cpu", {})
        candidates, skipped = [base], []
        int8 = _build_int8(module, fmt, manifest, evaluation, out_dir)
        if isinstance(int8, str):
            skipped.append(("int8", int8))
        else:
            candidates.append(int8)
        fp16 = _build_fp16(archive, fmt, manifest, out_dir)
        if isinstance(fp16, str):
            skipped.append(("fp16", fp16))
        else:
            candidates.append(fp16)

        built: list[BuiltVariant] = []
        for candidate in candidates:
            try:
                measured = _measure(candidate, manifest, evaluation, measure_seconds)
            except ValidationFailed as exc:
                if candidate.variant is None or exc.code == "memory_limit":
                    raise
                skipped.append((candidate.variant, exc.reason))
                continue
            if candidate.variant is None and torch.cuda.is_available():
                measured.update(_base_on_gpu(archive, fmt, manifest, measure_seconds))
            published, reason = _publication(candidate, measured, built, evaluation, tolerance)
            built.append(_built(candidate, measured, published, reason))
        return PipelineReport(format=fmt, variants=built, skipped=skipped)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure (a memory limit or a full device)."""
    if isinstance(exc, MemoryError | torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(
        marker in text
        for marker in (
            "can't allocate memory",
            "not enough memory",
            "std::bad_alloc",
            "out of memory",
        )
    )


def _failure(code: FailureCode, reason: str, exc: BaseException) -> ValidationFailed:
    if is_out_of_memory(exc):
        return ValidationFailed("memory_limit", f"ran out of memory: {_short(exc)}")
    return ValidationFailed(code, reason)


def _short(exc: BaseException) -> str:
    """The informative line of an exception: TorchScript puts its traceback first."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:300]


@contextlib.contextmanager
def _torch_settings(threads: int) -> Iterator[None]:
    """Thread count, x86 int8 kernels, and deterministic mode off (the x86 quantized kernels
    refuse to run under it), restored afterwards: this may run inside a server's process."""
    old_threads = torch.get_num_threads()
    old_engine = torch.backends.quantized.engine
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(max(1, threads))
    if QUANT_ENGINE in torch.backends.quantized.supported_engines:
        torch.backends.quantized.engine = QUANT_ENGINE
    torch.use_deterministic_algorithms(False)
    try:
        with warnings.catch_warnings():
            # torch.ao.quantization's deprecation notices and tracer advisories.
            warnings.simplefilter("ignore")
            yield
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.backends.quantized.engine = old_engine
        torch.set_num_threads(old_threads)


def _sample(
    manifest: ArchiveManifest, batch: int, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """A seeded input of the declared item shape, inside the declared range (or [0, 1])."""
    spec = manifest.inputs[0]
    low, high = spec.range if spec.range is not None else (0.0, 1.0)
    generator = torch.Generator().manual_seed(SEED + batch)
    x = torch.rand((batch, *spec.shape), generator=generator) * (high - low) + low
    return x.to(device=device, dtype=dtype)


def _check_output(
    module: torch.nn.Module,
    manifest: ArchiveManifest,
    what: str,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> None:
    """The model takes the declared input at any batch size and returns the declared output."""
    item_shape = tuple(manifest.outputs[0].shape)
    for batch in (2, 1):
        x = _sample(manifest, batch, device, dtype)
        try:
            with torch.inference_mode():
                y = module(x)
        except Exception as exc:
            hint = (
                " (it must accept any batch size: export it with a dynamic batch dimension, "
                "torch.export.Dim)"
                if batch == 1
                else ""
            )
            raise _failure(
                "manifest_mismatch",
                f"{what} failed on a {tuple(x.shape)} input of the declared shape{hint}: "
                f"{_short(exc)}",
                exc,
            ) from None
        if not isinstance(y, torch.Tensor):
            raise ValidationFailed(
                "manifest_mismatch",
                f"{what} returned a {type(y).__name__}; a single tensor is expected",
            )
        if tuple(y.shape) != (batch, *item_shape):
            raise ValidationFailed(
                "output_shape",
                f"{what} returned shape {tuple(y.shape)} for a batch of {batch}; the manifest "
                f"declares outputs[0].shape {list(item_shape)}, so {(batch, *item_shape)} "
                "was expected",
            )
        if y.dtype != dtype:
            raise ValidationFailed(
                "output_dtype",
                f"{what} returned {str(y.dtype).removeprefix('torch.')}; the manifest declares "
                f"{str(dtype).removeprefix('torch.')}",
            )
        if not bool(torch.isfinite(y).all()):
            raise ValidationFailed(
                "nan_output",
                f"{what} returned NaN or infinite values for an input inside the declared range",
            )


def _load_eval(path: Path, manifest: ArchiveManifest) -> _EvalData:
    """Read and check the eval ``.npz`` (no pickles): ``inputs`` plus ``labels`` or ``targets``."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not hasattr(npz, "files"):
                raise ValidationFailed("eval_invalid", "the eval data must be an .npz archive")
            arrays = {key: npz[key] for key in ("inputs", "labels", "targets") if key in npz.files}
    except ValidationFailed:
        raise
    except Exception as exc:
        raise _failure(
            "eval_invalid",
            f"the eval data is not a readable .npz without pickles: {_short(exc)}",
            exc,
        ) from None
    in_spec, out_spec = manifest.inputs[0], manifest.outputs[0]

    def invalid(reason: str) -> ValidationFailed:
        return ValidationFailed("eval_invalid", f"eval data: {reason}")

    if "inputs" not in arrays:
        raise invalid("the .npz has no `inputs` array")
    inputs = arrays["inputs"]
    n = inputs.shape[0] if inputs.ndim else 0
    if inputs.shape[1:] != tuple(in_spec.shape) or inputs.ndim != len(in_spec.shape) + 1:
        raise invalid(
            f"`inputs` has shape {inputs.shape}; (N, {', '.join(map(str, in_spec.shape))}) "
            "was expected (the declared input shape with a leading item axis)"
        )
    if not 1 <= n <= EVAL_MAX_ITEMS:
        raise invalid(f"`inputs` must hold between 1 and {EVAL_MAX_ITEMS} items (got {n})")
    if inputs.dtype.kind not in "iuf":
        raise invalid(f"`inputs` must be numbers (got dtype {inputs.dtype})")
    values = inputs.astype(np.float32)
    if not np.isfinite(values).all():
        raise invalid("`inputs` holds NaN or infinite values")
    if in_spec.range is not None:
        low, high = in_spec.range
        if values.min() < low or values.max() > high:
            raise invalid(
                f"`inputs` spans [{values.min():g}, {values.max():g}], outside the declared "
                f"range [{low:g}, {high:g}]"
            )
    labels: NDArray[np.int64] | None = None
    targets: NDArray[np.float64] | None = None
    if manifest.task == "classification":
        if "labels" not in arrays:
            found = " (found `targets`: that is for regression)" if "targets" in arrays else ""
            raise invalid(f"classification eval data needs integer `labels`{found}")
        raw = arrays["labels"]
        want = (n, *out_spec.shape[:-1])
        if raw.shape != want:
            raise invalid(f"`labels` has shape {raw.shape}; {want} was expected")
        if raw.dtype.kind not in "iu":
            raise invalid(f"`labels` must be integer class indices (got dtype {raw.dtype})")
        classes = out_spec.shape[-1]
        if raw.min() < 0 or raw.max() >= classes:
            raise invalid(f"`labels` must lie in [0, {classes}) (got {raw.min()}..{raw.max()})")
        labels = raw.astype(np.int64)
    else:
        if "targets" not in arrays:
            found = " (found `labels`: that is for classification)" if "labels" in arrays else ""
            raise invalid(f"regression eval data needs `targets`{found}")
        raw = arrays["targets"]
        items = math.prod(out_spec.shape)
        if not (raw.shape == (n, *out_spec.shape) or (raw.shape == (n,) and items == 1)):
            raise invalid(
                f"`targets` has shape {raw.shape}; (N,) or (N, "
                f"{', '.join(map(str, out_spec.shape))}) was expected"
            )
        if raw.dtype.kind not in "iuf" or not np.isfinite(raw).all():
            raise invalid("`targets` must be finite numbers")
        targets = raw.astype(np.float64).reshape(n, items)
    return _EvalData(torch.from_numpy(values), labels, targets)


def _build_int8(
    module: torch.nn.Module,
    fmt: ArchiveFormat,
    manifest: ArchiveManifest,
    evaluation: _EvalData | None,
    out_dir: Path,
) -> _Candidate | str:
    """The int8 variant, or why there is none. Static post-training quantization for a
    model with convolutions (calibrated on eval inputs), dynamic for Linear layers."""
    from torch.ao.quantization import (
        default_dynamic_qconfig,
        get_default_qconfig,
        quantize_dynamic_jit,
        quantize_jit,
    )

    compression: dict[str, str] = {"quantized_engine": torch.backends.quantized.engine}
    try:
        if fmt == "torch_export":
            scripted = torch.jit.trace(  # type: ignore[no-untyped-call]
                module, _sample(manifest, 2), check_trace=False
            )
            compression["source"] = "torch.jit.trace of the exported program's module"
        else:
            scripted = module
        kinds = {node.kind() for node in scripted.inlined_graph.nodes()}
        has_conv, has_linear = bool(kinds & _CONV_OPS), bool(kinds & _LINEAR_OPS)
        if has_conv and evaluation is not None:
            chosen = torch.from_numpy(
                np.sort(
                    np.random.default_rng(SEED).choice(
                        len(evaluation.inputs),
                        size=min(CALIBRATION_ITEMS, len(evaluation.inputs)),
                        replace=False,
                    )
                )
            )
            calibration = list(evaluation.inputs[chosen].split(64))  # type: ignore[no-untyped-call]
            qconfig = get_default_qconfig(QUANT_ENGINE)  # type: ignore[no-untyped-call]
            quantized = quantize_jit(  # type: ignore[no-untyped-call]
                scripted, {"": qconfig}, _calibrate, [calibration]
            )
            compression.update(
                method="static post-training quantization of convolution and Linear layers "
                "(quantize_jit)",
                qconfig=f"get_default_qconfig({QUANT_ENGINE!r})",
                calibration=f"{len(chosen)} eval inputs chosen with seed {SEED}",
            )
        elif has_linear:
            quantized = quantize_dynamic_jit(  # type: ignore[no-untyped-call]
                scripted, {"": default_dynamic_qconfig}
            )
            compression.update(
                method="dynamic quantization of Linear layers (quantize_dynamic_jit)",
                qconfig="default_dynamic_qconfig",
            )
        elif has_conv:
            return (
                "the convolutions need eval data to calibrate static quantization, and there "
                "are no Linear layers to quantize dynamically"
            )
        else:
            return "no Linear or convolution layers to quantize"
        layers = sum(
            1 for node in quantized.inlined_graph.nodes() if node.kind().startswith("quantized::")
        )
        if layers == 0:
            return "quantization changed no layer (no layer of a kind quantize_jit supports)"
        compression["quantized_layers"] = str(layers)
        path = out_dir / "int8.pt"
        torch.jit.save(quantized, str(path))
        loaded = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
        _check_output(loaded, manifest, "the int8 variant")
    except ValidationFailed as exc:
        return exc.reason
    except Exception as exc:
        return f"the int8 build failed: {_short(exc)}"
    return _Candidate("int8", loaded, "torchscript", path, path.name, "qint8", "cpu", compression)


def _calibrate(model: torch.nn.Module, batches: list[torch.Tensor]) -> None:
    with torch.inference_mode():
        for batch in batches:
            model(batch)


def _build_fp16(
    archive: Path, fmt: ArchiveFormat, manifest: ArchiveManifest, out_dir: Path
) -> _Candidate | str:
    """The float16 variant, on CUDA only (CPU float16 kernels are slow or missing). It takes
    and returns float16: the server casts from and to the API's float32."""
    if not torch.cuda.is_available():
        return "needs a CUDA GPU; this host has none"
    try:
        module = load_archive(archive, fmt, "cuda").half()
        if fmt == "torch_export":
            sample = _sample(manifest, 2, "cuda", torch.float16)
            module = torch.jit.trace(  # type: ignore[no-untyped-call]
                module, sample, check_trace=False
            )
        path = out_dir / "fp16.pt"
        torch.jit.save(module, str(path))
        loaded = torch.jit.load(str(path), map_location="cuda")  # type: ignore[no-untyped-call]
        _check_output(loaded, manifest, "the fp16 variant", "cuda", torch.float16)
    except ValidationFailed as exc:
        return exc.reason
    except Exception as exc:
        return f"the fp16 build failed: {_short(exc)}"
    compression = {
        "method": "cast of the weights to float16 (.half())",
        "io_dtype": "float16 (the server casts the API's float32)",
    }
    return _Candidate(
        "fp16", loaded, "torchscript", path, path.name, "float16", "cuda", compression
    )


def _measure(
    candidate: _Candidate,
    manifest: ArchiveManifest,
    evaluation: _EvalData | None,
    seconds: float,
) -> dict[str, float]:
    what = "the model" if candidate.variant is None else f"the {candidate.variant} variant"
    dtype = torch.float16 if candidate.dtype == "float16" else torch.float32
    measured: dict[str, float] = {"size_bytes": float(candidate.path.stat().st_size)}
    if evaluation is not None:
        outputs = _predict(candidate.module, evaluation.inputs, candidate.device, dtype)
        if not np.isfinite(outputs).all():
            raise ValidationFailed(
                "nan_output", f"{what} returned NaN or infinite values on the eval inputs"
            )
        measured.update(_metrics(outputs, evaluation, manifest))
    if candidate.device == "cpu":
        # Timed as the server runs it: a float32 model through the optimized CPU graph it is
        # served with (app/catalog/graph.py), not as loaded; int8 runs its own kernels.
        served = candidate.module
        if candidate.dtype == "float32":
            served, _ = optimize_for_cpu(
                candidate.module, tuple(manifest.inputs[0].shape), "script"
            )
        for batch in (1, 32):
            measured[f"cpu_items_per_s_batch{batch}"] = _items_per_s(
                served, manifest, batch, "cpu", dtype, seconds
            )
    else:
        measured["gpu_items_per_s_batch32"] = _items_per_s(
            candidate.module, manifest, 32, candidate.device, dtype, seconds
        )
    return measured


def _base_on_gpu(
    archive: Path, fmt: ArchiveFormat, manifest: ArchiveManifest, seconds: float
) -> dict[str, float]:
    """The base's GPU throughput; nothing if it does not run there (it is served on CPU)."""
    try:
        module = load_archive(archive, fmt, "cuda")
        rate = _items_per_s(module, manifest, 32, "cuda", torch.float32, seconds)
    except Exception:
        return {}
    finally:
        torch.cuda.empty_cache()
    return {"gpu_items_per_s_batch32": rate}


def _predict(
    module: torch.nn.Module, inputs: torch.Tensor, device: str, dtype: torch.dtype
) -> NDArray[np.float64]:
    outputs = []
    with torch.inference_mode():
        for batch in inputs.split(EVAL_BATCH):  # type: ignore[no-untyped-call]
            y = module(batch.to(device=device, dtype=dtype))
            outputs.append(y.float().cpu().reshape(len(batch), -1).numpy().astype(np.float64))
    return np.concatenate(outputs)


def _metrics(
    outputs: NDArray[np.float64], evaluation: _EvalData, manifest: ArchiveManifest
) -> dict[str, float]:
    if evaluation.labels is not None:
        classes = manifest.outputs[0].shape[-1]
        predicted = outputs.reshape(*evaluation.labels.shape, classes).argmax(axis=-1)
        return {"accuracy": float((predicted == evaluation.labels).mean())}
    assert evaluation.targets is not None
    targets = evaluation.targets
    residual = float(((outputs - targets) ** 2).sum())
    total = float(((targets - targets.mean(axis=0)) ** 2).sum())
    r2 = 1.0 - residual / total if total > 0 else (1.0 if residual == 0 else 0.0)
    return {"r2": r2, "mae": float(np.abs(outputs - targets).mean())}


def _items_per_s(
    module: torch.nn.Module,
    manifest: ArchiveManifest,
    batch: int,
    device: str,
    dtype: torch.dtype,
    seconds: float,
) -> float:
    """Median items/s over a few loops of at least ``seconds`` each, after a warm-up."""
    x = _sample(manifest, batch, device, dtype)
    sync: Callable[[], None] = torch.cuda.synchronize if device != "cpu" else (lambda: None)
    rates = []
    with torch.inference_mode():
        for _ in range(2):
            module(x)
        sync()
        for _ in range(TIMING_LOOPS):
            calls, start = 0, time.perf_counter()
            while True:
                module(x)
                sync()
                calls += 1
                elapsed = time.perf_counter() - start
                if elapsed >= seconds:
                    break
            rates.append(calls * batch / elapsed)
    return float(statistics.median(rates))


def _publication(
    candidate: _Candidate,
    measured: dict[str, float],
    built: list[BuiltVariant],
    evaluation: _EvalData | None,
    tolerance: float,
) -> tuple[bool, str | None]:
    """Whether a variant may be served, and if not, why (the base always may)."""
    if candidate.variant is None:
        return True, None
    if evaluation is None:
        return False, "no eval data: accuracy not measured"
    base = built[0].measured
    if "accuracy" in measured:
        value, reference = measured["accuracy"], base["accuracy"]
        drop = reference - value
        if drop > tolerance:
            return False, (
                f"accuracy {value:.3f} vs base {reference:.3f}: drop {drop * 100:.1f} points "
                f"> tolerance {tolerance * 100:.1f}"
            )
        return True, None
    value, reference = measured["r2"], base["r2"]
    drop = reference - value
    if drop > tolerance:
        return False, (
            f"R^2 {value:.3f} vs base {reference:.3f}: drop {drop:.4f} > tolerance {tolerance:.4f}"
        )
    return True, None


def _built(
    candidate: _Candidate, measured: dict[str, float], published: bool, reason: str | None
) -> BuiltVariant:
    return BuiltVariant(
        variant=candidate.variant,
        format=candidate.format,
        file=candidate.file,
        sha256=_sha256(candidate.path),
        bytes=candidate.path.stat().st_size,
        dtype=candidate.dtype,
        requires_device="cuda" if candidate.dtype == "float16" else None,
        published=published,
        unpublished_reason=reason,
        measured=measured,
        compression=candidate.compression,
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
