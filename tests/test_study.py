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


def test_paper_protocol_trials_run_each_model_as_the_release_did(tmp_path):
    """DeiT at 224 (the released call only runs there), SIIM-ISIC on two-class cross-entropy, CLIP towers
    by LP-FT at their own side; a YAML grid's size is the user's and stays."""
    from kaggle_transfer import competitions, config
    from kaggle_transfer.study.grid import trial_flags

    _, grid = load_grid("paper")
    point = {"optimizer": "adamw", "lr_index": 2, "weight_decay": 1e-5, "schedule": "cosine"}

    def run(arch, comp="aptos", g=grid):
        at = {**point, "arch": arch, "lr_index": 2 if g is grid else 0}
        return config.resolve(flags=trial_flags(g, at, competitions.get(comp)))

    assert run("deit_tiny_patch16_224.fb_in1k").size == 224
    assert run("tv:resnet50").size == 256 and run("tv:resnet50", "eurosat").size == 224
    assert run("tv:resnet50", "siim_isic").loss == "ce"
    clip = run("vit_large_patch14_clip_336.openai", "cct20")
    assert clip.lp_ft and clip.size == 336
    (tmp_path / "g.yaml").write_text("optimizer: [adamw]\nlr: {adamw: [0.001]}\n"
                                     "run: {size: 384, protocol: paper}\n")
    _, mine = load_grid(str(tmp_path / "g.yaml"))
    assert run("tv:resnet50", g=mine).size == 384 and run("deit_tiny_patch16_224.fb_in1k", g=mine).size == 384
    assert resolve_archs("appendix-g")[:3] == ["resnet50.tv_in1k", "resnet50.am_in1k", "resnet50.ram_in1k"]
    assert imagenet_top1("convnext_tiny.fb_in1k")[0] == 82.066  # timm's 224-px evaluation
    assert all(a.startswith("vit_") and a.endswith(".openai") for a in resolve_archs("clip"))


def _storage_with(tmp_path, studies):
    """A real Optuna storage holding finished trials as kt's runner records them."""
    import optuna

    from kaggle_transfer.study.grid import GRIDS, search_space

    url = f"sqlite:///{tmp_path / 'study.db'}"
    for name, grid, archs, scores, extra in studies:
        study = optuna.create_study(study_name=name, storage=url, direction="maximize")
        study.set_user_attr("grid", grid)
        study.set_user_attr("kind", "grid")
        space = search_space(GRIDS["small"], archs)
        dists = {k: optuna.distributions.CategoricalDistribution(v) for k, v in space.items()}
        for arch, lr_index, score in scores:
            params = {"arch": arch, "optimizer": "adamw", "lr_index": lr_index, "weight_decay": 1e-5,
                      "schedule": "cosine"}
            study.add_trial(optuna.trial.create_trial(
                params=params, distributions=dists, value=score,
                user_attrs={"run_dir": str(tmp_path / arch), "accuracy": score, "heldout": {}, **extra}))
    return url


def test_two_studies_of_one_grid_count_each_model_once_and_two_grids_are_refused(tmp_path):
    from kaggle_transfer.study.report import report_all, study_table

    url = _storage_with(tmp_path, [
        ("aptos-small-aaaa", "small", ["m1", "m2"], [("m1", 0, 0.5), ("m1", 1, 0.6), ("m2", 0, 0.7)], {}),
        ("aptos-small-bbbb", "small", ["m2", "m3"], [("m2", 0, 0.7), ("m2", 1, 0.8), ("m3", 0, 0.4)], {}),
    ])
    table = study_table("aptos", url)
    assert list(table["arch"]) == ["m1", "m2", "m3"]  # m2 once, its best over both studies
    assert table.set_index("arch").loc["m2", "score"] == 0.8
    assert table.set_index("arch").loc["m2", "trials_done"] == 2  # the point both trained counts once
    assert len(report_all({"aptos": table, "other": table.assign(score=table["score"] + 0.1)})) == 2
    (tmp_path / "x").mkdir()
    url = _storage_with(tmp_path / "x", [
        ("aptos-small-cccc", "small", ["m1"], [("m1", 0, 0.5)], {}),
        ("aptos-paper-dddd", "paper", ["m1"], [("m1", 0, 0.9)], {}),
    ])
    with pytest.raises(Exception, match="--grid"):
        study_table("aptos", url)
    assert study_table("aptos", url, grid="small").set_index("arch").loc["m1", "score"] == 0.5


def test_siim_isic_without_the_2019_data_is_not_the_papers_experiment(tmp_path):
    from kaggle_transfer.study.report import not_the_papers, study_table

    url = _storage_with(tmp_path, [("siim_isic-small-aaaa", "small", ["m1", "m2"],
                                    [("m1", 0, 0.8), ("m2", 0, 0.85)], {"external": []})])
    table = study_table("siim_isic", url)
    assert "2 of 2 models trained without isic2019" in not_the_papers("siim_isic", table)
    assert not_the_papers("siim_isic", table.assign(external="isic2019")) is None
    assert not_the_papers("aptos", table) is None
    root = tmp_path / "runs"
    (root / "siim_isic").mkdir(parents=True)
    (tmp_path / "study.db").rename(root / "siim_isic" / "study.db")
    cmd = [sys.executable, "-m", "kaggle_transfer", "study", "report", "siim_isic", "--runs-root", str(root)]
    plain = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0 and "warning: siim_isic: 2 of 2 models" in plain.stderr, plain.stderr[-800:]
    assert "Warning:" in (root / "siim_isic" / "study-report" / "study.md").read_text()
    refused = subprocess.run([*cmd, "--compare-paper"], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "--compare-paper refused" in refused.stderr


def test_cct20_reports_the_validation_selected_test_score_and_the_best_one_labelled(tmp_path):
    from kaggle_transfer.study.report import study_table

    url = _storage_with(tmp_path, [("cct20-small-aaaa", "small", ["m1"], [], {})])
    import optuna

    from kaggle_transfer.study.grid import GRIDS, search_space

    study = optuna.load_study(study_name="cct20-small-aaaa", storage=url)
    dists = {k: optuna.distributions.CategoricalDistribution(v)
             for k, v in search_space(GRIDS["small"], ["m1"]).items()}
    for lr_index, val, test in ((0, 0.9, 0.70), (1, 0.8, 0.75)):  # the best test is not validation's pick
        study.add_trial(optuna.trial.create_trial(
            params={"arch": "m1", "optimizer": "adamw", "lr_index": lr_index, "weight_decay": 1e-5,
                    "schedule": "cosine"}, distributions=dists, value=val,
            user_attrs={"run_dir": "x", "accuracy": val, "heldout": {"cis_test": test, "trans_test": test - 0.1}}))
    row = study_table("cct20", url).iloc[0]
    assert (row["score"], row["reported"], row["reported_split"]) == (0.9, 0.70, "cis_test")
    assert row["best_cis_test"] == 0.75
