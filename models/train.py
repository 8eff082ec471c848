"""Train the shipped models deterministically and write weights + manifests.

Usage::

    python -m models.train                 # both models, into the models/ package folder
    python -m models.train --only cnn --out /tmp/zoo

Hyperparameters were chosen on validation splits carved from the *training* 80%; the held-out
test 20% is only evaluated once, after training, to fill in the manifest metrics.
Two runs produce byte-identical ``weights.pt`` and ``manifest.json`` files.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LinearRegression
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from torch import nn
from torch.nn import functional
from tqdm import tqdm

from models.architectures import DiabetesLinReg, DigitsCNN
from models.data import Split, diabetes_split, digits_split, indices_sha256
from models.manifest import MANIFEST_FILENAME, sha256_bytes

__all__ = [
    "DEFAULT_OUT",
    "VERSION",
    "CNNConfig",
    "LinRegConfig",
    "closed_form_r2",
    "evaluate_classifier",
    "evaluate_regressor",
    "main",
    "random_shift",
    "run_cnn",
    "run_linreg",
    "serialize_state_dict",
    "set_determinism",
    "train_cnn",
    "train_linreg",
    "write_artifacts",
]

DEFAULT_OUT = Path(__file__).resolve().parent
VERSION = "1"
SEED = 0
NUM_THREADS = 1
WEIGHTS_FILENAME = "weights.pt"


@dataclass(frozen=True)
class CNNConfig:
    epochs: int = 20
    lr: float = 2e-3
    batch_size: int = 32
    max_shift: int = 2  # random translation augmentation, in pixels of the 28x28 image


@dataclass(frozen=True)
class LinRegConfig:
    steps: int = 20_000  # full-batch Adam steps
    lr: float = 1.0


def set_determinism(seed: int, num_threads: int = NUM_THREADS) -> None:
    """Seed torch and force deterministic kernels with a fixed intra-op thread count."""
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(num_threads)


def random_shift(x: torch.Tensor, generator: torch.Generator, max_shift: int) -> torch.Tensor:
    """Translate each image in ``[N, C, H, W]`` by up to ``max_shift`` px (zero fill)."""
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape
    padded = functional.pad(x, (max_shift, max_shift, max_shift, max_shift))
    offsets = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=generator).tolist()
    return torch.stack(
        [padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets)]
    )


def train_cnn(
    train: Split, cfg: CNNConfig = CNNConfig(), seed: int = SEED, progress: bool = True
) -> DigitsCNN:
    torch.manual_seed(seed)
    model = DigitsCNN()
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    batches_per_epoch = math.ceil(len(train) / cfg.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=cfg.epochs * batches_per_epoch
    )
    for epoch in range(cfg.epochs):
        model.train()
        perm = torch.randperm(len(train), generator=generator)
        bar = tqdm(
            range(batches_per_epoch),
            desc=f"cnn epoch {epoch + 1:>2}/{cfg.epochs}",
            unit="batch",
            disable=not progress,
            leave=epoch + 1 == cfg.epochs,
        )
        total_loss, correct = 0.0, 0
        for b in bar:
            idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            xb = random_shift(train.x[idx], generator, cfg.max_shift)
            yb = train.y[idx]
            optimizer.zero_grad(set_to_none=True)
            logits = model(xb)
            loss = functional.cross_entropy(logits, yb)
            torch.autograd.backward(loss)
            optimizer.step()
            scheduler.step()
            total_loss += loss.item() * len(idx)
            correct += int((logits.argmax(dim=1) == yb).sum().item())
            seen = min((b + 1) * cfg.batch_size, len(train))
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.4f}")
    model.eval()
    return model


def evaluate_classifier(model: nn.Module, split: Split) -> dict[str, float]:
    model.eval()
    with torch.inference_mode():
        logits: torch.Tensor = model(split.x)
        loss = functional.cross_entropy(logits, split.y).item()
        accuracy = (logits.argmax(dim=1) == split.y).double().mean().item()
    return {"accuracy": accuracy, "cross_entropy": loss}


def train_linreg(
    train: Split, cfg: LinRegConfig = LinRegConfig(), seed: int = SEED, progress: bool = True
) -> DiabetesLinReg:
    torch.manual_seed(seed)
    model = DiabetesLinReg()
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.steps)
    bar = tqdm(range(cfg.steps), desc="linreg (full batch)", unit="step", disable=not progress)
    for step in bar:
        optimizer.zero_grad(set_to_none=True)
        loss = functional.mse_loss(model(train.x), train.y)
        torch.autograd.backward(loss)
        optimizer.step()
        scheduler.step()
        if step % 500 == 0 or step + 1 == cfg.steps:
            bar.set_postfix(mse=f"{loss.item():.3f}")
    model.eval()
    return model


def evaluate_regressor(model: nn.Module, split: Split) -> dict[str, float]:
    model.eval()
    with torch.inference_mode():
        pred: torch.Tensor = model(split.x)
    y = split.y.double().numpy().ravel()
    p = pred.double().numpy().ravel()
    return {
        "r2": float(r2_score(y, p)),
        "mae": float(mean_absolute_error(y, p)),
        "rmse": math.sqrt(float(mean_squared_error(y, p))),
    }


def closed_form_r2(train: Split, test: Split) -> float:
    """Held-out R² of sklearn's closed-form ``LinearRegression`` (float64) on the same split."""
    reg = LinearRegression().fit(train.x.double().numpy(), train.y.double().numpy().ravel())
    pred = reg.predict(test.x.double().numpy())
    return float(r2_score(test.y.double().numpy().ravel(), np.asarray(pred)))


