"""Compare ways of running a float32 model on the CPU, one thread, in process.

    python -m scripts.cpu_graphs [--model models/cnn/1] [--modes script,onednn,inductor]

Each mode runs in its own subprocess (oneDNN fusion and inductor change process-wide state),
pinned to CPU 0 when ``taskset`` exists. Per mode: the time of a batch of 32 and items/s over a
fixed sequence of mixed batch sizes (1-64, what the dynamic batcher forms), after 100 warm-up
calls of that sequence. Modes: ``eager``, ``channels_last`` and ``script`` as Tollgate builds
them (app/catalog/graph.py); ``onednn`` (TorchScript with oneDNN Graph fusion) and
``inductor`` (``torch.compile``, freezing, dynamic shapes), which Tollgate does not use:
results in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

SIZES = (1, 2, 5, 8, 16, 31, 32, 33, 48, 63, 64)


def _module(model_dir: Path, mode: str) -> tuple[torch.nn.Module, tuple[int, ...]]:
    from app.catalog.archive import load_archive
    from app.catalog.graph import _build
    from models.manifest import load_manifest, load_weights

    manifest = load_manifest(model_dir / "manifest.json")
    shape = tuple(manifest.inputs[0].shape)
    if mode == "inductor":
        # torch.compile traces Python modules, not TorchScript: the trained eager module
        import torch._inductor.config as inductor

        inductor.freezing = True
        module = load_weights(model_dir, manifest).eval()
        return torch.compile(module, dynamic=True), shape  # type: ignore[return-value]
    # The archive Tollgate serves (models.package), as Tollgate loads it.
    archive = load_archive(model_dir / manifest.raw["archive"]["file"], "torchscript")
    if mode == "eager":
        return archive, shape
    if mode in ("channels_last", "script"):
        return _build(archive, shape, mode), shape  # type: ignore[arg-type]
    if mode == "onednn":
        torch.jit.enable_onednn_fusion(True)
        return torch.jit.freeze(archive), shape
    raise SystemExit(f"unknown mode {mode!r}")


def measure(model_dir: Path, mode: str) -> str:
    torch.set_num_threads(1)
    started = time.perf_counter()
    module, shape = _module(model_dir, mode)
    rng = random.Random(0)
    sizes = [rng.choice(SIZES) for _ in range(400)]
    inputs = {b: torch.rand(b, *shape) for b in SIZES}
    with torch.inference_mode():
        for b in sizes[:100]:
            module(inputs[b])
        ready_s = time.perf_counter() - started
        items, t = 0, time.perf_counter()
        for b in sizes[100:]:
            module(inputs[b])
            items += b
        mixed = items / (time.perf_counter() - t)
        n, t = 200, time.perf_counter()
        for _ in range(n):
            module(inputs[32])
        b32_ms = (time.perf_counter() - t) / n * 1e3
    return (
        f"| {mode} | {b32_ms:.2f} ms | {mixed:,.0f} items/s | {ready_s:.1f} s to build + warm up |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/cnn/1"))
    parser.add_argument("--modes", default="eager,channels_last,script,onednn,inductor")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the subprocess: measure one mode
    args = parser.parse_args()
    if args.one:
        print(measure(args.model, args.one), flush=True)
        return
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    print("| mode | batch 32 | mixed batch sizes | build |\n|---|---|---|---|", flush=True)
    for mode in args.modes.split(","):
        cmd = [*pin, sys.executable, "-m", "scripts.cpu_graphs", "--model", str(args.model)]
        done = subprocess.run([*cmd, "--one", mode], capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("|")]
        print(lines[-1] if lines else f"| {mode} | failed: {done.stderr.strip()[-200:]} |")


if __name__ == "__main__":
    main()
