"""Deterministic datasets and splits built from scikit-learn's bundled data (no downloads)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from sklearn.datasets import load_diabetes, load_digits
from sklearn.model_selection import train_test_split
from torch.nn import functional

__all__ = [
    "DIGITS_IMAGE_SIZE",
    "TEST_FRACTION",
    "Split",
    "diabetes_split",
    "digits_preprocess",
    "digits_split",
    "indices_sha256",
]

DIGITS_IMAGE_SIZE = 28
TEST_FRACTION = 0.2


@dataclass(frozen=True)
class Split:
    """One side of a train/test split.

    ``indices`` are row indices into the original sklearn loader order, sorted ascending; row
    ``i`` of ``x``/``y`` corresponds to ``indices[i]``.
    """

    x: torch.Tensor
    y: torch.Tensor
    indices: list[int]

    def __len__(self) -> int:
        return len(self.indices)


def indices_sha256(indices: Sequence[int]) -> str:
    """Hex sha256 of the comma-joined, ascending-sorted indices (e.g. ``"0,5,17"``)."""
    joined = ",".join(str(i) for i in sorted(indices))
    return hashlib.sha256(joined.encode("ascii")).hexdigest()


def digits_preprocess(images_8x8: npt.ArrayLike) -> torch.Tensor:
    """Turn sklearn-digits style images into CNN input.

    Accepts ``[N, 8, 8]`` or ``[N, 64]`` (a single ``[8, 8]`` image is also accepted) with
    values in ``0..16``. Returns float32 ``[N, 3, 28, 28]`` in ``[0, 1]``: divide by 16,
    bilinear upsample (``align_corners=False``), clamp to ``[0, 1]``, repeat to 3 channels.
    """
    arr = np.asarray(images_8x8, dtype=np.float32)
    if arr.ndim == 2 and arr.shape == (8, 8):
        arr = arr[np.newaxis]
    elif arr.ndim == 2 and arr.shape[1] == 64:
        arr = arr.reshape(-1, 8, 8)
    if arr.ndim != 3 or arr.shape[1:] != (8, 8):
        raise ValueError(f"expected images of shape [N, 8, 8] or [N, 64], got {arr.shape}")
    x = torch.from_numpy(np.ascontiguousarray(arr / np.float32(16.0))).unsqueeze(1)
    x = functional.interpolate(
        x, size=(DIGITS_IMAGE_SIZE, DIGITS_IMAGE_SIZE), mode="bilinear", align_corners=False
    )
    x = x.clamp(0.0, 1.0).repeat(1, 3, 1, 1)
    return x.to(torch.float32).contiguous()


def _split_indices(
    n: int, seed: int, stratify: npt.NDArray[np.int64] | None
) -> tuple[list[int], list[int]]:
    train_idx, test_idx = train_test_split(
        np.arange(n), test_size=TEST_FRACTION, random_state=seed, stratify=stratify
    )
    return sorted(int(i) for i in train_idx), sorted(int(i) for i in test_idx)


def digits_split(seed: int = 0) -> tuple[Split, Split]:
    """Stratified 80/20 (train, test) split of ``load_digits()``.

    ``x`` is float32 ``[N, 3, 28, 28]`` (see :func:`digits_preprocess`), ``y`` is int64 ``[N]``.
    """
    bunch = load_digits()
    images = np.asarray(bunch.images)
    target = np.asarray(bunch.target, dtype=np.int64)
    train_idx, test_idx = _split_indices(len(target), seed, stratify=target)
    x_all = digits_preprocess(images)
    y_all = torch.from_numpy(target)

    def make(idx: list[int]) -> Split:
        sel = torch.tensor(idx, dtype=torch.long)
        return Split(x=x_all[sel].contiguous(), y=y_all[sel].contiguous(), indices=idx)

    return make(train_idx), make(test_idx)


def diabetes_split(seed: int = 0) -> tuple[Split, Split]:
    """80/20 (train, test) split of ``load_diabetes()`` (sklearn's default scaled features).

    ``x`` is float32 ``[N, 10]``; ``y`` is the raw (unscaled) target as float32 ``[N, 1]``.
    """
    bunch = load_diabetes()
    features = np.asarray(bunch.data, dtype=np.float32)
    target = np.asarray(bunch.target, dtype=np.float32).reshape(-1, 1)
    train_idx, test_idx = _split_indices(len(target), seed, stratify=None)

    def make(idx: list[int]) -> Split:
        return Split(
            x=torch.from_numpy(np.ascontiguousarray(features[idx])),
            y=torch.from_numpy(np.ascontiguousarray(target[idx])),
            indices=idx,
        )

    return make(train_idx), make(test_idx)
