"""Tabular metadata beside the image (`--set meta=true`): a competition's declared columns (SIIM-ISIC:
age, sex, anatomical site; a YAML competition: `meta_columns:`) encoded as one float vector per row.
Torch-free: training and the ONNX predictor encode with the same fitted spec, which travels in the run
folder (meta.json) and in the model file's metadata.

Encoding, fitted on the training rows only:
- numeric: (x - mean) / std, and a 0/1 "missing" flag (a missing value encodes as the mean, 0); a value
  outside the range seen in training (min..max; files from before ranges were recorded: mean ± 10 std)
  is clipped to it and counted, so a CSV cell of 1e30 cannot saturate the network and pass as valid;
- category: one-hot over the levels seen in training (sorted), and a "missing" flag; a level never
  seen in training encodes as all zeros with the flag, and is counted.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .. import runs
from ..errors import KtError
from ..files import read_json

KINDS = ("numeric", "category")
MAX_LEVELS = 256  # a "category" column with more distinct values is most likely an id
MAX_ABS = 1e12  # a training value beyond this is a data error, not a measurement


def check_declared(declared: dict[str, str], where: str) -> dict[str, str]:
    if not isinstance(declared, dict) or not declared:
        raise KtError(f"{where}: meta_columns must map column names to numeric or category")
    for name, kind in declared.items():
        if kind not in KINDS:
            raise KtError(
                f"{where}: meta column {name!r} has type {kind!r}; use numeric or category"
            )
    return dict(declared)


def _missing(values: pd.Series) -> np.ndarray:
    return (
        values.isna() | values.astype(str).str.strip().isin(["", "nan", "NaN", "None", "unknown"])
    ).to_numpy()


def fit(declared: dict[str, str], rows: pd.DataFrame) -> dict[str, Any]:
    """The encoding spec of `declared` columns, fitted on `rows` (the training rows)."""
    columns = []
    for name, kind in declared.items():
        values = rows[name] if name in rows.columns else pd.Series([np.nan] * len(rows))
        missing = _missing(values)
        if kind == "numeric":
            numbers = pd.to_numeric(values[~missing], errors="coerce")
            if numbers.isna().any():
                bad = values[~missing][numbers.isna()].iloc[0]
                raise KtError(
                    f"meta column {name!r} is declared numeric but holds {bad!r}; declare it category "
                    "or clean the CSV"
                )
            huge = ~np.isfinite(numbers.to_numpy(dtype=np.float64)) | (
                numbers.abs().to_numpy() > MAX_ABS
            )
            # its mean and std would overflow, and the loss become NaN with the wrong culprit
            if huge.any():
                row = numbers.index[np.flatnonzero(huge)[0]]
                raise KtError(
                    f"meta column {name!r} holds {values.loc[row]!r} (training row {row}); values must be "
                    f"finite and within ±{MAX_ABS:g}: clean the CSV"
                )
            mean = float(numbers.mean()) if len(numbers) else 0.0
            std = float(numbers.std(ddof=0)) if len(numbers) > 1 else 1.0
            low, high = (float(numbers.min()), float(numbers.max())) if len(numbers) else (0.0, 0.0)
            columns.append(
                {
                    "name": name,
                    "kind": kind,
                    "mean": mean,
                    "std": std if std > 0 else 1.0,
                    "min": low,
                    "max": high,
                }
            )
        else:
            levels = sorted({str(v).strip() for v in values[~missing]})
            if len(levels) > MAX_LEVELS:
                raise KtError(
                    f"meta column {name!r} has {len(levels)} distinct values (> {MAX_LEVELS}); an id "
                    "is not a category: drop it from meta_columns"
                )
            columns.append({"name": name, "kind": kind, "levels": levels})
    return {"columns": columns, "width": width({"columns": columns})}


def width(spec: dict[str, Any]) -> int:
    return sum(2 if c["kind"] == "numeric" else len(c["levels"]) + 1 for c in spec["columns"])


def encode(spec: dict[str, Any], rows: pd.DataFrame) -> tuple[np.ndarray, dict[str, int]]:
    """(N, width) float32 features and {column: rows missing or unseen}."""
    parts, gaps = [], {}
    for c in spec["columns"]:
        values = (
            rows[c["name"]]
            if c["name"] in rows.columns
            else pd.Series([np.nan] * len(rows), index=rows.index)
        )
        missing = _missing(values)
        if c["kind"] == "numeric":
            numbers = pd.to_numeric(values.where(~missing), errors="coerce").to_numpy(
                dtype=np.float64
            )
            missing = missing | np.isnan(numbers)
            # ±inf too: to the range's ends
            numbers = np.clip(np.nan_to_num(numbers), *value_range(c))
            z = np.where(missing, 0.0, (numbers - c["mean"]) / c["std"])
            parts += [z[:, None], missing[:, None].astype(np.float64)]
        else:
            index = {level: j for j, level in enumerate(c["levels"])}
            codes = np.array(
                [
                    -1 if m else index.get(str(v).strip(), -1)
                    for v, m in zip(values, missing, strict=True)
                ]
            )
            onehot = np.zeros((len(rows), len(c["levels"])))
            onehot[np.flatnonzero(codes >= 0), codes[codes >= 0]] = 1.0
            missing = codes < 0
            parts += [onehot, missing[:, None].astype(np.float64)]
        gaps[c["name"]] = int(missing.sum())
    features = np.concatenate(parts, axis=1) if parts else np.zeros((len(rows), 0))
    return features.astype(np.float32), gaps


def value_range(column: dict[str, Any]) -> tuple[float, float]:
    """The range a numeric column's values are clipped to: the training rows' min..max when recorded."""
    if "min" in column and "max" in column:
        return float(column["min"]), float(column["max"])
    return column["mean"] - 10 * column["std"], column["mean"] + 10 * column["std"]


def out_of_range(spec: dict[str, Any], rows: pd.DataFrame) -> dict[str, int]:
    """{numeric column: rows whose value lies outside the training range (and is clipped)}, non-zero only."""
    out = {}
    for c in (c for c in spec["columns"] if c["kind"] == "numeric" and c["name"] in rows.columns):
        values = rows[c["name"]]
        numbers = pd.to_numeric(values.where(~_missing(values)), errors="coerce").to_numpy(
            dtype=np.float64
        )
        low, high = value_range(c)
        count = int(((numbers < low) | (numbers > high)).sum())
        if count:
            out[c["name"]] = count
    return out


def check_spec(spec: Any, where: str) -> dict[str, Any]:
    """A spec read from a file kt trusts (meta.json, ONNX metadata): well-formed or one line."""
    try:
        ok = (
            isinstance(spec, dict)
            and isinstance(spec["columns"], list)
            and all(
                isinstance(c["name"], str)
                and c["kind"] in KINDS
                and (
                    (
                        c["kind"] == "numeric"
                        and np.isfinite([c["mean"], c["std"], *value_range(c)]).all()
                        and c["std"] > 0
                        and value_range(c)[0] <= value_range(c)[1]
                    )
                    or (
                        c["kind"] == "category"
                        and isinstance(c["levels"], list)
                        and all(isinstance(v, str) for v in c["levels"])
                    )
                )
                for c in spec["columns"]
            )
            and spec["width"] == width(spec)
        )
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise KtError(f"{where}: the metadata encoding is damaged; train or export again")
    return spec


def load(run_dir) -> dict[str, Any] | None:
    """A run's fitted encoding (meta.json), or None when it trained on images alone."""
    from pathlib import Path

    path = Path(run_dir) / runs.TABULAR
    return (
        check_spec(read_json(path, what="metadata encoding"), str(path)) if path.is_file() else None
    )
