"""kt study ablate: levels x paired seeds on one split; the report's intervals and paired differences
against scipy and a hand computation from the stored trial scores."""

import subprocess
import sys

import numpy as np
import optuna
import pandas as pd
import pytest
from scipy.stats import t as student_t
from scipy.stats import ttest_rel

from kaggle_transfer.competitions import synthetic
from kaggle_transfer.errors import KtError
from kaggle_transfer.study.ablate import Ablation, Factor, parse_vary, summarise

TINY = ["--set", "size=32", "--set", "workers=0", "--set", "batch_size=16", "--set", "epochs=1"]


def test_levels_every_combination_or_one_factor_at_a_time():
    factors = (Factor("size", ("256", "384")), Factor("augment", ("paper", "heavy", "augmix")))
    full = Ablation("a", factors, 2).labels()
    assert len(full) == 6 and full[0] == "size=256 augment=paper"  # the baseline: every first value
    alone = Ablation("a", factors, 2, one_at_a_time=True).labels()
    assert alone == ["size=256 augment=paper", "size=384 augment=paper", "size=256 augment=heavy",
                     "size=256 augment=augmix"]


@pytest.mark.parametrize("spec, message", [
    ("seed=1,2", "--seeds"),
    ("size=256", "two or more"),
    ("size=256,256", "two or more"),
    ("sise=256,384", "sise"),
    ("size=abc,384", "size"),
    ("size", "KEY=V1,V2"),
])
def test_a_bad_factor_is_one_line_naming_it(spec, message):
    with pytest.raises(KtError, match=message):
        parse_vary([spec])
    with pytest.raises(KtError, match="twice"):
        parse_vary(["size=256,384", "size=512,640"])


@pytest.mark.parametrize("spec, message", [
    ("split_seed=0,1", "which rows validate"),
    ("fold=0,1", "which rows validate"),
    ("lr=1e-3,0.001", "two or more different"),  # one value written twice
    ("size=32,abc", "--vary size=abc"),
    ("size=32,-5", "--vary size=-5"),
    ("nokey=1,2", "--vary nokey=1"),
])
def test_a_factor_that_would_break_the_pairing_or_repeat_a_level_is_refused(spec, message):
    with pytest.raises(KtError, match=message):
        parse_vary([spec])


def test_a_set_of_a_factor_is_refused_and_runtime_sets_do_not_change_the_ablation():
    from kaggle_transfer.study.ablate import check_sets

    factors = parse_vary(["augment=paper,none"])
    with pytest.raises(KtError, match="--set augment and --vary augment"):
        check_sets(factors, ["augment=heavy"])
    spec = Ablation("a", factors, 2)
    assert spec.fingerprint("aptos", ("epochs=3",)) == spec.fingerprint("aptos", ("epochs=3", "workers=1"))
    assert spec.fingerprint("aptos", ("epochs=3",)) != spec.fingerprint("aptos", ("epochs=4",))


def test_every_level_is_checked_before_the_first_run(tmp_path):
    data = synthetic.make("aptos", tmp_path / "data", n_train=20, n_test=2, image_size=32)
    from click.testing import CliRunner

    from kaggle_transfer.cli import main

    base = ["study", "ablate", "aptos", "--arch", "test_resnet", "--no-pretrained", "--data-dir", str(data),
            "--runs-root", str(tmp_path / "runs"), *TINY]
    for vary, message in (("loss=smooth_l1,focal", "--vary level 'loss=focal'"),
                          ("init=/nonexistent/a.pt,/nonexistent/b.pt", "not found"),
                          ("recipe=paper,top", "--vary level 'recipe=top'")):  # top needs dr2015's folder
        out = CliRunner().invoke(main, [*base, "--vary", vary])
        assert out.exit_code == 2 and message in out.output, out.output[-800:]
        assert out.output.strip().count("\n") == 0 and "trial" not in out.output  # one line, nothing trained
    assert not (tmp_path / "runs" / "aptos").exists() or not any((tmp_path / "runs" / "aptos").rglob("*.pt"))


def test_the_paired_differences_are_the_hand_computed_ones():
    rng = np.random.default_rng(0)
    base, better = rng.normal(0.80, 0.01, 5), None
    better = base + 0.02 + rng.normal(0, 0.002, 5)  # a real effect, paired by seed
    noise = base + rng.normal(0, 0.01, 5)  # none: differences scatter around 0
    scores = pd.DataFrame({
        "level": ["a"] * 5 + ["b"] * 5 + ["c"] * 5,
        "seed": list(range(5)) * 3,
        "score": np.concatenate([base, better, noise]),
    })
    table = summarise(scores, ["a", "b", "c"]).set_index("level")
    d = better - base
    half = student_t.ppf(0.975, 4) * d.std(ddof=1) / np.sqrt(5)
    assert table.loc["b", "diff"] == pytest.approx(d.mean())
    assert (table.loc["b", "diff_low"], table.loc["b", "diff_high"]) == pytest.approx((d.mean() - half,
                                                                                        d.mean() + half))
    assert table.loc["b", "p_value"] == pytest.approx(ttest_rel(better, base).pvalue)
    assert table.loc["b", "verdict"].startswith("better")
    assert table.loc["c", "diff_low"] < 0 < table.loc["c", "diff_high"]
    assert table.loc["c", "verdict"].startswith("within noise")
    half_a = student_t.ppf(0.975, 4) * base.std(ddof=1) / np.sqrt(5)
    assert table.loc["a", "ci_low"] == pytest.approx(base.mean() - half_a)
    assert (table["n"] == 5).all() and table.loc["a", "baseline"]
    # a level missing a seed is compared on the seeds both have
    partial = summarise(scores[~((scores["level"] == "b") & (scores["seed"] == 4))], ["a", "b", "c"])
    assert partial.set_index("level").loc["b", "paired_n"] == 4


