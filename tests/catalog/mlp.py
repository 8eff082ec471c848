"""Uploadable archives for tests: small models trained on sklearn's bundled data sets,
saved as TorchScript or torch.export, with manifests and eval data.

``write_mlp(tmp_path, fmt)`` (digits classifier) and ``write_regression(tmp_path, fmt)``
(diabetes) return an :class:`Upload`: the archive, its manifest as a dict, the eval ``.npz``
and the trained module, to compare outputs with. The odd models (one that never returns, one
that asks for 8 GiB, one that returns NaN) and the functions run in child processes live
here too, at module level, so that a spawned child can import them.
"""

from __future__ import annotations

import copy
import functools
import io
import os
import zipfile
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch import nn

Format = Literal["torchscript", "torch_export"]
SEED = 0
DIGITS_LABELS = [str(digit) for digit in range(10)]


class Upload(NamedTuple):
    archive: Path
    manifest: dict[str, Any]
    eval_npz: Path
    reference: nn.Module


class DigitsMLP(nn.Module):
    """64 pixel intensities in 0..16 -> 10 digit logits."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x / 16.0)


class DiabetesMLP(nn.Module):
    """10 scaled features -> disease progression (raw units, about 25..346)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 20.0) * 77.0 + 152.0


class NanOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * float("nan")


class NoLayers(nn.Module):
    """Logits computed without any Linear or convolution layer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :10] * 2.0 - 1.0


class TinyCNN(nn.Module):
    """The 64 pixels as an 8x8 image -> 10 logits, through a convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3)
        self.fc = nn.Linear(8 * 6 * 6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv(x.reshape(-1, 1, 8, 8) / 16.0))
        return self.fc(y.flatten(1))


class Spin(nn.Module):
    """Never returns (for the timeout)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        i = 0
        while i >= 0:
            i += 1
        return x[:, :10]


class Hog(nn.Module):
    """Asks for 8 GiB it never touches (harmless without a limit, refused under one)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        big = torch.empty([2147483648], dtype=torch.float32)  # 2**31 floats
        return x[:, :10] * 0.0 + float(big.numel() > 0)


class Marker:
    """A pickle payload: unpickling it creates the folder ``path`` (a harmless, visible
    stand-in for any code an attacker would run)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.path),))


@functools.cache
def digits_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): pixels float32 0..16, labels int64; 80/20 split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.asarray(bunch.data, dtype=np.float32)
    y = np.asarray(bunch.target, dtype=np.int64)
    order = np.random.default_rng(SEED).permutation(len(y))
    cut = int(len(y) * 0.8)
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


@functools.cache
def diabetes_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): sklearn's scaled features, the raw target."""
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes()
    x = np.asarray(bunch.data, dtype=np.float32)
    y = np.asarray(bunch.target, dtype=np.float32)
    order = np.random.default_rng(SEED).permutation(len(y))
    cut = int(len(y) * 0.8)
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


@functools.cache
def _trained(kind: str) -> nn.Module:
    """Full-batch Adam (the data sets are tiny): well under a second."""
    torch.manual_seed(SEED)
    model: nn.Module
    if kind == "digits":
        x, y, _, _ = digits_data()
        model, steps, lr = DigitsMLP(), 150, 0.02
        target = torch.from_numpy(y)

        def loss(out: torch.Tensor) -> torch.Tensor:
            return nn.functional.cross_entropy(out, target)
    else:
        x, y, _, _ = diabetes_data()
        model, steps, lr = DiabetesMLP(), 100, 0.01  # more overfits (350 patients)
        target = torch.from_numpy(y).reshape(-1, 1)

        def loss(out: torch.Tensor) -> torch.Tensor:
            return nn.functional.mse_loss((out - 152.0) / 77.0, (target - 152.0) / 77.0)

    inputs = torch.from_numpy(x)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        loss(model(inputs)).backward()
        optimizer.step()
    return model.eval()


def trained_digits_mlp() -> nn.Module:
    """A digits MLP trained for a second or so (about 95% test accuracy), a fresh copy."""
    return copy.deepcopy(_trained("digits"))


def trained_diabetes_mlp() -> nn.Module:
    return copy.deepcopy(_trained("diabetes"))


