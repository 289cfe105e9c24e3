"""Run folders, ids, seeding and provenance (git sha). Torch-free except `seed_everything`."""

from __future__ import annotations

import os
import random
import re
import subprocess
import time
from pathlib import Path

import numpy as np

from .errors import KtError


def runs_root(given: str | Path | None = None) -> Path:
    return Path(given or os.environ.get("KT_RUNS") or "runs")


def stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "run"


def new_run_dir(root: Path, competition: str, label: str) -> Path:
    """runs/<competition>/<stamp>_<label>; never reuses an existing folder."""
    base = Path(root) / competition / f"{stamp()}_{slug(label)}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    path.mkdir(parents=True)
    return path


def fresh_output_dir(path: Path, overwrite: bool) -> Path:
    """An output folder that must not silently replace earlier results."""
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise KtError(f"output folder {path} already exists; choose another --label/--out or pass --overwrite")
    path.mkdir(parents=True, exist_ok=True)
    return path


def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
