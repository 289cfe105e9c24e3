"""kt lr-find and kt train --lr auto: the range test finds a rate known in advance on a toy problem,
and runs on the real loop's pieces."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from click.testing import CliRunner

from kaggle_transfer.cli import main
from kaggle_transfer.training.lr_find import RangeTest, suggest, sweep


def _regression(scale: float, seed: int):
    """Least squares by SGD: the loss's curvature is known, so is the best constant rate. With the
    Hessian's largest eigenvalue L, plain SGD diverges above 2/L and descends fastest near 1/L."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(512, 8, generator=g) * torch.tensor([scale] + [scale / 3] * 7)
    y = x @ torch.randn(8, generator=g) + 0.1 * torch.randn(512, generator=g)
    curvature = float(torch.linalg.eigvalsh(2 * x.T @ x / len(x)).max())
    model = torch.nn.Linear(8, 1, bias=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def step(lr: float) -> float:
        for group in optimizer.param_groups:
            group["lr"] = lr
        rows = torch.randint(0, len(x), (64,), generator=g)
        loss = torch.nn.functional.mse_loss(model(x[rows]).squeeze(1), y[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step, 1 / curvature


@pytest.mark.parametrize("scale", [1.0, 3.0, 30.0])
def test_the_suggestion_is_a_rate_known_in_advance(scale):
    """Across a 900-fold range of curvature the suggestion follows 1/L: below the divergence edge 2/L,
    within a factor 10 of 1/L; the ramp stops once the loss diverges."""
    for seed in (0, 1):
        step, best = _regression(scale, seed)
        curve = sweep(step, RangeTest(steps=300))
        found = suggest(curve)
        assert len(curve) < 300  # it diverged and the test stopped
        assert best / 10 < found["minimum_over_10"] < 2 * best, (found, best)
        assert found["steep"] <= found["minimum"]
        assert np.all(np.diff(curve["lr"]) > 0) and curve["lr"].iloc[0] == pytest.approx(1e-7)


def test_a_ramp_that_diverges_at_once_is_one_line():
    from kaggle_transfer.errors import KtError

    losses = iter([1.0, 1.0, float("nan")])
    with pytest.raises(KtError, match="diverged after 2 steps; lower --start-lr"):
        suggest(sweep(lambda lr: next(losses)))
    with pytest.raises(KtError, match="--start-lr < --end-lr"):
        sweep(lambda lr: 1.0, RangeTest(start=1.0, end=0.1))


TINY = ["--arch", "test_resnet", "--no-pretrained", "--size", "32", "-j", "0", "-b", "16"]


def test_kt_lr_find_writes_the_curve_plot_and_suggestion(aptos_dir, tmp_path):
    result = CliRunner().invoke(main, ["lr-find", "aptos", "--data-dir", str(aptos_dir), *TINY, "--steps", "40",
                                       "--runs-root", str(tmp_path), "--no-progress"])
    assert result.exit_code == 0, result.output
    [out] = (tmp_path / "aptos" / "lr_find").iterdir()
    found = json.loads((out / "lr_find.json").read_text())
    curve = pd.read_csv(out / "lr_find.csv")
    assert 5 <= len(curve) == found["steps_taken"] <= 40
    assert found["chosen"] == found["minimum_over_10"] == pytest.approx(curve["lr"][curve["smoothed"].idxmin()] / 10)
    assert (out / "plots" / "lr_find.png").stat().st_size > 10_000
    assert f"--lr {found['chosen']:.2e}" in result.output
    assert yaml.safe_load((out / "config.yaml").read_text())["arch"] == "test_resnet"
    assert not any((tmp_path / "aptos").glob("*/config.yaml"))  # not a run: kt runs does not list it


@pytest.mark.slow
def test_train_lr_auto_trains_at_the_range_tests_suggestion(aptos_dir, tmp_path):
    result = CliRunner().invoke(main, ["train", "aptos", "--data-dir", str(aptos_dir), *TINY, "--epochs", "1",
                                       "--lr", "auto", "--runs-root", str(tmp_path), "--no-progress"])
    assert result.exit_code == 0, result.output
    [run] = [d for d in (tmp_path / "aptos").iterdir() if (d / "metrics.json").is_file()]
    found = json.loads((run / "lr_find.json").read_text())
    assert yaml.safe_load((run / "config.yaml").read_text())["lr"] == pytest.approx(found["chosen"])
    assert pd.read_csv(run / "history.csv")["lr"].max() <= found["chosen"] * 1.0001
    assert (run / "plots" / "lr_find.png").is_file() and f"lr auto: {found['chosen']:.2e}" in result.output
    bad = CliRunner().invoke(main, ["train", "aptos", "--lr", "fast"])
    assert bad.exit_code == 2 and "'fast' is neither a number nor 'auto'" in bad.output


@pytest.mark.slow
def test_lr_auto_on_a_group_tests_the_split_its_members_train_on(aptos_dir, tmp_path):
    """A --folds group trains on a k-fold split (the paper's split has no folds): the range test runs
    on that split's first fold, with the run's --accum-steps, and every member trains at its rate."""
    result = CliRunner().invoke(main, ["train", "aptos", "--data-dir", str(aptos_dir), *TINY, "--epochs", "1",
                                       "--set", "max_steps=1", "--lr", "auto", "--folds", "1,0", "--set", "folds=2",
                                       "--accum-steps", "2", "--runs-root", str(tmp_path), "--no-progress"])
    assert result.exit_code == 0, result.output
    [group] = [d for d in (tmp_path / "aptos").iterdir() if (d / "group.json").is_file()]
    found = json.loads((group / "lr_find.json").read_text())
    assert (found["split"], found["fold"], found["accum_steps"]) == ("kfold", 0, 2)
    for member in ("fold0", "fold1"):
        assert yaml.safe_load((group / member / "config.yaml").read_text())["lr"] == pytest.approx(found["chosen"])


def test_a_minimum_at_the_end_of_the_ramp_is_a_warning():
    from kaggle_transfer.training.lr_find import warnings

    falling = sweep(lambda lr: 1.0 / (1.0 + lr), RangeTest(steps=60))  # never turns up
    assert len(falling) == 60
    said = warnings(falling, suggest(falling), RangeTest(steps=60))
    assert any("lowest at the end of the ramp" in w and "--end-lr" in w for w in said)
    few = sweep(lambda lr: 1.0 / (1.0 + lr), RangeTest(steps=20))
    assert any("only 20 steps" in w for w in warnings(few, suggest(few), RangeTest(steps=20)))
