"""`kt pseudo`: an ensemble labels the competition's test images (or any folder of unlabelled images)
and writes a pseudo-label table that `kt train --external pseudo=FILE` adds to training rows only.

The table (CSV): `id`, `paths` (';'-joined, relative to the image root), `target` (the hard label in
the standard table's encoding: grade, class id, 0/1, or space-separated class ids), `confidence` and
`raw_0..raw_{k-1}` (the blended raw outputs: logits or the regression value), kept for soft labels
and distillation. A JSON beside it records the image root, the models (sha256), TTA, the confidence
cut and whether training takes the soft labels. Torch-free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import competitions, runs
from ..data.ids import SUFFIXES
from ..errors import KtError
from ..files import sha256, write_csv, write_json
from ..tasks import Task, sigmoid
from .predictor import Predictor

IMAGE_SUFFIXES = SUFFIXES


def confidence(task: Task, raw: np.ndarray, fitted: dict[str, Any]) -> np.ndarray:
    """How sure the blend is of each hard label, in [0, 1]: the top class probability (classes), the
    probability of the chosen side (binary; the least sure label for multilabel), and for an ordinal
    regression the distance to the nearest cut point relative to half the gap between grades."""
    raw = np.asarray(raw, dtype=np.float64)
    if task.kind == "multiclass" or (task.kind == "ordinal" and raw.ndim == 2 and raw.shape[1] > 1):
        from scipy.special import softmax

        return softmax(raw, axis=1).max(axis=1)
    if task.kind == "binary":
        p = sigmoid(raw.reshape(-1))
        return np.maximum(p, 1 - p)
    if task.kind == "multilabel":
        p = sigmoid(raw)
        thresholds = np.asarray(fitted.get("thresholds") or [0.5] * task.num_classes)
        return np.where(p >= thresholds, p, 1 - p).min(axis=1)
    cuts = np.asarray(fitted.get("cutpoints") or np.arange(task.num_classes - 1) + 0.5)
    gap = np.diff(cuts).mean() if len(cuts) > 1 else 1.0
    return np.clip(np.abs(raw.reshape(-1, 1) - cuts[None]).min(axis=1) / (gap / 2), 0, 1)


def encode(task: Task, answers: np.ndarray) -> list[Any]:
    """Decoded answers in the standard table's `target` encoding."""
    if task.kind == "multilabel":
        return [" ".join(str(c) for c in np.flatnonzero(row)) for row in answers]
    if task.kind == "binary":
        return [int(p >= 0.5) for p in answers]
    return [int(a) for a in answers]


def folder_table(folder: Path, comp) -> pd.DataFrame:
    """Every image under `folder` as a test-like table (id: the path below the folder, no suffix)."""
    if not folder.is_dir():
        raise KtError(f"--images {folder} is not a folder")
    if len(comp.channels) != 3:
        raise KtError(
            f"--images reads one file per image; {comp.name} has {len(comp.channels)} channel files per "
            "image: label its test set (omit --images)"
        )
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise KtError(f"--images {folder} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    return pd.DataFrame(
        {
            "id": [str(p.relative_to(folder).with_suffix("")) for p in files],
            "paths": [(str(p),) for p in files],
        }
    )


def _table(
    task: Task, table: pd.DataFrame, root: Path, raw: np.ndarray, fitted: dict[str, Any]
) -> pd.DataFrame:
    """Every image's row of the pseudo-label table (before the confidence cut)."""
    raw2 = raw.reshape(len(table), -1)
    return pd.DataFrame(
        {
            "id": table["id"].astype(str),
            "paths": [
                ";".join(str(Path(p).resolve().relative_to(root)) for p in paths)
                for paths in table["paths"]
            ],
            "target": encode(task, task.decode(raw, fitted)),
            "confidence": confidence(task, raw, fitted).round(6),
            **{f"raw_{j}": raw2[:, j] for j in range(raw2.shape[1])},
        }
    )


def pseudo_label(
    predictor: Predictor,
    *,
    data_dir: str | Path | None = None,
    images: str | Path | None = None,
    min_confidence: float = 0.0,
    soft: bool = False,
    out: str | Path | None = None,
    runs_root: str | Path | None = None,
) -> dict[str, Any]:
    """Write the pseudo-label table and its JSON; returns the JSON's record."""
    # confidences are capped at 1 (ordinal: a distance of a whole grade), so 1 keeps the surest rows
    if not 0.0 <= min_confidence <= 1.0:
        raise KtError(f"--min-confidence {min_confidence} must lie in [0, 1]")
    comp, models, task, fitted = (
        predictor.comp,
        predictor.models,
        predictor.comp.task,
        predictor.fitted,
    )
    if images:
        root = Path(images).resolve()
        table = folder_table(root, comp)
    else:
        root = competitions.find_data_dir(comp, data_dir).resolve()
        table = comp.read_test(root)
    raw = predictor.outputs(table)
    frame = _table(task, table, root, raw, fitted)
    keep = (frame["confidence"] >= min_confidence).to_numpy()
    frame = frame[keep]
    out = (
        Path(out)
        if out
        else runs.runs_root(runs_root) / comp.name / "pseudo" / f"{runs.stamp()}.csv"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    write_csv(out, frame)
    record = {
        "type": "pseudo_labels",
        "competition": comp.name,
        "created": runs.timestamp(),
        "image_root": str(root),
        "soft": soft,
        "min_confidence": min_confidence,
        "tta": predictor.tta,
        "rows": int(len(table)),
        "kept": int(keep.sum()),
        "csv": out.name,
        "csv_sha256": sha256(out),
        "models": [{"path": str(Path(m.path).resolve()), "sha256": sha256(m.path)} for m in models],
        "ensemble": predictor.ensemble,
        "label_counts": frame["target"].astype(str).value_counts().to_dict(),
    }
    write_json(out.with_suffix(".json"), record)
    return {**record, "path": str(out)}
