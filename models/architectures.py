"""Network architectures shipped with Tollgate.

Each architecture is registered in :data:`ARCHITECTURES` under the name that model manifests
reference in their ``"architecture"`` field.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = [
    "ARCHITECTURES",
    "FUSE_PATTERNS",
    "DiabetesLinReg",
    "DigitsCNN",
    "DigitsCNNSlim",
    "build",
]


class DigitsCNN(nn.Module):
    """Small CNN for upsampled sklearn digits.

    Input: float32 ``[N, 3, 28, 28]`` with values in ``[0, 1]``. Output: ``[N, 10]`` logits.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(64 * 7 * 7, 128)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h: torch.Tensor = self.pool1(self.relu1(self.conv1(x)))
        h = self.pool2(self.relu2(self.conv2(h)))
        h = self.relu3(self.fc1(self.flatten(h)))
        logits: torch.Tensor = self.fc2(h)
        return logits


class DigitsCNNSlim(nn.Module):
    """:class:`DigitsCNN` with configurable widths (same layer names, same input/output).

    ``conv1_channels``/``conv2_channels`` are the two conv blocks' output channels and
    ``hidden`` is ``fc1``'s width. Used by the compressed variants: the structurally pruned
    teacher (16/32/128) and the distilled student (8/16/32). Manifests store the widths in
    ``"architecture_args"`` so the loader rebuilds the exact module.
    """

    def __init__(self, conv1_channels: int = 16, conv2_channels: int = 32, hidden: int = 128):
        super().__init__()
        self.conv1 = nn.Conv2d(3, conv1_channels, kernel_size=3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(conv1_channels, conv2_channels, kernel_size=3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(conv2_channels * 7 * 7, hidden)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h: torch.Tensor = self.pool1(self.relu1(self.conv1(x)))
        h = self.pool2(self.relu2(self.conv2(h)))
        h = self.relu3(self.fc1(self.flatten(h)))
        logits: torch.Tensor = self.fc2(h)
        return logits


class DiabetesLinReg(nn.Module):
    """Linear regression on sklearn's (scaled) diabetes features.

    Input: float32 ``[N, 10]``. Output: float32 ``[N, 1]``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(10, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.linear(x)
        return out


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "digits_cnn": DigitsCNN,
    "digits_cnn_slim": DigitsCNNSlim,
    "diabetes_linreg": DiabetesLinReg,
}
"""Architecture name -> factory. Factories take the manifest's ``architecture_args`` as keyword
arguments (none for the fixed architectures)."""

# Conv/Linear + ReLU pairs that eager-mode static quantization fuses, per architecture.
FUSE_PATTERNS: dict[str, list[list[str]]] = {
    "digits_cnn": [["conv1", "relu1"], ["conv2", "relu2"], ["fc1", "relu3"]],
    "digits_cnn_slim": [["conv1", "relu1"], ["conv2", "relu2"], ["fc1", "relu3"]],
}


def build(name: str, args: dict[str, Any] | None = None) -> nn.Module:
    """Instantiate architecture ``name`` with keyword ``args``."""
    return ARCHITECTURES[name](**(args or {}))
