"""The study's numbers: ImageNet top-1 against the task metric (correlations, the normalised slope with
its bootstrap interval) and the accuracy shown beside the competition metric."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.stats import pearsonr, spearmanr

from .. import runs

SLOPE_DEFINITION = (
    "slope: points of the task metric per point of ImageNet top-1, both on a 0-1 scale (the "
    "paper's pairs, e.g. Melanoma r 0.44 with slope 0.05, fit this scale), least squares, 95% "
    "bootstrap interval over models; min-max slope: both axes min-max scaled to [0, 1] over the "
    "models shown; least-squares slope of the scaled task score on the scaled top-1"
)


def secondary_accuracy(run_dir: Path, comp) -> float | None:
    """Accuracy beside the competition metric (the paper shows the metric can change the conclusion):
    decoded grades/classes, 0.5 for binary, exact label-set match for multilabel."""
    from sklearn.metrics import accuracy_score

    oof = runs.load_oof(Path(run_dir))
    if oof is None:
        return None
    pred = comp.task.decode(oof["raw"], oof["fitted"])
    if comp.task.kind == "binary":
        pred = (pred >= 0.5).astype(int)
    return float(accuracy_score(oof["targets"].astype(int), np.asarray(pred).astype(int)))


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.polyfit(x, y, 1)[0]) if len(x) >= 2 and x.max() > x.min() else float("nan")


def correlations(
    x: np.ndarray, y: np.ndarray, *, resamples: int = 2000, seed: int = 0
) -> dict[str, float]:
    """ImageNet top-1 (%, x) against the task metric (0-1, y): Pearson and Spearman with p-values; the
    slope with both on a 0-1 scale and its 95% bootstrap interval over models; the min-max slope."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    nan = float("nan")
    scale = lambda v: (v - v.min()) / (v.max() - v.min()) if v.max() > v.min() else v * 0  # noqa: E731
    pearson, spearman = (
        (pearsonr(x, y), spearmanr(x, y)) if len(x) >= 3 else ((nan, nan), (nan, nan))
    )
    slope, low, high = _slope(x / 100, y), nan, nan
    if len(x) >= 3:
        rng = np.random.default_rng(seed)
        draws = [
            _slope(x[i] / 100, y[i])
            for i in (rng.integers(0, len(x), len(x)) for _ in range(resamples))
        ]
        low, high = (float(v) for v in np.nanpercentile(draws, [2.5, 97.5]))
    return {
        "pearson": float(pearson[0]),
        "pearson_p": float(pearson[1]),
        "spearman": float(spearman[0]),
        "spearman_p": float(spearman[1]),
        "slope": slope,
        "slope_low": low,
        "slope_high": high,
        "minmax_slope": _slope(scale(x), scale(y)) if len(x) >= 2 else nan,
        "models": int(len(x)),
    }
