"""What a model predicts and how its raw outputs become answers. Torch-free.

A task owns its head size, its default loss, `fit(raw, y)` (thresholds fitted on validation
outputs) and `decode(raw, fitted)` (answers for a submission). Raw outputs are what the network
emits: a regression value (ordinal), logits (multiclass, multilabel, binary).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import metrics
from .errors import KtError

KINDS = ("ordinal", "multilabel", "binary", "multiclass")
DEFAULT_LOSS = {"ordinal": "smooth_l1", "multilabel": "bce", "binary": "bce", "multiclass": "ce"}
LOSSES = {
    "ordinal": ("l1", "smooth_l1", "mse"),
    "multilabel": ("bce", "focal"),
    "binary": ("bce", "focal"),
    "multiclass": ("ce", "focal"),
}


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


@dataclass(frozen=True)
class Task:
    kind: str
    num_classes: int
    metric: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise KtError(f"unknown task {self.kind!r}; valid: {', '.join(KINDS)}")

    @property
    def num_outputs(self) -> int:
        return 1 if self.kind in ("ordinal", "binary") else self.num_classes

    @property
    def default_loss(self) -> str:
        return DEFAULT_LOSS[self.kind]

    def check_loss(self, loss: str) -> None:
        if loss not in LOSSES[self.kind]:
            raise KtError(f"--loss {loss} does not fit a {self.kind} task; valid: {', '.join(LOSSES[self.kind])}")

    def targets(self, target: Any) -> np.ndarray:
        """The standard table's `target` column as the array the loss and metric expect."""
        values = list(target)
        if self.kind == "multilabel":
            out = np.zeros((len(values), self.num_classes), dtype=np.float32)
            for i, labels in enumerate(values):
                out[i, list(labels)] = 1.0
            return out
        if self.kind == "multiclass":
            return np.asarray(values, dtype=np.int64)
        return np.asarray(values, dtype=np.float32)

    def fit(self, raw: np.ndarray, y: np.ndarray) -> dict[str, Any]:
        """Fit decoding parameters on validation outputs (never on test)."""
        if self.kind == "ordinal":
            return {"cutpoints": metrics.fit_cutpoints(raw, y, self.num_classes)}
        if self.kind == "multilabel":
            thresholds, unfitted = metrics.fit_class_thresholds(sigmoid(raw), y)
            return {"thresholds": thresholds, "unfitted_classes": unfitted}
        return {}

    def decode(self, raw: np.ndarray, fitted: dict[str, Any] | None = None) -> np.ndarray:
        """Raw outputs → answers: grades, class ids, probabilities or multi-hot rows."""
        fitted = fitted or {}
        raw = np.asarray(raw, dtype=np.float64)
        if self.kind == "ordinal":
            cuts = fitted.get("cutpoints") or list(np.arange(self.num_classes - 1) + 0.5)
            return metrics.apply_cutpoints(raw, cuts)
        if self.kind == "binary":
            return sigmoid(raw.reshape(-1))
        if self.kind == "multiclass":
            return raw.argmax(axis=1)
        thresholds = np.asarray(fitted.get("thresholds") or [0.5] * self.num_classes)
        return (sigmoid(raw) >= thresholds).astype(int)

    def score(self, y: np.ndarray, raw: np.ndarray, fitted: dict[str, Any] | None = None) -> float:
        return metrics.get_metric(self.metric)(y, self.decode(raw, fitted))
