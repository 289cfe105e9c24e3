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
from .ids import keys

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
    `paper` with a `paper_split` column (HPA's 73/18/9 split file): that column, as `official`.
    `paper` with `official_fold` (tfrecord shards, SIIM-ISIC's community layout): paper_shards.
    """
    out = np.full(len(table), TRAIN_ONLY, dtype=int)
    comp = np.flatnonzero((table["source"] == "competition").to_numpy())
    rows = table.iloc[comp]
    groups = rows["group"].to_numpy() if "group" in table.columns else None
    if split == "paper" and "paper_split" in table.columns:
        return _words(rows["paper_split"], comp, out)
    if split == "paper" and "official_fold" in table.columns:
        return paper_shards(table, seed, out)
    if split == "official":
        if "split" not in table.columns:
            raise KtError(
                "--split official needs a split column: this competition has none; pass --split-file "
                "FILE (id,Split) or use --split paper/kfold"
            )
        return _words(rows["split"], comp, out)
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
    for k, (_, val) in enumerate(
        _splitter(target, n, seed, groups).split(comp, _labels(target), groups=groups)
    ):
        out[comp[val]] = k
    if split == "paper":  # one fold of five validates: 20%
        out[comp] = np.where(out[comp] == 0, 0, 1)
    return out


def _words(column: pd.Series, comp: np.ndarray, out: np.ndarray) -> np.ndarray:
    """train / val words → folds 1 / 0; anything else (test_val, cis_test, blank) is held out."""
    words = column.astype(str).str.lower()
    out[comp] = np.where(words.isin(VAL_WORDS), 0, np.where(words.isin(TRAIN_WORDS), 1, HELD_OUT))
    if not (out[comp] == 0).any():
        raise KtError(
            f"the split column has no validation rows (one of {', '.join(sorted(VAL_WORDS))})"
        )
    return out


def paper_shards(table: pd.DataFrame, seed: int, out: np.ndarray) -> np.ndarray:
    """SIIM-ISIC's paper split, as datasets/melanoma.py draws it (MelanomaDataset.__init__, l.19-37):
    `np.random.seed(23)`, then for each year in turn (2020, then 2019) the tfrecord ids >= 0 as a set
    (a set of small non-negative ints iterates in ascending order), `np.random.choice(ids,
    int(0.8 * len(ids)), replace=False)` → training shards, the others validate. Both years land on
    both sides. Here the years are the competition rows, then each external source whose rows carry
    a tfrecord id (the community 2019 layout), in the table's order; rows without one only train."""
    stream = np.random.RandomState(seed)
    shards = pd.to_numeric(table["official_fold"], errors="coerce")
    sources = list(dict.fromkeys(["competition", *table["source"]]))
    for source in sources:
        mine = ((table["source"] == source) & shards.notna()).to_numpy()
        ids = sorted(int(s) for s in set(shards[mine]) if s >= 0)
        if not ids:
            continue
        train = set(stream.choice(ids, int(0.8 * len(ids)), replace=False).tolist())
        values = shards[mine].astype(int)
        out[mine] = np.where(values.isin(train), 1, np.where(values >= 0, 0, HELD_OUT))
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
        chosen += (
            stream.choice(rows, int(fraction * len(rows)), replace=False).tolist() if rows else []
        )
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
            warnings.warn(
                "multilabel rows with groups: grouping is kept, stratification is by the first label",
                stacklevel=3,
            )
            return StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

        return MultilabelStratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    # sklearn spreads a class rarer than `folds` as well as it can; only when no class can fill
    # every fold is stratification dropped
    stratify = _class_counts(target.to_numpy()).max() >= folds
    if groups is not None:
        return (StratifiedGroupKFold if stratify else GroupKFold)(
            n_splits=folds, shuffle=True, random_state=seed
        )
    return (StratifiedKFold if stratify else KFold)(n_splits=folds, shuffle=True, random_state=seed)


def _class_counts(y: np.ndarray) -> np.ndarray:
    return np.unique(y, return_counts=True)[1]


def read_split_file(
    path: str, id_column_candidates: tuple[str, ...] = ("Id", "id")
) -> pd.DataFrame:
    """A user split file (e.g. HPA's `Id,Target,Split` to reproduce the paper's 73/18/9): id → split."""
    from pathlib import Path

    file = Path(path)
    if not file.is_file():
        raise KtError(f"--split-file {file} not found")
    try:
        df = pd.read_csv(file, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise KtError(
            f"--split-file {file} is not a readable CSV: {' '.join(str(e).split())[:200]}"
        ) from None
    id_col = next(
        (c for c in df.columns if c in id_column_candidates or c.lower() == "id"), df.columns[0]
    )
    split_col = next((c for c in df.columns if c.lower() == "split"), None)
    if split_col is None:
        raise KtError(f"--split-file {file} needs a Split column; header is {','.join(df.columns)}")
    # split words compared stripped and in lower case: 'train ' or 'Val' are what a spreadsheet writes
    out = pd.DataFrame(
        {"id": df[id_col], "key": keys(df[id_col]), "split": df[split_col].str.strip().str.lower()}
    )
    twice = out[out["key"].duplicated(keep=False)]
    if len(twice):  # one image on both sides of a split would validate on what it trained on
        first = twice[twice["key"] == twice["key"].iloc[0]]
        raise KtError(
            f"--split-file {file}: id {first['id'].iloc[0]!r} is listed {len(first)} times (as "
            f"{', '.join(map(repr, first['split']))}); list each id once"
        )
    return out
