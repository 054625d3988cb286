"""The MNIST digits of `data/mnist/` (see data/README.md), in [-1, 1] units."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data" / "mnist"


def _digits() -> np.ndarray:
    raw = gzip.decompress((DATA / "digits.u8.gz").read_bytes())
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, 1, 28, 28)


def _labels() -> np.ndarray:
    return np.frombuffer((DATA / "labels.u8").read_bytes(), dtype=np.uint8)


def train_split() -> tuple[torch.Tensor, torch.Tensor]:
    """The TRAIN split (9,000 digits): images [N, 1, 28, 28] in [-1, 1] and labels [N]."""
    split = json.loads((DATA / "split.json").read_text())
    idx = np.concatenate([np.arange(a, b) for a, b in split["train"].values()])
    return _as_tensors(_digits()[idx], _labels()[idx])


def test_split() -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """The TEST split (1,000 digits) in `data/mnist/test/digits.npy` order, with its indices."""
    images = np.load(DATA / "test" / "digits.npy")
    labels = np.load(DATA / "test" / "labels.npy")
    indices = np.load(DATA / "test" / "indices.npy")
    x, y = _as_tensors(images, labels)
    return x, y, indices


def _as_tensors(images: np.ndarray, labels: np.ndarray):
    x = torch.from_numpy(images.astype(np.float32)) / 127.5 - 1.0
    return x, torch.from_numpy(labels.astype(np.int64))
