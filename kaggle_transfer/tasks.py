"""What a model predicts and how its raw outputs become answers. Torch-free.

A task owns its head size, its default loss, `fit(raw, y)` (thresholds fitted on validation
outputs) and `decode(raw, fitted)` (answers for a submission). Raw outputs are what the network
emits: a regression value (ordinal), logits (multiclass, multilabel, binary).

An ordinal task trained with `ce` (the study's APTOS baseline: cross-entropy over the five grades,
as its released training script) has one logit per grade and is decoded by argmax; `fit` and
`decode` tell the two heads apart by the width of the raw outputs, so a model file needs no flag.

A binary task trained with `ce` (the study's SIIM-ISIC protocol: two-class cross-entropy) has a head of
two logits z0, z1 whose one output is z1 - z0: softmax(z)[1] = sigmoid(z1 - z0), and cross-entropy on
(z0, z1) equals BCE on z1 - z0 in value and gradient, so everything after the head is the binary
task's (models.TwoClassLogit).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from . import metrics
from .errors import KtError

KINDS = ("ordinal", "multilabel", "binary", "multiclass")
DEFAULT_LOSS = {"ordinal": "smooth_l1", "multilabel": "bce", "binary": "bce", "multiclass": "ce"}
LOSSES = {
    "ordinal": ("l1", "smooth_l1", "mse", "ce"),
    "multilabel": ("bce", "focal"),
    "binary": ("bce", "focal", "ce"),
    "multiclass": ("ce", "focal"),
}


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


@dataclass(frozen=True)
class Task:
    kind: str
    num_classes: int
    metric: str
    classes_head: bool = False  # ordinal trained as classification: one logit per grade (loss ce)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise KtError(f"unknown task {self.kind!r}; valid: {', '.join(KINDS)}")

    @property
    def num_outputs(self) -> int:
        return (
            1 if self.kind in ("ordinal", "binary") and not self.classes_head else self.num_classes
        )

    @property
    def classifies(self) -> bool:
        """One logit per class and a class index as target: multiclass, or ordinal with `ce`."""
        return self.kind == "multiclass" or self.classes_head

    def trained_with(self, loss: str | None) -> Task:
        """The task as a run with this loss trains it (ordinal + ce: a head of one logit per grade)."""
        loss = loss or self.default_loss
        self.check_loss(loss)
        return replace(self, classes_head=self.kind == "ordinal" and loss == "ce")

    def _as_classes(self, raw: np.ndarray) -> bool:
        return self.kind == "ordinal" and raw.ndim == 2 and raw.shape[1] == self.num_classes > 1

    @property
    def default_loss(self) -> str:
        return DEFAULT_LOSS[self.kind]

    def check_loss(self, loss: str) -> None:
        if loss not in LOSSES[self.kind]:
            raise KtError(
                f"--loss {loss} does not fit {'an' if self.kind[0] in 'aeiou' else 'a'} {self.kind} "
                f"task; valid: {', '.join(LOSSES[self.kind])}"
            )

    def targets(self, target: Any) -> np.ndarray:
        """The standard table's `target` column as the array the loss and metric expect."""
        values = list(target)
        if self.kind == "multilabel":
            out = np.zeros((len(values), self.num_classes), dtype=np.float32)
            for i, labels in enumerate(values):
                out[i, list(labels)] = 1.0
            return out
        if self.classifies:
            return np.asarray(values, dtype=np.int64)
        return np.asarray(values, dtype=np.float32)

    def fit(self, raw: np.ndarray, y: np.ndarray) -> dict[str, Any]:
        """Fit decoding parameters on validation outputs (never on test)."""
        if self.kind == "ordinal" and not self._as_classes(np.asarray(raw)):
            return {"cutpoints": metrics.fit_cutpoints(raw, y, self.num_classes)}
        if self.kind == "multilabel":
            thresholds, unfitted = metrics.fit_class_thresholds(sigmoid(raw), y)
            return {"thresholds": thresholds, "unfitted_classes": unfitted}
        return {}

    def decode(self, raw: np.ndarray, fitted: dict[str, Any] | None = None) -> np.ndarray:
        """Raw outputs → answers: grades, class ids, probabilities or multi-hot rows."""
        fitted = fitted or {}
        self.check_fitted(fitted)
        raw = np.asarray(raw, dtype=np.float64)
        if self._as_classes(raw):
            return raw.argmax(axis=1)
        if self.kind == "ordinal":
            cuts = fitted.get("cutpoints") or list(np.arange(self.num_classes - 1) + 0.5)
            return metrics.apply_cutpoints(raw, cuts)
        if self.kind == "binary":
            return sigmoid(raw.reshape(-1))
        if self.kind == "multiclass":
            return raw.argmax(axis=1)
        thresholds = np.asarray(fitted.get("thresholds") or [0.5] * self.num_classes)
        return (sigmoid(raw) >= thresholds).astype(int)

    def check_fitted(self, fitted: dict[str, Any]) -> None:
        """The last guard before answers are decoded, whatever file the parameters came from: as many
        finite increasing cut points as the task has grades - 1, thresholds in [0, 1], one per class."""
        cuts, thresholds = fitted.get("cutpoints"), fitted.get("thresholds")
        if cuts is not None:
            c = np.asarray(cuts, dtype=np.float64).reshape(-1)
            if (
                len(c) != self.num_classes - 1
                or not np.isfinite(c).all()
                or (np.diff(c) <= 0).any()
            ):
                raise KtError(
                    f"the fitted cut points {list(cuts)[:6]} are not {self.num_classes - 1} finite "
                    "increasing numbers; the file they came from is damaged (fit them again)"
                )
        if thresholds is not None:
            t = np.asarray(thresholds, dtype=np.float64).reshape(-1)
            if (
                len(t) != self.num_classes
                or not np.isfinite(t).all()
                or (t < 0).any()
                or (t > 1).any()
            ):
                raise KtError(
                    f"the fitted thresholds are not {self.num_classes} numbers in [0, 1]; the file "
                    "they came from is damaged (fit them again)"
                )

    def score(self, y: np.ndarray, raw: np.ndarray, fitted: dict[str, Any] | None = None) -> float:
        return metrics.get_metric(self.metric)(y, self.decode(raw, fitted))
