"""Write a competition's submission CSV and check any CSV against the competition's rules.
Torch-free."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import KtError
from ..files import atomic_path, read_json, write_json
from .base import Competition

MAX_LISTED = 5


def write(comp: Competition, ids: list[str], answers: np.ndarray, path: Path) -> Path:
    frame = comp.submission_frame(list(ids), answers)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return path


def expected_ids(comp: Competition, data_dir: Path) -> tuple[list[str], list[str]]:
    """(header, ids) that a valid submission must have: the sample submission's header (else the
    adapter's columns) and the adapter's test ids."""
    sample = comp.sample_submission(data_dir)
    header = list(sample.columns) if sample is not None else [comp.id_column, comp.target_column]
    return header, comp.test_ids(data_dir)


def problems(comp: Competition, csv_path: Path, data_dir: Path) -> list[str]:
    """Every way the CSV breaks the competition's format; empty when it is valid."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        return [f"{csv_path} not found"]
    try:
        df = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        return [f"not a readable CSV: {str(e).strip()}"]
    header, ids = expected_ids(comp, data_dir)
    if list(df.columns) != header:
        return [f"header is {','.join(df.columns)}; expected {','.join(header)}"]
    found: list[str] = []
    id_col, value_col = header
    dup = df[id_col][df[id_col].duplicated()]
    if len(dup):
        found.append(f"{len(dup)} duplicate id(s), e.g. {dup.iloc[0]!r}")
    if len(df) != len(ids):
        found.append(f"{len(df)} rows; expected {len(ids)}")
    missing, extra = set(ids) - set(df[id_col]), set(df[id_col]) - set(ids)
    if missing:
        found.append(f"{len(missing)} test id(s) missing, e.g. {sorted(missing)[0]!r}")
    if extra:
        found.append(f"{len(extra)} id(s) not in the test set, e.g. {sorted(extra)[0]!r}")
    bad = [(i, v) for i, v in enumerate(df[value_col]) if not comp.check_answer(v)]
    if bad:
        rows = ", ".join(f"row {i + 2}: {v!r}" for i, v in bad[:MAX_LISTED])
        found.append(
            f"{len(bad)} value(s) in {value_col} outside the competition's domain ({rows})"
        )
    return found


def validate(comp: Competition, csv_path: Path, data_dir: Path) -> dict[str, Any]:
    """Raise KtError listing the problems; return a short summary when the CSV is valid."""
    found = problems(comp, csv_path, data_dir)
    if found:
        raise KtError(f"{csv_path} is not a valid {comp.name} submission: " + "; ".join(found))
    df = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    return {
        "file": str(csv_path),
        "rows": len(df),
        "columns": list(df.columns),
        "value_counts": df.iloc[:, 1].value_counts().head(10).to_dict(),
    }


def record_kaggle(csv: Path, entry: dict[str, Any]) -> None:
    """Record what Kaggle answered (ref, status, scores) in the submission's manifest.json, if it has one:
    a new ref is appended, a known one updated (the ref is written first, the score when it comes)."""
    manifest = Path(csv).parent / "manifest.json"
    if manifest.is_file():
        data = read_json(manifest, what="submission manifest")
        records = data.setdefault("kaggle", [])
        known = next(
            (r for r in records if entry.get("ref") and r.get("ref") == entry["ref"]), None
        )
        if known is not None:
            known.update(entry)
        else:
            records.append(entry)
        write_json(manifest, data)


def record_notebook_run(csv: Path, entry: dict[str, Any]) -> None:
    """Record the pushed notebook (datasets, kernel version, bundle id) in the submission's manifest.json
    as soon as it exists, merged into what was recorded before: `kt submit --resume` follows it."""
    manifest = Path(csv).parent / "manifest.json"
    if manifest.is_file():
        data = read_json(manifest, what="submission manifest")
        data["notebook_run"] = {**(data.get("notebook_run") or {}), **entry}
        write_json(manifest, data)
