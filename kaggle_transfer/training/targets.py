"""Training targets beyond the labels: pseudo-labelled rows (`--external pseudo=FILE`, from kt pseudo),
soft labels, and a teacher ensemble's outputs for knowledge distillation (`--teacher SPEC`).

Leakage rules, each enforced here and tested on ids:
- pseudo rows only ever train (fold TRAIN_ONLY), and a pseudo row whose id is one of the competition's
  labelled ids is dropped, so an image can never train on its own pseudo label while it validates;
- a teacher's targets for a labelled row come from the teacher's out-of-fold outputs (oof.npz of its
  member runs: the output of the model that did not train on that row); labelled rows with no
  out-of-fold output get no teacher term, only their label. The teacher's other fold models did see
  the student's validation rows, as in any stacking on out-of-fold outputs: the student's validation
  score can be slightly optimistic, which is why its teacher is best built on the same split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import runs
from ..data import ids
from ..errors import KtError
from ..files import contained, read_json, sha256
from ..tasks import Task, sigmoid

PSEUDO = "pseudo"


def pseudo_file(source: str) -> Path | None:
    """The table of an `--external pseudo=FILE` entry; None for a named external source."""
    return Path(source.split("=", 1)[1]) if source.startswith(f"{PSEUDO}=") else None


def _softmax(raw: np.ndarray) -> np.ndarray:
    from scipy.special import softmax

    return softmax(raw, axis=1)


def _parse_target(task: Task, value: Any, path: Path, row: int) -> Any:
    try:
        if task.kind == "multilabel":
            labels = tuple(int(v) for v in str(value if isinstance(value, str) else "").split())
            ok = all(0 <= v < task.num_classes for v in labels)
        else:
            labels = int(value)
            ok = 0 <= labels < (2 if task.kind == "binary" else task.num_classes)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise KtError(
            f"{path}: row {row + 2} has target {value!r}, not a {task.kind} label of this competition; "
            "make the table with kt pseudo"
        )
    return labels


def read_pseudo(path: Path, comp, *, root: str | Path | None = None) -> pd.DataFrame:
    """kt pseudo's table as standard training rows (source `pseudo`), with the raw outputs in `raw`
    and `soft` marking rows that train on soft labels. `root` replaces the recorded image root."""
    meta_path = path.with_suffix(".json")
    if not path.is_file() or not meta_path.is_file():
        raise KtError(
            f"--external pseudo={path}: the table or its {meta_path.name} is missing; make them with "
            "kt pseudo"
        )
    meta = read_json(meta_path, what="pseudo-label record")
    if (
        not isinstance(meta, dict)
        or meta.get("type") != "pseudo_labels"
        or meta.get("competition") != comp.name
    ):
        raise KtError(
            f"{meta_path} is not a {comp.name} pseudo-label record; make it with kt pseudo {comp.name}"
        )
    frame = pd.read_csv(path, dtype={"id": str, "paths": str, "target": str}, keep_default_na=False)
    raw_cols = sorted((c for c in frame.columns if c.startswith("raw_")), key=lambda c: int(c[4:]))
    missing = {"id", "paths", "target"} - set(frame.columns)
    if missing or not raw_cols:
        raise KtError(
            f"{path} lacks column(s) {', '.join(sorted(missing)) or 'raw_0'}; make it with kt pseudo"
        )
    if frame["id"].duplicated().any():
        raise KtError(
            f"{path}: id {frame.loc[frame['id'].duplicated(), 'id'].iloc[0]!r} appears twice"
        )
    raw = frame[raw_cols].to_numpy(dtype=np.float64)
    if not np.isfinite(raw).all():
        raise KtError(f"{path}: non-finite raw outputs; make the table again with kt pseudo")
    root = Path(root or meta["image_root"])
    table = pd.DataFrame(
        {
            "id": frame["id"],
            "paths": [tuple(str(root / p) for p in s.split(";")) for s in frame["paths"]],
            "target": [_parse_target(comp.task, v, path, i) for i, v in enumerate(frame["target"])],
            "source": PSEUDO,
            "raw": list(raw),
            "soft": bool(meta.get("soft")),
        }
    )
    return contained(table, root, f"--external pseudo={path}")


def add_pseudo(table: pd.DataFrame, extra: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The pseudo rows that are not a labelled competition image (an image never pseudo-trains while it
    validates), and how many were dropped for that. A row is a labelled image when its id meets a
    labelled id (data/ids.py: Cassava's `x.jpg` meets a folder's `x`) or any of its files is a labelled
    row's file (an id like `train_images/x`, from --images at the data root, names the same image)."""
    labelled = table[table["source"] == "competition"]
    names, files = set(ids.keys(labelled["id"])), ids.image_keys(labelled["paths"])
    overlap = np.array(
        [
            k in names or bool(ids.image_keys([p]) & files)
            for k, p in zip(ids.keys(extra["id"]), extra["paths"], strict=True)
        ],
        dtype=bool,
    )
    return extra[~overlap], int(overlap.sum())


