"""The top-losses gallery of `kt report`: the out-of-fold rows the model got most wrong, drawn as the
model saw them (the run's crop and evaluation resize), each with id, label, prediction, probability.

A row's loss is the task's natural one on its out-of-fold output, computed from oof.npz alone:
cross-entropy of the label (classes, and an ordinal task trained as classes), binary cross-entropy
(binary; multilabel: its mean over classes), and the absolute error of the grade (ordinal regression).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import protocol, runs
from ..data import images
from ..tasks import Task, sigmoid
from .plots import image_grid


def _log_softmax(raw: np.ndarray) -> np.ndarray:
    shifted = raw - raw.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def row_losses(task: Task, raw: np.ndarray, y: np.ndarray) -> np.ndarray:
    """One loss per out-of-fold row (see the module docstring)."""
    raw = np.asarray(raw, dtype=np.float64)
    if task.kind == "multiclass" or (task.kind == "ordinal" and raw.ndim == 2 and raw.shape[1] > 1):
        return -_log_softmax(raw)[np.arange(len(y)), np.asarray(y, dtype=int)]
    if task.kind == "ordinal":
        return np.abs(raw.reshape(-1) - np.asarray(y, dtype=np.float64))
    p = np.clip(sigmoid(raw.reshape(len(y), -1)), 1e-7, 1 - 1e-7)
    t = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    return -(t * np.log(p) + (1 - t) * np.log(1 - p)).mean(axis=1)


def _confidence(task: Task, raw: np.ndarray) -> np.ndarray:
    """What the caption calls probability: of the predicted class, or of the positive class."""
    raw = np.asarray(raw, dtype=np.float64)
    if raw.ndim == 2 and raw.shape[1] > 1 and task.kind != "multilabel":
        return np.exp(_log_softmax(raw)).max(axis=1)
    if task.kind in ("binary", "multilabel"):
        return sigmoid(raw.reshape(len(raw), -1)).max(axis=1)
    return np.full(len(raw), np.nan)  # a regressed grade has no probability


def _label(task: Task, names: list[str], value: Any) -> str:
    if task.kind == "multilabel":
        on = np.flatnonzero(np.asarray(value))
        return ", ".join(names[i] for i in on) or "none"  # names hold spaces: comma-separated
    if task.kind == "binary" and not float(value).is_integer():
        return f"{float(value):.2f}"
    return names[int(value)] if int(value) < len(names) else str(value)


def of_class(task: Task, targets: np.ndarray, k: int) -> np.ndarray:
    """The rows whose true label is class k (a grade, a class, the positive or negative side of a
    binary task, or one of a multilabel row's labels)."""
    targets = np.asarray(targets)
    if task.kind == "multilabel":
        return targets[:, k] >= 0.5
    return np.rint(targets.reshape(-1)).astype(int) == k


def gallery(
    run_dir: Path,
    comp,
    cfg,
    oof: dict[str, Any],
    path: Path,
    *,
    n: int = 16,
    rows_of: np.ndarray | None = None,
) -> tuple[Path, list[dict[str, Any]]] | None:
    """plots/top_losses.png and its rows (id, label, prediction, probability, loss), highest loss
    first, among `rows_of` (a mask; all rows by default); None when the run's data folder is gone
    (the report says so) or no row is left."""
    task, names = comp.task, list(comp.class_names)
    losses = row_losses(task, oof["raw"], oof["targets"])
    candidates = np.flatnonzero(rows_of) if rows_of is not None else np.arange(len(losses))
    if len(candidates) == 0:
        return None
    order = candidates[np.argsort(-losses[candidates], kind="stable")][:n]
    member = runs.member_dirs(run_dir)[0]
    data_dir = Path(runs.read_run_info(member)["data_dir"])
    if not data_dir.is_dir():
        return None
    table = comp.read_train(data_dir, skip_bad_images=True).set_index("id")
    decoded = task.decode(oof["raw"], oof["fitted"])
    confidence = _confidence(task, oof["raw"])
    resize = protocol.for_run(cfg, comp).resize
    rows, pictures = [], []
    for i in order:
        row_id = str(oof["ids"][i])
        if row_id not in table.index:  # an external row never validates; a renamed file is skipped
            continue
        img = images.read_image(table.loc[row_id, "paths"])
        img = images.fundus_crop(img) if cfg.fundus_crop else img
        pictures.append(images.fit_to(img, cfg.size, resize)[..., :3])
        rows.append(
            {
                "id": row_id,
                "label": _label(task, names, oof["targets"][i]),
                "prediction": _label(task, names, decoded[i]),
                "probability": None if np.isnan(confidence[i]) else float(confidence[i]),
                "loss": float(losses[i]),
            }
        )
    captions = [
        f"{r['id'][:18]}\n{r['label']} → {r['prediction']}"
        + (f" ({r['probability']:.2f})" if r["probability"] is not None else "")
        + f"\nloss {r['loss']:.3f}"
        for r in rows
    ]
    return image_grid(pictures, captions, path), rows


def markdown(rows: list[dict[str, Any]]) -> list[str]:
    frame = pd.DataFrame(rows)
    lines = ["| id | label | prediction | probability | loss |", "|---|---|---|---|---|"]
    lines += [
        f"| {r.id} | {r.label} | {r.prediction} | "
        f"{'' if r.probability is None or r.probability != r.probability else f'{r.probability:.3f}'} "
        f"| {r.loss:.4f} |"
        for r in frame.itertuples()
    ]
    return lines
