"""Competition metrics (scikit-learn) and the threshold fitting that some of them need.

Torch-free. Every score comes from scikit-learn so that it matches Kaggle's graders; only the
search loops over thresholds are ours, and they score their candidates with numpy counts that
tests/test_metrics.py holds equal to scikit-learn's (a search scores thousands of candidates).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .errors import KtError


def qwk(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Quadratic weighted kappa on integer grades (APTOS). Constant predictions score 0."""
    y_true = np.asarray(y_true).astype(int)
    y_pred = np.asarray(y_pred).astype(int)
    if len(np.unique(np.concatenate([y_true, y_pred]))) < 2:
        return 0.0  # sklearn returns nan when both sides hold one and the same label
    from sklearn.metrics import (
        cohen_kappa_score,
    )  # here, not at import: prediction and validation never score

    return float(cohen_kappa_score(y_true, y_pred, weights="quadratic"))


def _qwk_of_counts(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """`qwk` computed from one bincount, for the cut-point search that scores thousands of
    candidates. The same quantity as scikit-learn's cohen_kappa_score(weights="quadratic"): its
    labels are the values present on either side, weighted by their distance in that sorted list
    (tests/test_metrics.py holds the two equal)."""
    labels = np.unique(np.concatenate([y_true, y_pred]))
    k = len(labels)
    if k < 2:
        return 0.0
    t, p = np.searchsorted(labels, y_true), np.searchsorted(labels, y_pred)
    observed = np.bincount(t * k + p, minlength=k * k).reshape(k, k).astype(float)
    expected = np.outer(observed.sum(1), observed.sum(0)) / len(y_true)
    weights = (np.arange(k)[:, None] - np.arange(k)[None, :]) ** 2
    return float(1.0 - (weights * observed).sum() / (weights * expected).sum())


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(np.asarray(y_true).astype(int), np.asarray(y_pred).astype(int)))


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Macro F1 over classes of multi-hot arrays (HPA). A class absent on both sides scores 0."""
    from sklearn.metrics import f1_score

    return float(f1_score(np.asarray(y_true), np.asarray(y_pred), average="macro", zero_division=0))


def roc_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    y_true = np.asarray(y_true).astype(int)
    if len(np.unique(y_true)) < 2:
        # AUC is undefined with one class; a silent nan would poison model selection
        raise KtError(
            "roc_auc needs both classes in the validation rows; use a stratified split or more data"
        )
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y_true, np.asarray(y_score, dtype=float)))


def binary_log_loss(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    from sklearn.metrics import log_loss

    return float(
        log_loss(np.asarray(y_true).astype(int), np.asarray(y_prob, dtype=float), labels=[0, 1])
    )


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "qwk": qwk,
    "accuracy": accuracy,
    "macro_f1": macro_f1,
    "roc_auc": roc_auc,
    "log_loss": binary_log_loss,
}


def get_metric(name: str) -> Callable[[np.ndarray, np.ndarray], float]:
    try:
        return METRICS[name]
    except KeyError:
        raise KtError(f"unknown metric {name!r}; valid: {', '.join(sorted(METRICS))}") from None


def apply_cutpoints(raw: np.ndarray, cuts: np.ndarray | list[float]) -> np.ndarray:
    """Map regression outputs to grades: grade k when cuts[k-1] <= raw < cuts[k]."""
    return np.digitize(
        np.asarray(raw, dtype=float).reshape(-1), np.asarray(cuts, dtype=float)
    ).astype(int)


def fit_cutpoints(
    raw: np.ndarray, y: np.ndarray, num_classes: int, *, passes: int = 3, grid: int = 60
) -> list[float]:
    """Cut points on a regression output that maximise QWK on (raw, y), by coordinate search.

    Starts from plain rounding (k - 0.5) and moves one cut at a time over candidate values
    between its neighbours, keeping the best. It never returns cuts worse than rounding on the
    data it was fitted on. QWK is a step function of the cuts, so gradient-free search is used;
    coordinate search is more reliable here than the Nelder-Mead of popular kernels.
    """
    raw = np.asarray(raw, dtype=float).reshape(-1)
    y = np.asarray(y).astype(int)
    cuts = np.arange(num_classes - 1, dtype=float) + 0.5
    best = _qwk_of_counts(y, apply_cutpoints(raw, cuts))
    for _ in range(passes):
        improved = False
        for i in range(len(cuts)):
            lo = cuts[i - 1] if i > 0 else raw.min() - 1.0
            hi = cuts[i + 1] if i + 1 < len(cuts) else raw.max() + 1.0
            inside = np.unique(raw[(raw > lo) & (raw < hi)])
            if inside.size == 0:
                continue
            # midway between neighbouring outputs, never on one: a cut on an output would flip that
            # row for a float's last bit (the same model in ONNX, int8, another machine)
            edges = np.concatenate([[lo], inside, [hi]])
            mids = (edges[:-1] + edges[1:]) / 2
            candidates = mids[np.unique(np.linspace(0, len(mids) - 1, grid).round().astype(int))]
            for c in candidates:
                trial = cuts.copy()
                trial[i] = c
                score = _qwk_of_counts(y, apply_cutpoints(raw, trial))
                if score > best + 1e-12:
                    best, cuts, improved = score, trial, True
        if not improved:
            break
    return [float(c) for c in cuts]


def fit_class_thresholds(
    prob: np.ndarray, y: np.ndarray, grid: int = 99
) -> tuple[list[float], list[int]]:
    """Per-class probability thresholds maximising each class's F1 (hence macro F1, its mean).

    Returns (thresholds, classes_without_positives). A class with no positive in `y` cannot be
    fitted: it keeps 0.5 and is listed, so callers can report it rather than hide it.
    """
    prob = np.asarray(prob, dtype=float)
    y = np.asarray(y).astype(int)
    candidates = np.linspace(0.01, 0.99, grid)
    thresholds, unfitted = [], []
    for k in range(prob.shape[1]):
        if y[:, k].sum() == 0:
            thresholds.append(0.5)
            unfitted.append(k)
            continue
        # F1 at every candidate at once, as f1_score(..., zero_division=0) computes it
        said = prob[:, k][None, :] >= candidates[:, None]
        tp = (said & (y[:, k] == 1)).sum(1)
        denominator = said.sum(1) + y[:, k].sum()  # 2tp + fp + fn
        scores = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)
        thresholds.append(float(candidates[int(np.argmax(scores))]))
    return thresholds, unfitted
