"""The study as the paper reports it: CCT-20 trials scored on cis_test and trans_test with the epoch
chosen on cis_val (checked against kt evaluate on the exported model), the grid table, parameter
counts, and the paper's figures beside the measured ones."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from kaggle_transfer.competitions import synthetic

pytestmark = pytest.mark.slow

TINY = ["--set", "size=32", "--set", "workers=0", "--set", "pretrained=false", "--set", "batch_size=16",
        "--set", "epochs=2"]


@pytest.fixture(scope="module")
def cct_study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cct")
    data = synthetic.make("cct20", tmp / "data", n_train=48, n_test=24, image_size=32)
    root = tmp / "runs"
    run = subprocess.run([sys.executable, "-m", "kaggle_transfer", "study", "cct20", "--archs", "test_resnet",
                          "--grid", "small", "--data-dir", str(data), "--runs-root", str(root), *TINY],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    report = subprocess.run([sys.executable, "-m", "kaggle_transfer", "study", "report", "cct20", "--runs-root",
                             str(root), "--compare-paper"], capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-2000:]
    return data, root, report.stdout


def test_cct20_trials_report_cis_test_and_trans_test_of_the_selected_epoch(cct_study, tmp_path):
    from kaggle_transfer.training.export import export
    from tests.helpers import evaluate

    data, root, _ = cct_study
    table = pd.read_csv(root / "cct20" / "study-report" / "study.csv")
    row = table.iloc[0]
    assert row["reported"] == row["cis_test"] and 0 <= row["trans_test"] <= 1
    assert row["parameters_m"] > 0
    onnx = export(row["run_dir"], tmp_path / "model.onnx")["path"]  # best.pt: the epoch cis_val chose
    scored = evaluate("cct20", [onnx], data, out=tmp_path, progress=False)["splits"]
    assert row["cis_test"] == pytest.approx(scored["cis_test"]["score"], abs=1e-9)
    assert row["trans_test"] == pytest.approx(scored["trans_test"]["score"], abs=1e-9)


def test_the_grid_table_lists_every_trial(cct_study):
    _, root, _ = cct_study
    grid = pd.read_csv(root / "cct20" / "study-report" / "grid.csv")
    assert sorted(grid["lr"]) == [1e-4, 1e-3]  # the small grid: AdamW at two learning rates
    assert {"cis_test", "trans_test", "best_epoch", "parameters_m"} <= set(grid.columns)
    best = pd.read_csv(root / "cct20" / "study-report" / "study.csv")["score"].iloc[0]
    assert grid["score"].max() == pytest.approx(best)


def test_compare_paper_puts_the_papers_figures_beside_the_measured_ones():
    import numpy as np

    from kaggle_transfer.study.appendix import compare, paper_figures
    from kaggle_transfer.study.stats import correlations

    figures = paper_figures()
    assert {"dataset", "view", "statistic", "value", "source"} <= set(figures.columns)
    assert figures["source"].str.len().gt(10).all()
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"arch": [f"m{i}" for i in range(10)], "imagenet_top1": np.linspace(57, 83, 10)})
    table["reported"] = 0.85 + 0.001 * table["imagenet_top1"] + rng.normal(0, 0.01, 10)
    versus = compare("cassava", table).set_index(["view", "statistic"])
    assert versus.loc[("top1>=70", "pearson"), "paper"] == 0.12
    above = table[table["imagenet_top1"] >= 70]
    assert versus.loc[("top1>=70", "pearson"), "measured"] == pytest.approx(
        correlations(above["imagenet_top1"].to_numpy(), above["reported"].to_numpy())["pearson"])
    assert versus.loc[("top1>=70", "pearson"), "models"] == len(above)
    assert versus.loc[("all", "spearman"), "paper"] is None or pd.isna(versus.loc[("all", "spearman"), "paper"])


def test_report_prints_the_comparison(cct_study):
    _, _, out = cct_study
    assert "pearson" in out and "measured" in out


def test_study_trials_take_external_data(tmp_path):
    """SIIM-ISIC's paper split needs the 2019 set in every trial: --external-dir reaches each trial's fit;
    so does --time-limit (each trial's own clock)."""
    import json

    data = synthetic.make("aptos", tmp_path / "data", n_train=40, n_test=4, image_size=32)
    extra = synthetic.make("dr2015", tmp_path / "dr2015", n=20, image_size=32)
    root = tmp_path / "runs"
    run = subprocess.run([sys.executable, "-m", "kaggle_transfer", "study", "aptos", "--archs", "test_resnet",
                          "--grid", "small", "--data-dir", str(data), "--runs-root", str(root), *TINY,
                          "--set", "epochs=1", "--set", "external=dr2015", "--external-dir", f"dr2015={extra}",
                          "--time-limit", "2h"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    infos = [json.loads(p.read_text()) for p in root.glob("aptos/study/*/*/*/run.json")]
    assert len(infos) == 2 and all(i["external_dirs"] == {"dr2015": str(extra.resolve())} for i in infos)
    metrics = [json.loads(p.read_text()) for p in root.glob("aptos/study/*/*/*/metrics.json")]
    assert all(m["n_external"] == 20 for m in metrics)
    import yaml

    assert [yaml.safe_load(p.read_text())["time_limit"] for p in root.glob("aptos/study/*/*/*/config.yaml")] == ["2h"] * 2