def digits_manifest(**overrides: Any) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "name": "digits-mlp",
        "version": "1.0",
        "description": "Handwritten digit classifier (8x8 images, sklearn load_digits).",
        "task": "classification",
        "inputs": [{"name": "pixels", "dtype": "float32", "shape": [64], "range": [0, 16]}],
        "outputs": [{"name": "logits", "dtype": "float32", "shape": [10]}],
        "labels": DIGITS_LABELS,
        "preprocessing": "8x8 grey levels 0..16, row by row",
        "license": "BSD-3-Clause",
        "training": {"notes": "full-batch Adam, 150 steps"},  # an extra key, kept
    }
    manifest.update(overrides)
    return manifest


def diabetes_manifest(**overrides: Any) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "name": "diabetes-mlp",
        "version": "1.0",
        "description": "Disease progression one year after baseline (sklearn load_diabetes).",
        "task": "regression",
        "inputs": [{"name": "features", "dtype": "float32", "shape": [10], "range": [-1, 1]}],
        "outputs": [{"name": "progression", "dtype": "float32", "shape": [1]}],
        "license": "BSD-3-Clause",
    }
    manifest.update(overrides)
    return manifest


def save_module(module: nn.Module, path: Path, fmt: Format, item_shape: tuple[int, ...]) -> Path:
    """``module`` as a TorchScript archive or a .pt2 with a dynamic batch dimension."""
    module = module.eval()
    if fmt == "torchscript":
        torch.jit.save(torch.jit.script(module), str(path))
        return path
    sample = torch.rand(4, *item_shape)
    batch = torch.export.Dim("batch", min=1, max=65536)
    program = torch.export.export(module, (sample,), dynamic_shapes=({0: batch},))
    torch.export.save(program, path)
    return path


def archive_name(fmt: Format) -> str:
    return "model.pt" if fmt == "torchscript" else "model.pt2"


def write_eval(path: Path, inputs: np.ndarray, **arrays: np.ndarray) -> Path:
    with path.open("wb") as file:
        np.savez(file, inputs=inputs, **arrays)
    return path


def write_mlp(tmp_path: Path, fmt: Format) -> Upload:
    """The digits MLP as an upload: archive, manifest, eval data (the held-out 20%)."""
    module = trained_digits_mlp()
    archive = save_module(module, tmp_path / archive_name(fmt), fmt, (64,))
    _, _, x_test, y_test = digits_data()
    eval_npz = write_eval(tmp_path / "eval.npz", x_test, labels=y_test)
    return Upload(archive, digits_manifest(), eval_npz, module)


def write_regression(tmp_path: Path, fmt: Format) -> Upload:
    module = trained_diabetes_mlp()
    archive = save_module(module, tmp_path / archive_name(fmt), fmt, (10,))
    _, _, x_test, y_test = diabetes_data()
    eval_npz = write_eval(tmp_path / "eval.npz", x_test, targets=y_test)
    return Upload(archive, diabetes_manifest(), eval_npz, module)


def write_near_ties(path: Path, module: nn.Module, items: int = 200) -> Path:
    """Eval data the float model gets 100% right by construction, on its most ambiguous
    inputs: blends of two test images where its two best logits are closest. Any int8
    rounding flips some of them, so an int8 variant loses accuracy on it."""
    _, _, x_test, _ = digits_data()
    rng = np.random.default_rng(SEED)
    a, b = rng.integers(0, len(x_test), size=(2, 20_000))
    t = rng.random((20_000, 1), dtype=np.float32)
    blends = (1 - t) * x_test[a] + t * x_test[b]
    with torch.inference_mode():
        logits = module(torch.from_numpy(blends)).numpy()
    top2 = np.sort(logits, axis=1)[:, -2:]
    closest = np.argsort(top2[:, 1] - top2[:, 0])[:items]
    return write_eval(path, blends[closest], labels=logits[closest].argmax(axis=1))


def malicious_pickle(marker: Path) -> bytes:
    """A torch.save file whose unpickling creates ``marker``."""
    buffer = io.BytesIO()
    torch.save(Marker(marker), buffer)
    return buffer.getvalue()


def rewrite_zip(source: Path, target: Path, replace: dict[str, bytes]) -> Path:
    """A copy of the torch archive ``source`` with the members named (relative to its
    top-level folder) in ``replace`` given new contents."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            relative = info.filename.split("/", 1)[1]
            data = replace.get(relative, src.read(info))
            dst.writestr(info, data)
    return target


# Functions run in a spawned child by the isolation tests (module level, so importable).


def fail_unexpectedly() -> None:
    raise KeyError("boom")


def return_a_payload(marker: str) -> Marker:
    """A result whose unpickling would create ``marker`` in the parent."""
    return Marker(Path(marker))