def soft_from_raw(task: Task, raw: np.ndarray) -> np.ndarray:
    """A teacher's raw outputs (N, k) as targets in the shape this task trains on."""
    raw = np.asarray(raw, dtype=np.float64).reshape(len(raw), -1)
    if task.classifies:
        if raw.shape[1] != task.num_classes:
            raise KtError(
                f"soft labels for a head of {task.num_classes} classes need {task.num_classes} raw outputs; "
                f"the teacher gives {raw.shape[1]} (a regression teacher: train the student with a "
                "regression loss)"
            )
        return _softmax(raw).astype(np.float32)
    if task.kind == "ordinal":  # a grade; a classes teacher gives its expected grade
        grade = raw[:, 0] if raw.shape[1] == 1 else _softmax(raw) @ np.arange(raw.shape[1])
        return grade.astype(np.float32)
    p = sigmoid(raw)
    return (p[:, 0] if task.kind == "binary" else p).astype(np.float32)


def lift(task: Task, y: np.ndarray) -> np.ndarray:
    """Hard targets in the soft shape: one-hot rows for a classes head, floats otherwise."""
    if task.classifies and y.ndim == 1:
        return np.eye(task.num_classes, dtype=np.float32)[y]
    return y.astype(np.float32)


def train_targets(task: Task, rows: pd.DataFrame) -> np.ndarray:
    """The training rows' targets: labels, with pseudo rows marked soft replaced by their soft labels."""
    y = task.targets(rows["target"])
    soft = (
        rows["soft"].fillna(False).to_numpy(bool)
        if "soft" in rows.columns
        else np.zeros(len(rows), bool)
    )
    if not soft.any():
        return y
    y = lift(task, y)
    y[soft] = soft_from_raw(task, np.stack(rows.loc[soft, "raw"].to_numpy()))
    return y


def teacher_outputs(
    spec_path: str | Path, comp, task: Task, rows: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray]:
    """(teacher raw outputs per training row, mask of rows that have one): the blended out-of-fold
    outputs of the spec's member runs for labelled rows, the recorded raw outputs for pseudo rows."""
    from ..inference import ensemble
    from ..inference.predict import blend

    spec = ensemble.load_spec(spec_path)
    if spec.get("competition") != comp.name:
        raise KtError(
            f"--teacher {spec_path} is a {spec.get('competition')} ensemble; this run is {comp.name}"
        )
    if spec["method"] == "rank":
        raise KtError(
            f"--teacher {spec_path} blends ranks; distil from a mean or greedy ensemble (kt ensemble)"
        )
    ids, raws, _, _ = runs.load_oofs([Path(m["run"]) for m in spec["members"]])
    raw = blend(
        raws.reshape(len(raws), len(ids), -1), [m["weight"] for m in spec["members"]], "mean"
    )
    width = raw.shape[1]
    index = {str(i): k for k, i in enumerate(ids)}
    out, mask = np.zeros((len(rows), width), np.float64), np.zeros(len(rows), bool)
    for r, (rid, source) in enumerate(zip(rows["id"].astype(str), rows["source"], strict=True)):
        if source == PSEUDO:
            recorded = np.asarray(rows["raw"].iloc[r], dtype=np.float64)
            if recorded.shape != (width,):
                raise KtError(
                    f"pseudo row {rid!r} has {recorded.size} raw outputs, the teacher {width}; "
                    "label the test images with the teacher's ensemble (kt pseudo --ensemble)"
                )
            out[r], mask[r] = recorded, True
        elif rid in index:
            out[r], mask[r] = raw[index[rid]], True
    # a classes teacher: its expected grade
    if task.kind == "ordinal" and not task.classifies and width > 1:
        out = (_softmax(out) @ np.arange(width))[:, None]
    elif task.classifies and width != task.num_classes:
        soft_from_raw(task, out)  # raises the one-line explanation
    return out.astype(np.float32), mask


