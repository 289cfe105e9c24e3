"""kt study: concurrent workers on one storage train every grid point once; a killed worker's point is
re-run; the report's numbers agree with scipy and with the run folders."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr, spearmanr

from kaggle_transfer.competitions import synthetic
from kaggle_transfer.study.archs import PAPER19, imagenet_top1, resolve_archs
from kaggle_transfer.study.grid import GRIDS, load_grid, point_config
from kaggle_transfer.study.stats import correlations

pytestmark = pytest.mark.slow

TINY = ["--set", "size=32", "--set", "workers=0", "--set", "pretrained=false", "--set", "batch_size=16"]
ARCHS = "test_resnet,test_efficientnet"


def study_cmd(data, root, *extra):
    return [sys.executable, "-m", "kaggle_transfer", "study", "aptos", "--archs", ARCHS, "--grid", "small",
            "--data-dir", str(data), "--runs-root", str(root), *TINY, *extra]


def finished(root: Path) -> list[Path]:
    return sorted(root.glob("aptos/study/*/*/*/metrics.json"))


def claims(root: Path) -> list[str]:
    import optuna

    summaries = optuna.get_all_study_summaries(f"sqlite:///{root / 'aptos' / 'study.db'}")
    return sorted(s.study_name.split(":claim:")[1] for s in summaries if ":claim:" in s.study_name)


@pytest.fixture
def data(tmp_path):
    return synthetic.make("aptos", tmp_path / "data", n_train=60, n_test=4, image_size=32)


def test_two_workers_started_together_train_every_point_once(data, tmp_path):
    root = tmp_path / "runs"
    procs = [subprocess.Popen(study_cmd(data, root, "--set", "epochs=1"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-1500:] for o in outs]
    trained = sum(int(o[0].split(" trained by")[0].rsplit(", ", 1)[1]) for o in outs)
    assert trained == 4  # 2 archs x 2 learning rates, between the two workers
    assert len(finished(root)) == 4
    assert [c.rsplit(":", 1)[1] for c in claims(root)] == ["0"] * 4  # one claim per point, no retries
    for metrics in finished(root):
        assert len(pd.read_csv(metrics.parent / "history.csv")) == 1  # never trained twice into one folder
    again = subprocess.run(study_cmd(data, root, "--set", "epochs=1"), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "0 trained by this command" in again.stdout  # a finished study stays done

    top1 = tmp_path / "top1.csv"
    pd.DataFrame({"arch": ["test_resnet", "test_efficientnet"], "top1": [60.0, 70.0]}).to_csv(top1, index=False)
    report = subprocess.run([sys.executable, "-m", "kaggle_transfer", "study", "report", "aptos", "--runs-root",
                             str(root), "--top1", str(top1)], capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    table = pd.read_csv(root / "aptos" / "study-report" / "study.csv")
    assert (root / "aptos" / "study-report" / "study.png").stat().st_size > 5000
    for row in table.itertuples():  # the report agrees with the run folders
        runs = [json.loads(m.read_text())["score"] for m in finished(root) if f"/{row.arch}/" in str(m)]
        assert row.score == pytest.approx(max(runs)) and row.trials_done == 2
        assert Path(row.run_dir, "metrics.json").is_file() and 0 <= row.accuracy <= 1


def test_a_killed_worker_is_rerun_without_duplicates(data, tmp_path):
    root = tmp_path / "runs"
    env = {**os.environ, "KT_STUDY_HEARTBEAT": "1", "KT_STUDY_GRACE": "3"}
    victim = subprocess.Popen(study_cmd(data, root, "--set", "epochs=3"), env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    def interrupted() -> list[Path]:
        return [p.parent for p in root.glob("aptos/study/*/*/*/last.pt") if not (p.parent / "metrics.json").exists()]

    deadline = time.time() + 120
    while not interrupted() and time.time() < deadline:  # a trial with an epoch done and two to go
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)  # mid-trial: checkpointed, its trial still RUNNING
    victim.wait()
    killed = interrupted()
    assert killed, "the worker finished before it could be killed mid-trial"
    time.sleep(4)  # past the grace period: the next worker fails the stale trial and re-queues it
    out = subprocess.run(study_cmd(data, root, "--set", "epochs=3"), env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert len(finished(root)) == 4
    for metrics in finished(root):
        assert list(pd.read_csv(metrics.parent / "history.csv")["epoch"]) == [1, 2, 3]  # resumed, not restarted
    keys = [c.rsplit(":", 1)[0] for c in claims(root)]
    assert len(set(keys)) == 4
    assert any(c.endswith(":1") for c in claims(root))  # the killed point was re-claimed and resumed
    assert list(pd.read_csv(killed[0] / "history.csv")["epoch"]) == [1, 2, 3]


def test_correlations_agree_with_scipy():
    rng = np.random.default_rng(0)
    x = rng.uniform(55, 85, 12)
    y = 0.3 * x + rng.normal(0, 2, 12)
    stats = correlations(x, y)
    assert stats["pearson"] == pytest.approx(pearsonr(x, y)[0])
    assert stats["spearman"] == pytest.approx(spearmanr(x, y)[0])
    assert stats["pearson_p"] == pytest.approx(pearsonr(x, y)[1])
    assert stats["spearman_p"] == pytest.approx(spearmanr(x, y)[1])
    # the slope: task-metric points per ImageNet point, both on a 0-1 scale (x in %, y in 0-1)
    assert stats["slope"] == pytest.approx(np.polyfit(x / 100, y, 1)[0])
    assert stats["slope_low"] <= stats["slope"] <= stats["slope_high"]
    line = correlations(np.array([60.0, 70.0, 80.0]), np.array([0.5, 0.6, 0.7]))
    assert line["minmax_slope"] == pytest.approx(1.0) and line["pearson"] == pytest.approx(1.0)
    assert line["slope"] == pytest.approx(1.0)  # +10 ImageNet points (0.10) buy +0.10 of the metric
    flat = correlations(np.array([60.0, 70.0, 80.0]), np.array([0.7, 0.7, 0.7]))
    assert flat["minmax_slope"] == pytest.approx(0.0) and flat["slope"] == pytest.approx(0.0)


def test_the_paper_pairs_fit_the_0_1_scale_not_min_max():
    """Why the slope is on the metric's own scale: with 19 models, min-max scaling forces a slope of at
    least about r * sqrt(2/n) (0.14 for r = 0.44), so the paper's Melanoma pair (r 0.44, slope 0.05)
    cannot be a min-max slope; on the 0-1 scale a weak trend gives exactly such small slopes."""
    rng = np.random.default_rng(1)
    x = np.linspace(57, 83, 19)
    y = 0.90 + 0.0005 * (x - 70) + rng.normal(0, 0.01, 19)  # AUC that barely moves with ImageNet
    stats = correlations(x, y)
    assert stats["slope"] < 0.1 < stats["minmax_slope"]


def test_paper19_table():
    import timm
    import torchvision

    assert len(PAPER19) == 19
    names = resolve_archs("paper19")
    assert len(names) == 19 and sum(n.startswith("tv:") for n in names) == 12  # as sample_train.py builds them
    for arch in PAPER19:
        if arch.library == "timm":  # a tag that has weights in timm, and its results-table top-1
            assert arch.arch in timm.list_pretrained(arch.arch.split(".")[0] + "*")
        else:  # torchvision's own number for the weights the study loaded
            weights = torchvision.models.get_model_weights(arch.arch[3:]).IMAGENET1K_V1
            assert arch.top1 == pytest.approx(weights.meta["_metrics"]["ImageNet-1K"]["acc@1"])
    tops = [a.top1 for a in PAPER19]
    assert min(tops) == pytest.approx(56.522) and max(tops) == pytest.approx(83.414)  # 57-83 % as the paper
    assert imagenet_top1("tv:resnet50") == (76.130, imagenet_top1("tv:resnet50")[1])


def test_paper_grid():
    name, grid = load_grid("paper")
    assert name == "paper" and grid is GRIDS["paper"]
    adamw = point_config(grid, {"arch": "a", "optimizer": "adamw", "lr_index": 1, "weight_decay": 1e-4,
                                "schedule": "step"})
    assert adamw["lr"] == 1e-3 and adamw["weight_decay"] == pytest.approx(1e-4 / 1e-3)  # AdamW: decay / lr
    sgd = point_config(grid, {"arch": "a", "optimizer": "sgd", "lr_index": 0, "weight_decay": 1e-4,
                              "schedule": "cosine"})
    assert sgd["lr"] == 0.1 and sgd["weight_decay"] == 1e-4 and sgd["epochs"] == 30 and sgd["batch_size"] == 128
    assert sgd["protocol"] == "paper"


def test_paper_grid_trials_take_each_datasets_size_and_loss():
    """The study's APTOS baseline is cross-entropy over the grades; its EuroSAT runs are at 224 px."""
    from kaggle_transfer import competitions, config
    from kaggle_transfer.study.grid import trial_flags

    _, grid = load_grid("paper")
    point = {"arch": "test_resnet", "optimizer": "adamw", "lr_index": 2, "weight_decay": 1e-5, "schedule": "cosine"}
    aptos = config.resolve(flags=trial_flags(grid, point, competitions.get("aptos")))
    assert (aptos.loss, aptos.size, aptos.protocol) == ("ce", 256, "paper")
    assert config.resolve(flags=trial_flags(grid, point, competitions.get("eurosat"))).size == 224
    assert config.resolve(flags=trial_flags(grid, point, competitions.get("cassava"))).loss is None
    kt = trial_flags(grid, point, competitions.get("aptos"), sets=["protocol=kt"])
    assert "loss" not in kt  # kt's protocol keeps the task's default (SmoothL1 regression)


