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
from .predictor import Predictor


def model_files(items: Sequence[str | Path]) -> list[Path]:
    """Run folders (and run groups) become their model.onnx files; files pass through."""
    return [
        f for item in map(Path, items) for f in (runs.onnx_files(item) if item.is_dir() else [item])
    ]


def evaluable(comp) -> tuple[str, ...]:
    """The competition's labelled evaluation splits; one without any is refused."""
    if not comp.evaluation.splits:
        raise KtError(
            f"{comp.name} has no labelled test splits to evaluate on; use kt predict and kt submit"
        )
    return tuple(comp.evaluation.splits)


def evaluate(
    predictor: Predictor, data_dir: str | Path | None, *, out: str | Path | None = None
) -> dict[str, Any]:
    """Score the predictor on every labelled evaluation split of its competition, side by side."""
    comp, models = predictor.comp, predictor.models
    splits = evaluable(comp)
    data_dir = competitions.find_data_dir(comp, data_dir)
    metric = get_metric(comp.task.metric)
    result: dict[str, Any] = {
        "competition": comp.name,
        "metric": comp.task.metric,
        "tta": predictor.tta,
        "models": [str(m.path) for m in models],
        "weights": predictor.weights,
        "fitted_from": predictor.fitted_from,
        "splits": {},
    }
    per_class = []
    for split in splits:
        table = comp.read(data_dir, split)
        pred, truth = predictor.answers(predictor.outputs(table)), table["target"].to_numpy()
        result["splits"][split] = {"score": metric(truth, pred), "images": len(table)}
        for k, name in enumerate(comp.class_names):
            mask = truth == k
            per_class.append(
                {
                    "split": split,
                    "class": name,
                    "images": int(mask.sum()),
                    "accuracy": float((pred[mask] == k).mean()) if mask.any() else np.nan,
                }
            )
    table = pd.DataFrame(per_class).pivot(
        index="class", columns="split", values=["accuracy", "images"]
    )
    out_dir = Path(out) if out else Path(models[0].path).parent
    write_json(out_dir / "evaluation.json", result)
    write_csv(out_dir / "evaluation_per_class.csv", table, index=True)
    result["per_class"] = table
    result["files"] = [str(out_dir / "evaluation.json"), str(out_dir / "evaluation_per_class.csv")]
    return result