def serialize_state_dict(model: nn.Module) -> bytes:
    """``torch.save`` into memory so the zip's internal archive name doesn't depend on the path.

    (Saving straight to ``.../weights.pt`` names the archive after the file stem; via BytesIO it
    is always ``archive/``. Zip timestamps are fixed by torch, so the bytes are reproducible.)
    """
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getvalue()


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _round(metrics: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 6) for k, v in metrics.items()}


def write_artifacts(out: Path, model: nn.Module, manifest: dict[str, Any]) -> Path:
    """Write ``<out>/<name>/<version>/{weights.pt,manifest.json}``; returns that directory.

    ``manifest`` must contain every key except ``weights``, which is filled in here.
    """
    mdir = out / str(manifest["name"]) / str(manifest["version"])
    mdir.mkdir(parents=True, exist_ok=True)
    data = serialize_state_dict(model)
    _atomic_write(mdir / WEIGHTS_FILENAME, data)
    full = {
        **manifest,
        "weights": {"file": WEIGHTS_FILENAME, "sha256": sha256_bytes(data), "bytes": len(data)},
    }
    text = json.dumps(full, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    _atomic_write(mdir / MANIFEST_FILENAME, text.encode("utf-8"))
    return mdir


def _training_common(seed: int) -> dict[str, Any]:
    return {
        "seed": seed,
        "torch_version": str(torch.__version__),
        "num_threads": NUM_THREADS,
        "deterministic_algorithms": True,
    }


def run_cnn(out: Path, seed: int = SEED, progress: bool = True) -> dict[str, Any]:
    cfg = CNNConfig()
    train, test = digits_split(seed)
    model = train_cnn(train, cfg, seed=seed, progress=progress)
    train_metrics = evaluate_classifier(model, train)
    test_metrics = evaluate_classifier(model, test)
    manifest: dict[str, Any] = {
        "name": "cnn",
        "version": VERSION,
        "task": "classification",
        "architecture": "digits_cnn",
        "variant": None,
        "description": (
            "Small two-block CNN classifying sklearn 8x8 handwritten digits (0-9), upsampled "
            "bilinearly to 3x28x28 in [0, 1]."
        ),
        "inputs": [
            {"name": "image", "shape": [3, 28, 28], "dtype": "float32", "range": [0.0, 1.0]}
        ],
        "outputs": [{"name": "logits", "shape": [10], "dtype": "float32"}],
        "labels": [str(i) for i in range(10)],
        "metrics": _round(
            {
                "test_accuracy": test_metrics["accuracy"],
                "test_cross_entropy": test_metrics["cross_entropy"],
                "train_accuracy": train_metrics["accuracy"],
            }
        )
        | {"test_n": len(test)},
        "dataset": {
            "source": "sklearn.datasets.load_digits",
            "split": "stratified 80/20",
            "seed": seed,
            "test_indices_sha256": indices_sha256(test.indices),
        },
        "training": {
            "epochs": cfg.epochs,
            "optimizer": "Adam",
            "lr": cfg.lr,
            "lr_schedule": "cosine annealing to 0 over all steps (per batch)",
            "batch_size": cfg.batch_size,
            "augmentation": f"random translation up to +/-{cfg.max_shift} px (zero fill)",
            "loss": "cross_entropy",
            **_training_common(seed),
            "notes": (
                "Fixed epoch count, no early stopping; hyperparameters were chosen on "
                "validation splits carved from the training 80%. The test split was evaluated "
                "once after training."
            ),
        },
    }
    write_artifacts(out, model, manifest)
    return manifest


def run_linreg(out: Path, seed: int = SEED, progress: bool = True) -> dict[str, Any]:
    cfg = LinRegConfig()
    train, test = diabetes_split(seed)
    model = train_linreg(train, cfg, seed=seed, progress=progress)
    test_metrics = evaluate_regressor(model, test)
    sk_r2 = closed_form_r2(train, test)
    metrics = _round(
        {
            "test_r2": test_metrics["r2"],
            "test_mae": test_metrics["mae"],
            "test_rmse": test_metrics["rmse"],
            "sklearn_closed_form_r2": sk_r2,
        }
    ) | {"test_n": len(test)}
    manifest: dict[str, Any] = {
        "name": "linreg",
        "version": VERSION,
        "task": "regression",
        "architecture": "diabetes_linreg",
        "variant": None,
        "description": (
            "Linear regression predicting one-year diabetes disease progression from the 10 "
            "scaled sklearn diabetes features."
        ),
        "inputs": [{"name": "features", "shape": [10], "dtype": "float32"}],
        "outputs": [{"name": "target", "shape": [1], "dtype": "float32"}],
        "labels": None,
        "metrics": metrics,
        "dataset": {
            "source": "sklearn.datasets.load_diabetes",
            "split": "random 80/20",
            "seed": seed,
            "test_indices_sha256": indices_sha256(test.indices),
        },
        "training": {
            "epochs": cfg.steps,
            "optimizer": "Adam",
            "lr": cfg.lr,
            "lr_schedule": "cosine annealing to 0 over all steps",
            "batch_size": len(train),
            "loss": "mse",
            **_training_common(seed),
            "notes": (
                f"Full-batch gradient descent (each epoch is one step over all {len(train)} "
                f"training rows). Held-out R2 {metrics['test_r2']:.6f} vs sklearn "
                f"LinearRegression closed form {metrics['sklearn_closed_form_r2']:.6f} on the "
                f"same split (difference "
                f"{abs(metrics['test_r2'] - metrics['sklearn_closed_form_r2']):.6f})."
            ),
        },
    }
    write_artifacts(out, model, manifest)
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.train", description=__doc__)
    parser.add_argument("--only", choices=["cnn", "linreg"], help="train just one model")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"models root (default: {DEFAULT_OUT})"
    )
    parser.add_argument("--no-progress", action="store_true", help="disable tqdm bars")
    args = parser.parse_args(argv)

    set_determinism(SEED)
    progress = not args.no_progress
    runners = {"cnn": run_cnn, "linreg": run_linreg}
    names = [args.only] if args.only else list(runners)
    for name in names:
        start = time.perf_counter()
        manifest = runners[name](args.out, SEED, progress)
        elapsed = time.perf_counter() - start
        mdir = args.out / name / VERSION
        print(
            f"{name}: {json.dumps(manifest['metrics'], sort_keys=True)} "
            f"sha256={json.loads((mdir / MANIFEST_FILENAME).read_text())['weights']['sha256']} "
            f"in {elapsed:.1f}s -> {mdir}",
            file=sys.stdout,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
