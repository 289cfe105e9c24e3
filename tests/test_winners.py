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
