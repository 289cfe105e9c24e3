"""The winners' second half, as far as built: MixUp/CutMix with targets mixed per task kind, and warm starts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kaggle_transfer.errors import KtError
from kaggle_transfer.tasks import Task
from kaggle_transfer.training.builders import build_mixer
from kaggle_transfer.training.loop import fit

from .conftest import tiny_config


def _batch(kind: str):
    x = torch.stack([torch.full((3, 8, 8), v, dtype=torch.uint8) for v in (10, 60, 110, 160)])
    y = {"multiclass": torch.tensor([0, 1, 2, 3]), "ordinal": torch.tensor([0.0, 1.0, 3.0, 4.0]),
         "binary": torch.tensor([0.0, 1.0, 1.0, 0.0]),
         "multilabel": torch.tensor([[1, 0, 0], [0, 1, 1], [0, 0, 1], [1, 1, 0]], dtype=torch.float32)}[kind]
    return x, y


@pytest.mark.parametrize("kind, classes", [("multiclass", 5), ("ordinal", 5), ("binary", 2), ("multilabel", 3)])
def test_mixup_mixes_targets_as_the_task_reads_them(kind, classes):
    np.random.seed(0)
    loss = "ce" if kind == "multiclass" else "bce"
    mix = build_mixer("mixup", prob=1.0, alpha=1.0, task=Task(kind, classes, "accuracy"), loss=loss)
    x, y = _batch(kind)
    mixed_x, mixed_y = mix(x.clone(), y.clone())
    # images: lam * x + (1 - lam) * flipped batch; recover lam from the constant images
    lam = float((mixed_x[0, 0, 0, 0] - x[3, 0, 0, 0].float()) / (x[0, 0, 0, 0].float() - x[3, 0, 0, 0].float()))
    assert 0 < lam < 1 and mixed_x.dtype == torch.float32
    if kind == "multiclass":  # soft class probabilities: lam on its class, 1 - lam on its partner's
        onehot = torch.nn.functional.one_hot(y, classes).float()
        assert torch.allclose(mixed_y, lam * onehot + (1 - lam) * onehot.flip(0), atol=1e-5)
        assert torch.allclose(mixed_y.sum(1), torch.ones(4))
    else:  # grades, 0/1 targets, label sets: the same convex mix
        assert torch.allclose(mixed_y, lam * y.float() + (1 - lam) * y.float().flip(0), atol=1e-5)
        assert ((mixed_y >= 0) & (mixed_y <= max(1.0, float(y.max())))).all()


def test_mix_settings_are_checked():
    with pytest.raises(KtError, match="batch_size must be even"):
        tiny_config(mix="cutmix", batch_size=15)
    with pytest.raises(KtError, match="use ce with mix"):
        build_mixer("cutmix", prob=1.0, alpha=1.0, task=Task("multiclass", 5, "accuracy"), loss="focal")
    assert build_mixer("none", prob=1.0, alpha=1.0, task=Task("multiclass", 5, "accuracy"), loss="ce") is None


def test_cutmix_trains_and_switches_off_for_the_last_epochs(aptos_dir, tmp_path, monkeypatch):
    from kaggle_transfer.training import builders

    calls = []
    real = builders.build_mixer

    def counting(*args, **kwargs):
        mix = real(*args, **kwargs)
        return lambda x, y: calls.append(len(x)) or mix(x, y)

    monkeypatch.setattr("kaggle_transfer.training.loop.build_mixer", counting)
    result = fit(tiny_config(epochs=2, mix="both", mix_off_epochs=1, max_steps=2), tmp_path, aptos_dir,
                 progress=False)
    assert result["epochs_run"] == 2 and np.isfinite(result["score"])
    assert len(calls) == 2  # epoch 1's two steps mixed, epoch 2 (the last, mix_off_epochs=1) clean


def test_a_warm_start_begins_from_the_other_runs_weights(trained_run, aptos_dir, tmp_path):
    fit(tiny_config(epochs=1, max_steps=1, lr=1e-12, init=str(trained_run)), tmp_path / "warm", aptos_dir,
        progress=False)
    before = torch.load(trained_run / "best.pt", weights_only=True)
    after = torch.load(tmp_path / "warm" / "best.pt", weights_only=True)
    assert torch.allclose(before["head.weight"], after["head.weight"], atol=1e-6)  # lr ~ 0: the same weights
    info = json.loads((tmp_path / "warm" / "run.json").read_text())
    assert info["init"]["path"] == str((trained_run / "best.pt").resolve()) and len(info["init"]["sha256"]) == 64
    with pytest.raises(KtError, match="needs the same --arch"):
        fit(tiny_config(epochs=1, max_steps=1, arch="test_efficientnet", init=str(trained_run)), tmp_path / "x",
            aptos_dir, progress=False)


# --- weight averaging: SWA and kt average -------------------------------------------------------

def test_mean_state_is_the_mean_of_the_inputs():
    from kaggle_transfer.training.averaging import mean_state

    states = [{"w": torch.full((2, 2), float(v)), "bn.num_batches_tracked": torch.tensor(v)} for v in (1, 2, 6)]
    mean = mean_state(states)
    assert torch.equal(mean["w"], torch.full((2, 2), 3.0)) and mean["bn.num_batches_tracked"].item() == 1
    with pytest.raises(KtError, match="checkpoint 2 has other tensors"):
        mean_state([states[0], {"v": torch.zeros(1)}])


def test_swa_averages_the_last_epochs_and_recomputes_batchnorm():
    from kaggle_transfer.training.averaging import Swa

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), torch.nn.BatchNorm2d(3))
    swa = Swa(model, epochs=3, swa_epochs=2)
    weights = []
    for epoch in range(3):
        with torch.no_grad():
            model[0].weight.fill_(epoch + 1.0)
        weights.append(model[0].weight.clone())
        swa.update(model, epoch)
    assert swa.epochs_averaged == 2  # epoch 0 is before the window
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.rand(4, 3, 5, 5, generator=gen) * 3 + 1, torch.zeros(4), torch.arange(4)) for _ in range(3)]
    net = swa.finish(batches, torch.device("cpu"), steps=3)
    assert torch.allclose(net[0].weight, (weights[1] + weights[2]) / 2)
    with torch.no_grad():  # BatchNorm's running mean: the mean of the averaged conv's outputs over the batches
        features = torch.cat([net[0](x) for x, _, _ in batches])
    assert torch.allclose(net[1].running_mean, features.mean((0, 2, 3)), atol=1e-5)


def test_swa_in_a_run_is_kept_when_it_validates_higher(aptos_dir, tmp_path):
    result = fit(tiny_config(epochs=3, swa_epochs=2, max_steps=3), tmp_path, aptos_dir, progress=False)
    swa = result["swa"]
    assert swa["epochs_averaged"] == 2 and (tmp_path / "swa.pt").is_file()
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    averaged = torch.load(tmp_path / "swa.pt", weights_only=True)
    same = all(torch.equal(best[k], averaged[k]) for k in best)
    assert same == swa["selected"] == (result["weights"] == "swa")
    history = json.loads((tmp_path / "metrics.json").read_text())
    assert history["score"] == pytest.approx(max(swa["score"], max(
        float(s) for s in __import__("pandas").read_csv(tmp_path / "history.csv")["score"])))
    with pytest.raises(KtError, match="swa_epochs=4 averages more epochs"):
        tiny_config(epochs=3, swa_epochs=4)


@pytest.mark.slow
def test_kt_average_makes_a_validated_exportable_run(aptos_dir, tmp_path):
    from click.testing import CliRunner

    from kaggle_transfer import runs
    from kaggle_transfer.cli import main
    from kaggle_transfer.training.export import export

    members = []
    for seed in (1, 2):
        fit(tiny_config(epochs=1, max_steps=3, seed=seed), tmp_path / f"s{seed}", aptos_dir, progress=False)
        members.append(tmp_path / f"s{seed}")
    result = CliRunner().invoke(main, ["average", *map(str, members), "--runs-root", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    out = next((tmp_path / "runs" / "aptos").iterdir())
    states = [torch.load(m / "best.pt", weights_only=True) for m in members]
    averaged = torch.load(out / "best.pt", weights_only=True)
    assert torch.allclose(averaged["head.weight"], (states[0]["head.weight"] + states[1]["head.weight"]) / 2)
    metrics, oof = runs.read_metrics(out), runs.load_oof(out)
    comp_task = Task("ordinal", 5, "qwk")
    assert metrics["score"] == pytest.approx(comp_task.score(oof["targets"], oof["raw"], oof["fitted"]))
    assert set(oof["ids"]) == set(runs.load_oof(members[0])["ids"])  # the members' validation fold
    info = json.loads((out / "run.json").read_text())
    assert [s["run"] for s in info["averaged_from"]] == [str(m.resolve()) for m in members]
    assert export(out)["max_abs_diff"] < 1e-4

    fit(tiny_config(epochs=1, max_steps=1, size=48), tmp_path / "big", aptos_dir, progress=False)
    refused = CliRunner().invoke(main, ["average", str(members[0]), str(tmp_path / "big"),
                                        "--runs-root", str(tmp_path / "runs")])
    assert refused.exit_code != 0 and "has size=48" in refused.output
    assert len(list((tmp_path / "runs" / "aptos").iterdir())) == 1  # nothing half-made left behind


def test_progressive_resizing_through_the_cli(trained_run, aptos_dir, tmp_path):
    from click.testing import CliRunner

    from kaggle_transfer.cli import main

    result = CliRunner().invoke(main, ["train", "aptos", "--data-dir", str(aptos_dir), "--arch", "test_resnet",
                                       "--no-pretrained", "--size", "48", "--pool", "gem", "--epochs", "1",
                                       "--workers", "0", "--init", str(trained_run), "--runs-root", str(tmp_path),
                                       "--no-progress", "--set", "max_steps=1", "--set", "batch_size=16"])
    assert result.exit_code == 0, result.output
    run = next((tmp_path / "aptos").iterdir())
    info = json.loads((run / "run.json").read_text())
    assert info["init"]["path"] == str((trained_run / "best.pt").resolve())  # 32 px weights, now trained at 48 px


def test_swa_lr_holds_the_rate_in_the_averaging_window(aptos_dir, tmp_path):
    import pandas as pd

    fit(tiny_config(epochs=3, swa_epochs=2, swa_lr=5e-4, max_steps=2), tmp_path, aptos_dir, progress=False)
    lrs = pd.read_csv(tmp_path / "history.csv")["lr"].tolist()
    assert lrs[1:] == pytest.approx([5e-4, 5e-4]) and lrs[0] != pytest.approx(5e-4)  # cosine first, then held
    with pytest.raises(KtError, match="set swa_epochs=K too"):
        tiny_config(swa_lr=1e-3)


def test_swa_keep_always_makes_the_average_the_run_s_weights(aptos_dir, tmp_path):
    result = fit(tiny_config(epochs=2, swa_epochs=2, swa_keep="always", max_steps=2), tmp_path, aptos_dir,
                 progress=False)
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    averaged = torch.load(tmp_path / "swa.pt", weights_only=True)
    assert all(torch.equal(best[k], averaged[k]) for k in best)
    assert result["weights"] == "swa" and result["score"] == pytest.approx(result["swa"]["score"])
