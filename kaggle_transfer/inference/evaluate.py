"""`kt evaluate`: score ONNX models on labelled held-out splits, side by side, with a per-class table.
Torch-free. For CCT-20 the splits are cis_test (locations seen in training) and trans_test (unseen):
the gap between them is the point of that benchmark."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import competitions, runs
from ..errors import KtError
from ..files import write_csv, write_json
from ..metrics import get_metric
from .predict import blend, combine_fitted, predict_models
from .session import load_ensemble
from .tta import recorded_tta


def model_files(items: Sequence[str | Path]) -> list[Path]:
    """Run folders (and run groups) become their model.onnx files; files pass through."""
    return [f for item in map(Path, items) for f in (runs.onnx_files(item) if item.is_dir() else [item])]


def evaluate(competition: str, items: Sequence[str | Path], data_dir: str | Path | None, *, tta: str | None = None,
             out: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    comp = competitions.get(competition)
    splits = comp.eval_splits
    if not splits:
        raise KtError(f"{comp.name} has no labelled test splits to evaluate on; use kt predict and kt submit")
    data_dir = competitions.find_data_dir(comp, data_dir)
    models = load_ensemble(model_files(items), comp.name)
    comp = competitions.for_model(models[0].meta)
    tta = tta or recorded_tta([m.meta for m in models])
    fitted = combine_fitted(models, comp.task)
    metric = get_metric(comp.task.metric)
    result: dict[str, Any] = {"competition": comp.name, "metric": comp.task.metric, "tta": tta,
                              "models": [str(m.path) for m in models], "splits": {}}
    per_class = []
    for split in splits:
        table = comp.read(data_dir, split)
        raw = blend(predict_models(models, list(table["paths"]), tta=tta, progress=progress,
                                   all_channels=comp.channels, meta_rows=table))
        pred, truth = comp.task.decode(raw, fitted), table["target"].to_numpy()
        result["splits"][split] = {"score": metric(truth, pred), "images": len(table)}
        for k, name in enumerate(comp.class_names):
            mask = truth == k
            per_class.append({"split": split, "class": name, "images": int(mask.sum()),
                              "accuracy": float((pred[mask] == k).mean()) if mask.any() else np.nan})
    table = pd.DataFrame(per_class).pivot(index="class", columns="split", values=["accuracy", "images"])
    out_dir = Path(out) if out else Path(models[0].path).parent
    write_json(out_dir / "evaluation.json", result)
    write_csv(out_dir / "evaluation_per_class.csv", table, index=True)
    result["per_class"] = table
    result["files"] = [str(out_dir / "evaluation.json"), str(out_dir / "evaluation_per_class.csv")]
    return result
