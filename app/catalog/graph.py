"""How a float32 model runs on the CPU: the execution graph chosen at load time.

Measured on one core (torch 2.13, the shipped fp32 ``cnn``, ms per forward pass):

=============  =========  ========  ========
graph          batch 1    batch 8   batch 32
=============  =========  ========  ========
eager (NCHW)   0.53       2.49      10.4
channels_last  0.39       1.24      4.9
script         0.42       ~1.0      2.7
=============  =========  ========  ========

``script`` traces the module, freezes it and runs ``torch.jit.optimize_for_inference``: the
convolutions get oneDNN prepacked weights and fused ReLUs, and activations stay in oneDNN's
blocked layout between layers. TorchScript is deprecated upstream, so every optimized module
is checked against the eager module on fresh inputs before it serves anything, and any
failure (an exception, a missing API in a later torch, a numeric mismatch) falls back to the
next mode: ``script`` -> ``channels_last`` -> ``eager``. CUDA modules, half precision and
int8 (already oneDNN/FBGEMM kernels) always run eager.
"""

from __future__ import annotations

import copy
import logging
import warnings

import torch

from app.config import CpuGraph

__all__ = ["CpuGraph", "applies_to", "optimize_for_cpu"]

_FALLBACK: dict[str, CpuGraph] = {"script": "channels_last", "channels_last": "eager"}
_CHECK_BATCHES = (1, 5)  # neither is the traced batch size (2), so shapes really vary
_RTOL = 1e-4
_ATOL = 1e-4

log = logging.getLogger(__name__)


def applies_to(dtype: str) -> bool:
    """Whether a model runs through the CPU graph when on a CPU: float32 only (int8 has its
    own kernels; float16 is served on CUDA only)."""
    return dtype == "float32"


def optimize_for_cpu(
    module: torch.nn.Module, item_shape: tuple[int, ...], mode: CpuGraph
) -> tuple[torch.nn.Module, CpuGraph]:
    """Return ``(module to serve, mode actually used)`` for an eval-mode float32 module."""
    want = mode
    while want != "eager":
        try:
            candidate = _build(module, item_shape, want)
            _check(module, candidate, item_shape)
        except Exception as exc:  # any failure means "serve the next mode"
            log.warning(
                "cpu graph %s unavailable, falling back to %s: %s",
                want,
                _FALLBACK[want],
                exc,
                extra={"graph": want},
            )
            want = _FALLBACK[want]
            continue
        return candidate, want
    return module, "eager"


def _build(module: torch.nn.Module, item_shape: tuple[int, ...], mode: CpuGraph) -> torch.nn.Module:
    clone = copy.deepcopy(module)
    if not isinstance(clone, torch.fx.GraphModule):  # torch.export modules refuse eval()
        clone.eval()
    if mode == "channels_last":
        # Module.to(memory_format=...) is documented but missing from torch's type stubs.
        channels_last: torch.nn.Module = clone.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        return channels_last
    example = torch.rand(2, *item_shape)
    with warnings.catch_warnings():
        # Upstream's TorchScript deprecation notices; a TracerWarning still shows (and a
        # trace it warns about is caught by _check).
        warnings.filterwarnings("ignore", message=r".*is deprecated", category=Warning)
        if isinstance(clone, torch.jit.ScriptModule):
            traced = clone  # a TorchScript archive: already a graph
        else:
            with torch.no_grad():
                traced = torch.jit.trace(clone, example)  # type: ignore[no-untyped-call]
        optimized: torch.nn.Module = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
    return optimized


def _check(
    reference: torch.nn.Module, candidate: torch.nn.Module, item_shape: tuple[int, ...]
) -> None:
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for n in _CHECK_BATCHES:
            x = torch.rand(n, *item_shape, generator=generator)
            want, got = reference(x), candidate(x)
            if got.shape != want.shape or got.dtype != want.dtype:
                raise ValueError(
                    f"output {tuple(got.shape)} {got.dtype}, "
                    f"eager gives {tuple(want.shape)} {want.dtype}"
                )
            if not torch.allclose(got, want, rtol=_RTOL, atol=_ATOL):
                diff = float((got - want).abs().max())
                raise ValueError(f"outputs differ from eager by up to {diff:.3g} at batch {n}")