def test_cross_dataset_view_against_scipy():
    from kaggle_transfer.study.report import report_all

    rng = np.random.default_rng(3)
    archs, top1 = [f"m{i}" for i in range(8)], np.linspace(60, 82, 8)
    shared = rng.normal(0, 1, 8)  # what the datasets agree on, unrelated to ImageNet
    tables = {name: pd.DataFrame({"arch": archs, "imagenet_top1": top1, "score": 0.8 + 0.02 * (shared + noise)})
              for name, noise in (("a", rng.normal(0, 0.3, 8)), ("b", rng.normal(0, 0.3, 8)),
                                  ("c", rng.normal(0, 0.3, 8)))}
    view = report_all(tables, resamples=200).set_index("dataset")
    others = (tables["b"]["score"] + tables["c"]["score"]) / 2
    assert view.loc["a", "spearman_vs_other_datasets"] == pytest.approx(spearmanr(others, tables["a"]["score"])[0])
    assert view.loc["a", "spearman_vs_imagenet"] == pytest.approx(spearmanr(top1, tables["a"]["score"])[0])
    assert view.loc["a", "p_vs_imagenet"] == pytest.approx(spearmanr(top1, tables["a"]["score"])[1])
    assert (view["spearman_vs_other_datasets"] > view["spearman_vs_imagenet"]).all()
    assert (view["p_imagenet_as_good"] < 0.5).all()  # the other datasets predict each one better than ImageNet
    # a dataset on which every model scores the same: no correlation is defined, so neither is the share
    flat = {**tables, "flat": tables["a"].assign(score=0.7)}
    assert np.isnan(report_all(flat, resamples=50).set_index("dataset").loc["flat", "p_imagenet_as_good"])