@pytest.mark.slow
def test_an_ablation_trains_every_level_over_paired_seeds_and_reports_them(tmp_path):
    data = synthetic.make("aptos", tmp_path / "data", n_train=60, n_test=4, image_size=32)
    root = tmp_path / "runs"

    def ablate(seeds):
        cmd = [sys.executable, "-m", "kaggle_transfer", "study", "ablate", "aptos", "--arch", "test_resnet",
               "--vary", "workers=0,1", "--vary", "lr=1e-3,3e-2", "--one-at-a-time", "--seeds", str(seeds),
               "--no-pretrained", "--data-dir", str(data), "--runs-root", str(root),
               "--set", "size=32", "--set", "batch_size=16", "--set", "epochs=1"]  # workers: the factor
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout

    first = ablate(2)
    assert "3 levels x 2 seeds = 6 runs" in first and "6 trained by this command" in first
    report = sorted((root / "aptos" / "ablation-report").glob("*/ablation.csv"))
    assert len(report) == 1 and (report[0].parent / "ablation.png").stat().st_size > 0
    table = pd.read_csv(report[0]).set_index("level")
    assert list(table.index) == ["workers=0 lr=1e-3", "workers=1 lr=1e-3", "workers=0 lr=3e-2"]
    assert (table["n"] == 2).all()
    # the stored trial scores, paired by seed, give the same differences
    storage = f"sqlite:///{root / 'aptos' / 'study.db'}"
    study = optuna.load_study(study_name=report[0].parent.name + "-s2", storage=storage)
    by = {(t.params["level"], t.params["seed"]): t.value for t in study.trials if t.value is not None}
    assert len(by) == 6
    for level, name in ((1, "workers=1 lr=1e-3"), (2, "workers=0 lr=3e-2")):
        d = np.array([by[(level, s)] - by[(0, s)] for s in (0, 1)])
        assert table.loc[name, "diff"] == pytest.approx(d.mean())
    # data-loader workers change nothing on a fixed seed: the interval holds 0
    assert table.loc["workers=1 lr=1e-3", "diff_low"] <= 0 <= table.loc["workers=1 lr=1e-3", "diff_high"]
    assert "within noise" in table.loc["workers=1 lr=1e-3", "verdict"]
    md = (report[0].parent / "ablation.md").read_text()
    assert "Baseline: `workers=0 lr=1e-3`" in md and "within noise" in md
    # one more seed trains only the new seed's runs: the first two seeds' folders are reused
    again = ablate(3)
    assert "9 runs, 3 trained by this command" in again
    status = subprocess.run([sys.executable, "-m", "kaggle_transfer", "study", "status", "aptos",
                             "--runs-root", str(root)], capture_output=True, text=True, timeout=120)
    assert status.returncode == 0 and "9 points: 9 done" in status.stdout, status.stderr[-800:]
    # the grid report does not take the ablation's runs for a study
    grid = subprocess.run([sys.executable, "-m", "kaggle_transfer", "study", "report", "aptos",
                           "--runs-root", str(root)], capture_output=True, text=True, timeout=120)
    assert grid.returncode == 2 and "only ablations" in grid.stderr
    # one report folder whatever the seed count, and status lists the ablation once (its latest)
    assert [p.name for p in (root / "aptos" / "ablation-report").iterdir()] == [report[0].parent.name]
    assert status.stdout.count("ablation of test_resnet") == 1


def test_a_recipe_can_be_the_factor_and_a_level_wins_over_every_runs_set():
    from kaggle_transfer import config, recipes
    from kaggle_transfer.study.ablate import AblationDesign

    spec = Ablation("tv:resnet50", parse_vary(["recipe=paper,top", "size=320,448"]), seeds=2, one_at_a_time=True)
    design = AblationDesign("aptos", spec, ("epochs=3", "size=64"))
    assert spec.labels() == ["recipe=paper size=320", "recipe=top size=320", "recipe=paper size=448"]
    top = design.config({"level": 1, "seed": 1})
    want = config.resolve([recipes.resolve("aptos", "top")], {"competition": "aptos", "arch": "tv:resnet50",
                                                               "seed": 1}, ["epochs=3", "size=320"])
    assert top == want and top.seed == 1
    paper = design.config({"level": 0, "seed": 0})
    assert paper.protocol == "paper" and paper.size == 320 and paper.epochs == 3
    # every level's runs land apart, the seed count is not part of the folder (more seeds reuse them)
    more = AblationDesign("aptos", Ablation(spec.arch, spec.factors, 5, True), ("epochs=3", "size=64"))
    assert design.run_dir("/r", {"level": 2, "seed": 1}) == more.run_dir("/r", {"level": 2, "seed": 1})
    assert design.name != more.name
    with pytest.raises(KtError, match="nosuch"):
        AblationDesign("aptos", Ablation("a", parse_vary(["recipe=paper,nosuch"]), 1), ()).config(
            {"level": 1, "seed": 0})
