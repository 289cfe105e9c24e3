"""Train/validation splits over the standard table.

Fold ids: k >= 0 a fold (fold `cfg.fold` validates, the rest train); TRAIN_ONLY (-1) rows only
ever train (external data); HELD_OUT (-2) rows neither train nor validate (an official test split).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

from ..errors import KtError

TRAIN_ONLY, HELD_OUT = -1, -2
SPLITS = ("paper", "kfold", "official")
# words accepted in an official or user split column
VAL_WORDS = {"val", "valid", "validation", "cis_val"}
TRAIN_WORDS = {"train", "training"}


def assign_folds(table: pd.DataFrame, split: str, folds: int, seed: int) -> np.ndarray:
    """A fold id per row.

    `paper`: the study's split: 20% of each class's competition rows to validation (fold 0), drawn as
    the released code draws them (paper_split); by whole groups (patients, locations) when the table
    has a `group` column.
    `kfold`: stratified k-fold (multilabel-stratified for label sets, grouped when there are groups);
    an `official_fold` column (SIIM-ISIC's tfrecord) is used instead when present.
    `official`: the table's `split` column (train / val; anything else is held out).
    """
    out = np.full(len(table), TRAIN_ONLY, dtype=int)
    comp = np.flatnonzero((table["source"] == "competition").to_numpy())
    rows = table.iloc[comp]
    groups = rows["group"].to_numpy() if "group" in table.columns else None
    if split == "official":
        if "split" not in table.columns:
            raise KtError("--split official needs a split column: this competition has none; pass --split-file "
                          "FILE (id,Split) or use --split paper/kfold")
        words = rows["split"].astype(str).str.lower()
        out[comp] = np.where(words.isin(VAL_WORDS), 0, np.where(words.isin(TRAIN_WORDS), 1, HELD_OUT))
        if not (out[comp] == 0).any():
            raise KtError(f"the split column has no validation rows (one of {', '.join(sorted(VAL_WORDS))})")
        return out
    if split == "kfold" and "official_fold" in table.columns:
        out[comp] = rows["official_fold"].astype(int).to_numpy() % folds
        return out
    n = 5 if split == "paper" else folds
    if split not in ("paper", "kfold"):
        raise KtError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    if len(comp) < n:
        raise KtError(f"the {split} split needs at least {n} competition rows, found {len(comp)}")
    target = rows["target"]
    if split == "paper" and groups is None and not _is_multilabel(target):
        out[comp] = 1
        out[comp[paper_split(target.to_numpy(), seed)]] = 0
        return out
    for k, (_, val) in enumerate(_splitter(target, n, seed, groups).split(comp, _labels(target), groups=groups)):
        out[comp[val]] = k
    if split == "paper":  # one fold of five validates: 20%
        out[comp] = np.where(out[comp] == 0, 0, 1)
    return out


def paper_split(labels: np.ndarray, seed: int = 414, fraction: float = 0.2) -> np.ndarray:
    """Row positions of the study's validation set, exactly as its released code draws them
    (mlfoundations/imagenet-applications-transfer, datasets/aptos.py and cassava.py, get_aptos/get_cassava:
    `np.random.seed(414)`, then for each class 0, 1, ... in turn `np.random.choice` of int(0.2 * n) of that
    class's row positions, in CSV order, without replacement, all from the one global stream;
    datasets/eurosat.py does the same with seed 42 over ImageFolder's sorted files).

    scikit-learn's train_test_split with the same seed draws a different set."""
    y = np.asarray(labels).astype(int)
    stream = np.random.RandomState(seed)  # the legacy generator np.random.seed seeds
    chosen: list[int] = []
    for k in range(int(y.max()) + 1 if len(y) else 0):
        rows = np.flatnonzero(y == k).tolist()
        chosen += stream.choice(rows, int(fraction * len(rows)), replace=False).tolist() if rows else []
    return np.array(sorted(chosen), dtype=int)


def _is_multilabel(target: pd.Series) -> bool:
    return len(target) > 0 and isinstance(target.iloc[0], (tuple, list))


def _labels(target: pd.Series) -> np.ndarray:
    if not _is_multilabel(target):
        return target.to_numpy()
    width = max((max(t) for t in target if len(t)), default=0) + 1
    multi_hot = np.zeros((len(target), width), dtype=int)
    for i, labels in enumerate(target):
        multi_hot[i, list(labels)] = 1
    return multi_hot


def _splitter(target: pd.Series, folds: int, seed: int, groups: np.ndarray | None):
    """The best-fitting scikit-learn (or iterative-stratification) splitter for the labels and groups."""
    if _is_multilabel(target):
        if groups is not None:
            warnings.warn("multilabel rows with groups: grouping is kept, stratification is by the first label",
                          stacklevel=3)
            return StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

        return MultilabelStratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    # sklearn spreads a class rarer than `folds` as well as it can; only when no class can fill
    # every fold is stratification dropped
    stratify = _class_counts(target.to_numpy()).max() >= folds
    if groups is not None:
        return (StratifiedGroupKFold if stratify else GroupKFold)(n_splits=folds, shuffle=True, random_state=seed)
    return (StratifiedKFold if stratify else KFold)(n_splits=folds, shuffle=True, random_state=seed)


def _class_counts(y: np.ndarray) -> np.ndarray:
    return np.unique(y, return_counts=True)[1]


def read_split_file(path: str, id_column_candidates: tuple[str, ...] = ("Id", "id")) -> pd.DataFrame:
    """A user split file (e.g. HPA's `Id,Target,Split` to reproduce the paper's 73/18/9): id → split."""
    from pathlib import Path

    file = Path(path)
    if not file.is_file():
        raise KtError(f"--split-file {file} not found")
    df = pd.read_csv(file, dtype=str, keep_default_na=False)
    id_col = next((c for c in df.columns if c in id_column_candidates or c.lower() == "id"), df.columns[0])
    split_col = next((c for c in df.columns if c.lower() == "split"), None)
    if split_col is None:
        raise KtError(f"--split-file {file} needs a Split column; header is {','.join(df.columns)}")
    return pd.DataFrame({"id": df[id_col], "split": df[split_col]})
