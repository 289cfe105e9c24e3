"""Checkpoint and OOF files of a run: written atomically, loaded with weights_only (no code runs on load)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .. import runs
from ..errors import KtError
from ..files import atomic_path


def restore(path: Path, device: torch.device, parts: dict[str, Any]) -> dict[str, Any]:
    """Load last.pt into the live objects (weights_only: a checkpoint cannot run code) and return the loop state."""
    if not path.is_file():
        raise KtError(
            f"--resume: {path} not found; the run never finished an epoch, start it again"
        )
    ckpt = load(path, device)
    try:
        for key, obj in parts.items():
            if obj is not None and ckpt.get(key):
                obj.load_state_dict(ckpt[key])
        return ckpt["state"]
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise KtError(
            f"{path} does not fit this run ({type(e).__name__}); it was damaged or comes from another "
            "run: delete it to start the run from scratch"
        ) from None


def load(path: Path, device: torch.device | str = "cpu") -> Any:
    """torch.load with weights_only (a checkpoint cannot run code); a damaged file is one line."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - truncated zip, bad pickle, foreign object: all mean "damaged"
        raise KtError(
            f"{path} is damaged or not a kt checkpoint ({type(e).__name__}); train again "
            "(delete it to restart from scratch)"
        ) from None


def save(obj: Any, path: Path) -> None:
    """torch.save into a temp file renamed into place. torch reports a failed write (a full disk) as a
    RuntimeError from its zip writer: it becomes the OS error it is, which the CLI explains in one line."""
    import errno
    import shutil

    with atomic_path(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError:  # "file write failed", "unexpected pos ..." from torch's zip writer
            if shutil.disk_usage(Path(path).parent).free >= (64 << 20):
                raise  # not the disk: our own bug, a traceback
            raise OSError(
                errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} while writing {path}"
            ) from None


def checkpoint(path: Path, parts: dict[str, Any], state: dict[str, Any]) -> None:
    save({**{k: v.state_dict() for k, v in parts.items() if v is not None}, "state": state}, path)


def init_source(init: str | Path) -> Path:
    """The best.pt a warm start (`--set init=RUN`) loads: a run folder's, or the file given."""
    path = Path(init)
    path = path / runs.BEST if path.is_dir() else path
    if not path.is_file():
        raise KtError(
            f"--init {init}: no best.pt there; pass a finished run folder (kt train made it)"
        )
    return path


def warm_start(model: torch.nn.Module, init: str | Path, arch: str) -> Path:
    """Load another run's best weights into `model` (same arch and head): e.g. 384 px, then 512 px."""
    path = init_source(init)
    source_dir = path.parent
    if runs.is_run(source_dir) and runs.load_config(source_dir).arch != arch:
        raise KtError(
            f"--init {init} is a {runs.load_config(source_dir).arch} run; this run is {arch}: "
            "a warm start needs the same --arch"
        )
    try:
        model.load_state_dict(load(path))
    except RuntimeError as e:
        raise KtError(
            f"--init {init}: its weights do not fit this network ({str(e).splitlines()[0][:120]}); "
            "the head must match too (same competition, channels and loss family)"
        ) from None
    return path
