"""Eager-mode post-training static int8 quantization (x86 CPU kernels).

The same two steps are used when compressing (with real calibration data) and when loading a
``quantized_state_dict`` (with a throwaway calibration pass whose scales are then overwritten
by ``load_state_dict``), so the module structure always matches:

    QuantWrapper(QuantStub -> model -> DeQuantStub) -> fuse conv/linear+relu -> prepare
    -> calibrate -> convert
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Iterator

import torch
from torch import nn
from torch.ao import quantization as tq

from models.architectures import FUSE_PATTERNS

__all__ = [
    "QUANT_ENGINE",
    "allow_nondeterministic",
    "convert_static",
    "prepare_static",
    "quantize_static",
    "use_engine",
]

QUANT_ENGINE = "x86"


@contextlib.contextmanager
def allow_nondeterministic() -> Iterator[None]:
    """Temporarily lift ``torch.use_deterministic_algorithms(True)``.

    The x86 quantized kernels (e.g. ``quantized::linear_relu``) resize their outputs with an op
    torch flags as nondeterministic, so int8 inference fails under deterministic mode even
    though its results are reproducible on a given machine.
    """
    was = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(False)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was, warn_only=warn_only)


def use_engine(engine: str = QUANT_ENGINE) -> None:
    """Select the quantized kernel backend (process-wide) if it is not already selected."""
    if engine not in torch.backends.quantized.supported_engines:
        raise RuntimeError(f"quantized engine {engine!r} is not supported on this machine")
    if torch.backends.quantized.engine != engine:
        torch.backends.quantized.engine = engine


def prepare_static(model: nn.Module, architecture: str, engine: str = QUANT_ENGINE) -> nn.Module:
    """Wrap ``model`` (fp32, eval) in Quant/DeQuant stubs, fuse, and insert observers."""
    if architecture not in FUSE_PATTERNS:
        raise ValueError(f"no quantization fuse pattern for architecture {architecture!r}")
    use_engine(engine)
    model.eval()
    wrapped = tq.QuantWrapper(model)
    wrapped.eval()
    fuse = [[f"module.{name}" for name in group] for group in FUSE_PATTERNS[architecture]]
    fused = tq.fuse_modules(wrapped, fuse, inplace=False)  # type: ignore[no-untyped-call]
    fused.qconfig = tq.get_default_qconfig(engine)  # type: ignore[no-untyped-call]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # observer/reduce_range advisories
        prepared: nn.Module = tq.prepare(fused, inplace=False)  # type: ignore[no-untyped-call]
    return prepared


def quantize_static(
    model: nn.Module,
    architecture: str,
    calibration: Iterable[torch.Tensor],
    engine: str = QUANT_ENGINE,
) -> nn.Module:
    """Prepare, run ``calibration`` batches through the observers, and convert to int8."""
    prepared = prepare_static(model, architecture, engine)
    with torch.no_grad():
        for batch in calibration:
            prepared(batch)
    return convert_static(prepared)


def convert_static(prepared: nn.Module) -> nn.Module:
    """Swap the observed float modules of ``prepared`` for their int8 counterparts (eval)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized: nn.Module = tq.convert(prepared, inplace=False)  # type: ignore[no-untyped-call]
    quantized.eval()
    return quantized
