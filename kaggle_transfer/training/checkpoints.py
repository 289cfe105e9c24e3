"""Checkpoint and OOF files of a run: written atomically, loaded with weights_only (no code runs on load)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import KtError
from ..fsutil import atomic_path


def restore(path: Path, device: torch.device, parts: dict[str, Any]) -> dict[str, Any]:
    """Load last.pt into the live objects (weights_only: a checkpoint cannot run code) and return the loop state."""
    if not path.is_file():
        raise KtError(f"--resume: {path} not found; the run never finished an epoch, start it again")
    ckpt = torch.load(path, map_location=device, weights_only=True)
    for key, obj in parts.items():
        if obj is not None and ckpt.get(key):
            obj.load_state_dict(ckpt[key])
    return ckpt["state"]


def checkpoint(path: Path, parts: dict[str, Any], state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save({**{k: v.state_dict() for k, v in parts.items() if v is not None}, "state": state}, tmp)
