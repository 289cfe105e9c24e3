"""Cross-validation groups, OOF ensembles (mean, rank, greedy), ensemble specs in predict, reports."""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from kaggle_transfer.cli import main
from kaggle_transfer.competitions import APTOS, submission
from kaggle_transfer.errors import KtError
from kaggle_transfer.inference.ensemble import build, load_spec
from kaggle_transfer.reports.run import report
from kaggle_transfer.reports.table import runs_table
from kaggle_transfer.training.cv import fit_group, parse_folds
from kaggle_transfer.training.export import export
from kaggle_transfer.training.loop import fit
from tests.helpers import predict

from .conftest import tiny_config

pytestmark = pytest.mark.slow


def test_parse_folds():
    assert parse_folds("all", 4) == [0, 1, 2, 3] and parse_folds("2,0", 4) == [0, 2] and parse_folds(None, 4) is None
    with pytest.raises(KtError, match="must be in 0..3"):
        parse_folds("4", 4)
    with pytest.raises(KtError, match="fold ids like 0,2"):
        parse_folds("x", 4)


@pytest.fixture(scope="module")
def group(aptos_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("group")
    summary = fit_group(tiny_config(epochs=1, folds=3), root, aptos_dir, [0, 1, 2], progress=False)
    return root, summary


def test_group_pools_every_row_once(group, aptos_dir):
    root, summary = group
    oof = np.load(root / "oof.npz")
    assert sorted(oof["ids"]) == sorted(APTOS.read_train(aptos_dir)["id"])  # every training row, once
    scores = [m["score"] for m in summary["members"]]
    assert summary["mean"] == pytest.approx(np.mean(scores)) and summary["std"] == pytest.approx(np.std(scores))
    assert summary["pooled_score"] == pytest.approx(
        APTOS.task.score(oof["targets"], oof["raw"], json.loads(str(oof["fitted"]))))
    assert json.loads((root / "group.json").read_text())["config"]["split"] == "kfold"


def test_group_resumes_without_retraining(group, aptos_dir):
    root, _ = group
    before = {p: p.stat().st_mtime_ns for p in root.glob("fold*/best.pt")}
    fit_group(tiny_config(epochs=1, folds=3), root, aptos_dir, [0, 1, 2], progress=False)
    assert {p: p.stat().st_mtime_ns for p in root.glob("fold*/best.pt")} == before


def test_seeds_repeat_the_same_folds(aptos_dir, tmp_path):
    out = CliRunner().invoke(main, ["train", "aptos", "--data-dir", str(aptos_dir), "--arch", "test_resnet",
                                    "--no-pretrained", "--size", "32", "--epochs", "1", "--workers", "0",
                                    "--folds", "0", "--seeds", "2", "--runs-root", str(tmp_path), "--no-progress",
                                    "--set", "folds=3"])
    assert out.exit_code == 0, out.output
    group_dir = next((tmp_path / "aptos").iterdir())
    summary = json.loads((group_dir / "group.json").read_text())
    assert [m["dir"] for m in summary["members"]] == ["seed414_fold0", "seed415_fold0"]
    a, b = (np.load(group_dir / m / "oof.npz") for m in ("seed414_fold0", "seed415_fold0"))
    assert sorted(a["ids"]) == sorted(b["ids"]) and not np.allclose(a["raw"], b["raw"])
    assert "CV qwk" in out.output and "±" in out.output


def test_resume_with_more_epochs_extends_every_member_of_a_group(aptos_dir, tmp_path):
    args = ["train", "aptos", "--data-dir", str(aptos_dir), "--arch", "test_resnet", "--no-pretrained",
            "--size", "32", "--epochs", "1", "-j", "0", "--folds", "0,1", "--runs-root", str(tmp_path),
            "--no-progress", "--set", "folds=3", "--set", "max_steps=1"]
    assert CliRunner().invoke(main, args).exit_code == 0
    group_dir = next((tmp_path / "aptos").iterdir())
    out = CliRunner().invoke(main, ["train", "--resume", str(group_dir), "--epochs", "2"])
    assert out.exit_code == 0, out.output
    assert out.output.count("resuming fold") == 2  # both finished members trained on
    for member in ("fold0", "fold1"):
        assert list(pd.read_csv(group_dir / member / "history.csv")["epoch"]) == [1, 2]
    summary = json.loads((group_dir / "group.json").read_text())
    assert summary["config"]["epochs"] == 2
    assert all(json.loads((group_dir / m / "metrics.json").read_text())["epochs_run"] == 2
               for m in ("fold0", "fold1"))


def test_seeds_alone_repeat_this_runs_own_split(aptos_dir, tmp_path):
    """--seeds N without --folds trains this run N times on its own split (APTOS: the paper's), not a
    5-fold group on another split."""
    from kaggle_transfer import runs

    out = CliRunner().invoke(main, ["train", "aptos", "--data-dir", str(aptos_dir), "--arch", "test_resnet",
                                    "--no-pretrained", "--size", "32", "--epochs", "1", "--workers", "0",
                                    "--seeds", "2", "--runs-root", str(tmp_path), "--no-progress"])
    assert out.exit_code == 0, out.output
    group_dir = next((tmp_path / "aptos").iterdir())
    summary = json.loads((group_dir / "group.json").read_text())
    assert [m["dir"] for m in summary["members"]] == ["seed414_fold0", "seed415_fold0"]
    members = [group_dir / m["dir"] for m in summary["members"]]
    assert {runs.load_config(m).split for m in members} == {None}  # the competition's own: paper
    plain = tmp_path / "plain"
    out = CliRunner().invoke(main, ["train", "aptos", "--data-dir", str(aptos_dir), "--arch", "test_resnet",
                                    "--no-pretrained", "--size", "32", "--epochs", "1", "--workers", "0",
                                    "--runs-root", str(plain), "--no-progress"])
    assert out.exit_code == 0, out.output
    single = next((plain / "aptos").iterdir())
    assert sorted(runs.load_oof(single)["ids"]) == sorted(runs.load_oof(members[0])["ids"])  # same rows


@pytest.fixture(scope="module")
def two_sizes(aptos_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("sizes")
    runs = []
    for size in (32, 48):
        run = root / f"s{size}"
        fit(tiny_config(size=size, epochs=2), run, aptos_dir, progress=False)
        export(run)
        runs.append(run)
    return runs


def test_greedy_ensemble_scores_at_least_the_best_member(two_sizes, tmp_path):
    spec = build("aptos", two_sizes, "greedy", tmp_path / "spec.json")
    assert spec["oof_score"] >= spec["best_member_score"] - 1e-12
    assert sum(m["weight"] for m in spec["members"]) == pytest.approx(1.0)
    assert spec["best_member_score"] == pytest.approx(max(m["oof_score"] for m in spec["members"]))
    mean = build("aptos", two_sizes, "mean", tmp_path / "mean.json")
    assert [m["weight"] for m in mean["members"]] == [0.5, 0.5]
    with pytest.raises(KtError, match="--blend rank suits"):
        build("aptos", two_sizes, "rank", tmp_path / "rank.json")


def test_default_spec_path_honours_kt_runs(two_sizes, tmp_path, monkeypatch):
    monkeypatch.setenv("KT_RUNS", str(tmp_path / "elsewhere"))
    monkeypatch.chdir(tmp_path)
    spec = build("aptos", two_sizes, "mean")
    assert Path(spec["path"]).parent == tmp_path / "elsewhere" / "aptos" / "ensembles"
    assert not (tmp_path / "runs").exists()


def test_predict_uses_the_spec_and_refuses_a_changed_member(two_sizes, aptos_dir, tmp_path):
    spec = build("aptos", two_sizes, "greedy", tmp_path / "spec.json")
    manifest = predict("aptos", [], aptos_dir, out_root=tmp_path / "subs", ensemble=tmp_path / "spec.json",
                                  progress=False)
    assert manifest["fitted"] == spec["fitted"] and manifest["oof_score"] == spec["oof_score"]
    assert submission.problems(APTOS, Path(manifest["submission"]), aptos_dir) == []
    model = Path(spec["members"][0]["models"][0]["path"])
    original = model.read_bytes()
    try:
        model.write_bytes(original + b"\0")
        with pytest.raises(KtError, match="changed since the ensemble was built"):
            load_spec(tmp_path / "spec.json")
    finally:
        model.write_bytes(original)


def test_runs_of_different_splits_do_not_blend(two_sizes, group):
    with pytest.raises(KtError, match="validated on other rows"):
        build("aptos", [two_sizes[0], group[0]], "mean")


def test_reports_render_pngs(two_sizes, group, tmp_path):
    result = report(group[0], tmp_path / "g")
    names = {Path(p).name for p in result["pngs"]}
    assert {"confusion.png", "cutpoints.png", "learning_curve_fold0.png"} <= names
    assert all(os.path.getsize(p) > 5000 for p in result["pngs"])
    text = (tmp_path / "g" / "report.md").read_text()
    assert "![confusion](confusion.png)" in text
    # a group's report: one row per member with its score, then mean ± std and the pooled OOF score
    summary = json.loads((group[0] / "group.json").read_text())
    for m in summary["members"]:
        assert f"| {m['dir']} | {m['fold']} | {m['seed']} | {m['score']:.4f} |" in text
    assert f"**{summary['mean']:.4f} ± {summary['std']:.4f}**" in text
    assert f"pooled OOF ({summary['rows']} rows) | | | {summary['pooled_score']:.4f}" in text
    spec = build("aptos", two_sizes, "greedy", tmp_path / "spec.json")
    ens = report(spec["path"], tmp_path / "e")
    assert os.path.getsize(ens["pngs"][0]) > 5000
    with pytest.raises(KtError, match="not a run, a run group or an ensemble spec"):
        report(tmp_path)


@pytest.mark.parametrize("name, png", [("siim_isic", "roc.png"), ("hpa", "per_class.png"),
                                       ("cassava", "confusion.png")])
def test_task_specific_report_plots(tmp_path, name, png):
    from kaggle_transfer import config
    from kaggle_transfer.competitions import synthetic

    data = synthetic.make(name, tmp_path / "data", n_train=60, n_test=8, image_size=32)
    cfg = config.resolve(flags={"competition": name, "arch": "test_resnet", "pretrained": False, "size": 32,
                                "epochs": 1, "workers": 0, "batch_size": 16})
    fit(cfg, tmp_path / "run", data, progress=False)
    result = report(tmp_path / "run")
    assert any(p.endswith(png) and os.path.getsize(p) > 5000 for p in result["pngs"])


def test_leaderboard(two_sizes, group, tmp_path):
    """kt runs: groups and runs ranked apart, the unfinished ones last with their state (a live
    process: running; a dead one: stopped), every line within 120 columns; --compare A B."""
    import shutil
    import subprocess
    import sys

    root = tmp_path / "runs" / "aptos"
    long = "20261202-004500_tf_efficientnet_b4.ns_jft_in1k_{}_heavy_gem_l1_with_a_long_name"
    for run in two_sizes:
        shutil.copytree(run, root / long.format(run.name))
    shutil.copytree(group[0], root / "g3")
    for name, pid in (("killed", None), ("running", os.getpid())):
        run = Path(shutil.copytree(two_sizes[0], root / name))
        (run / "metrics.json").unlink()
        if pid is None:  # a process that has exited: its pid names no live process
            child = subprocess.Popen([sys.executable, "-c", "pass"])
            child.wait()
            pid = child.pid
        info = json.loads((run / "run.json").read_text())
        (run / "run.json").write_text(json.dumps({**info, "pid": pid}))
    table = runs_table("aptos", tmp_path / "runs")
    assert list(table["kind"]) == ["group", "run", "run", "run", "run"]
    done = table[(table["kind"] == "run") & (table["state"] == "finished")]
    assert list(done["score"]) == sorted(done["score"], reverse=True)
    assert table["differs from best"][2] in ("size=32", "size=48")
    assert dict(zip(table["run"], table["state"], strict=True))["killed"] == "stopped"
    assert dict(zip(table["run"], table["state"], strict=True))["running"] == "running"
    out = CliRunner().invoke(main, ["runs", "aptos", "--runs-root", str(tmp_path / "runs")])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert max(map(len, lines)) <= 120, max(lines, key=len)
    titles = [line for line in lines if line and not line.startswith(" ")]
    assert [t.split(" (")[0] for t in titles] == ["run groups", "runs", "not finished"]
    assert any(line.lstrip().startswith("g3") and "±" in line for line in lines)
    assert any("killed" in line and "stopped" in line and "2/2" in line for line in lines)
    out = CliRunner().invoke(main, ["runs", "aptos", "--runs-root", str(tmp_path / "runs"), "--compare",
                                    long.format("s32"), str(root / long.format("s48"))])
    assert out.exit_code == 0, out.output
    rows = {line.split()[0]: line.split()[1:] for line in out.output.splitlines()}
    assert rows["size"] == ["32", "48"] and rows["state"] == ["finished", "finished"]
    assert "qwk" in rows and "seed" not in rows and "workers" not in rows
    assert max(map(len, out.output.splitlines())) <= 120
    out = CliRunner().invoke(main, ["runs", "aptos", "--runs-root", str(tmp_path / "runs"), "--compare", "x", "g3"])
    assert out.exit_code == 2 and "--compare x: neither a run folder" in out.output
