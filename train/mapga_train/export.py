"""Writing shipped weights (safetensors), their RON model cards and the parity fixtures."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors.torch import save_file


def save_weights(module: torch.nn.Module, path: Path) -> str:
    """Saves the module's state_dict as float32 safetensors; returns the file's sha256."""
    tensors = {k: v.detach().to(torch.float32).contiguous() for k, v in module.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _ron(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_ron(v) for v in value) + "]"
    raise TypeError(f"no RON form for {value!r}")


def write_card(path: Path, fields: dict) -> None:
    """Writes a `ModelCard(...)` RON file (see `src/models/card.rs`); `fields` in card order.
    Tuple-valued fields (`image_shape`, `value_range`) are given as tuples, maps as dicts."""
    lines = ["ModelCard("]
    for key, value in fields.items():
        if isinstance(value, dict):
            inner = ", ".join(f"{_ron(k)}: {_ron(v)}" for k, v in value.items())
            text = "{ " + inner + " }"
        elif isinstance(value, tuple) and key == "value_range":
            text = "(" + ", ".join(_ron(v) for v in value) + ")"
        elif isinstance(value, tuple):
            text = "(" + ", ".join(_ron(v) for v in value) + ")"
        elif isinstance(value, str) and key == "kind":
            text = value
        else:
            text = _ron(value)
        lines.append(f"    {key}: {text},")
    lines.append(")")
    path.write_text("\n".join(lines) + "\n")


def save_fixture(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """A parity fixture: named float64 tensors (inputs and expected outputs) as safetensors."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().to(torch.float64).contiguous() for k, v in tensors.items()}, str(path))