class DistillLoss(nn.Module):
    """(1 - w) * loss(label) + w * loss(teacher), per row, w = alpha where the row has a teacher output.

    Classes: cross-entropy on (soft) labels and T^2 * KL(softmax(t/T) || softmax(s/T)) (Hinton et al.
    2015); binary/multilabel: BCE on labels and T^2 * BCE(s/T, sigmoid(t/T)); ordinal regression: the
    run's regression loss on the grade and MSE to the teacher's value. Targets arrive packed:
    [label (k), teacher raw (k), mask (1)]."""

    def __init__(
        self,
        task: Task,
        loss: str,
        *,
        alpha: float,
        temperature: float,
        label_smoothing: float = 0.0,
    ):
        super().__init__()
        self.task, self.loss, self.alpha, self.t, self.smoothing = (
            task,
            loss,
            alpha,
            temperature,
            label_smoothing,
        )

    def forward(self, out: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
        out = out.reshape(len(out), -1)
        k = out.shape[1]
        y, teacher, mask = packed[:, :k], packed[:, k : 2 * k], packed[:, 2 * k]
        t = self.t
        if self.task.classifies:
            y = y * (1 - self.smoothing) + self.smoothing / k
            label = -(y * F.log_softmax(out, 1)).sum(1)
            p = F.softmax(teacher / t, 1)
            taught = (
                (p * (torch.log(p.clamp_min(1e-12)) - F.log_softmax(out / t, 1))).sum(1) * t * t
            )
        elif self.task.kind in ("binary", "multilabel"):
            y = y * (1 - self.smoothing) + 0.5 * self.smoothing
            label = F.binary_cross_entropy_with_logits(out, y, reduction="none").mean(1)
            taught = (
                F.binary_cross_entropy_with_logits(
                    out / t, torch.sigmoid(teacher / t), reduction="none"
                ).mean(1)
                * t
                * t
            )
        else:
            fn = {"l1": F.l1_loss, "smooth_l1": F.smooth_l1_loss, "mse": F.mse_loss}[self.loss]
            label = fn(out, y, reduction="none").mean(1)
            taught = F.mse_loss(out, teacher, reduction="none").mean(1)
        w = self.alpha * mask
        return ((1 - w) * label + w * taught).mean()


def pack(task: Task, y: np.ndarray, teacher: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """[label, teacher raw, mask] per row, the layout DistillLoss reads."""
    y = lift(task, y).reshape(len(y), -1)
    return np.concatenate(
        [y, teacher.reshape(len(y), -1), mask[:, None].astype(np.float32)], 1
    ).astype(np.float32)


def training_targets(
    cfg, comp, task: Task, rows: pd.DataFrame, loss: str
) -> tuple[np.ndarray, nn.Module | None]:
    """The training rows' target array and, with --teacher, the distillation loss that reads it."""
    y = train_targets(task, rows)
    soft = y.dtype == np.float32 and task.classifies
    if loss == "focal" and (soft or cfg.teacher):
        raise KtError(
            "soft labels and --teacher need a loss that takes probabilities; --loss focal takes class "
            "indices: use ce or bce"
        )
    if not cfg.teacher:
        return y, None
    if cfg.mix != "none":
        raise KtError(
            "--teacher with --set mix is not supported: mixing would blend the teacher's logits; "
            "drop one of them"
        )
    teacher, mask = teacher_outputs(cfg.teacher, comp, task, rows)
    return pack(task, y, teacher, mask), DistillLoss(
        task,
        loss,
        alpha=cfg.distill_alpha,
        temperature=cfg.distill_temperature,
        label_smoothing=cfg.label_smoothing,
    )


def describe_sources(external: list[str]) -> dict[str, Any]:
    """Provenance of the pseudo tables a run trains on (path and sha256), for run.json."""
    files = [pseudo_file(s) for s in external]
    return {str(f.resolve()): sha256(f) for f in files if f is not None and f.is_file()}
