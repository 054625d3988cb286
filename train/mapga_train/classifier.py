"""The small CNN digit classifier used to score samples and restorations.

`features` (the 128-wide penultimate layer, after ReLU) is what the Fréchet distance compares.
The tensor names are those of the Rust twin in `src/models/classifier.rs`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class Classifier(nn.Module):
    """conv 3x3 (32) - ReLU - maxpool 2 - conv 3x3 (64) - ReLU - maxpool 2 - linear 128 - ReLU -
    linear 10, on [B, 1, 28, 28] images in [-1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        return F.relu(self.fc1(h.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The logits [B, 10]."""
        return self.fc2(self.features(x))
