"""APTOS trained as the study's baseline (`--loss ce`): five logits, argmax, through ONNX to a submission."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from .conftest import tiny_config

pytestmark = pytest.mark.slow


def test_ce_run_trains_exports_and_predicts_grades(aptos_dir, tmp_path):
    from kaggle_transfer import runs
    from kaggle_transfer.training.export import export
    from kaggle_transfer.training.loop import fit
    from tests.helpers import predict

    run = tmp_path / "run"
    result = fit(tiny_config(loss="ce", epochs=1), run, aptos_dir, progress=False)
    oof = runs.load_oof(run)
    assert oof["raw"].shape[1] == 5 and oof["fitted"] == {} and result["loss"] == "ce"
    assert "score_rounded" not in result
    onnx = export(run)  # parity with torch is checked inside export
    manifest = predict("aptos", [onnx["path"]], aptos_dir, out_root=tmp_path / "subs", progress=False)
    sub = pd.read_csv(manifest["submission"])
    sample = pd.read_csv(aptos_dir / "sample_submission.csv")
    assert list(sub.columns) == list(sample.columns) and sorted(sub["id_code"]) == sorted(sample["id_code"])
    assert set(np.unique(sub["diagnosis"])) <= set(range(5))
