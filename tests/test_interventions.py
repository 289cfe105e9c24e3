"""Each intervention flag changes what it should: the built model, loss, optimizer, transform or loop."""

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from kaggle_transfer.cli import main
from kaggle_transfer.competitions import synthetic
from kaggle_transfer.errors import KtError
from kaggle_transfer.tasks import Task
from kaggle_transfer.training import builders
from kaggle_transfer.training import loop as train
from kaggle_transfer.training.augment import build_train_transform
from kaggle_transfer.training.models import build_model

from .conftest import tiny_config


def test_label_smoothing_reaches_the_loss():
    ce = builders.build_loss("ce", Task("multiclass", 5, "accuracy"), 0.1)
    assert ce.label_smoothing == pytest.approx(0.1)
    bce = builders.build_loss("bce", Task("binary", 2, "roc_auc"), 0.2)
    logits, y = torch.tensor([3.0]), torch.tensor([1.0])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor([0.9]))
    assert bce(logits, y) == pytest.approx(expected.item())
    with pytest.raises(KtError, match="not to ordinal regression"):
        builders.build_loss("l1", Task("ordinal", 5, "qwk"), 0.1)


@pytest.mark.parametrize("preset", ["randaugment", "augmix"])
def test_timm_policies_augment(preset):
    """Size and variation are checked with every preset in test_data; here: timm's policy is the last step."""
    t = build_train_transform(preset, 32)
    names = [type(x).__name__ for x in t.transforms]
    assert names[-1] == "TimmPolicy" and t.transforms[-1].policy == preset
    with pytest.raises(KtError, match="defined for RGB"):
        build_train_transform(preset, 32, channels=4)


def test_layer_decay_scales_earlier_layers_down():
    model = build_model("test_resnet", 1)
    cfg = tiny_config(layer_decay=0.5)
    opt = builders.build_optimizer(model, cfg)
    scales = [g["lr_scale"] for g in opt.param_groups]
    assert min(scales) < 0.2 and max(scales) == 1.0
    head = next(g for g in opt.param_groups if any(p is model.head.weight for p in g["params"]))
    assert head["lr_scale"] == 1.0 and head["lr"] == pytest.approx(cfg.lr)
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for p in model.parameters()}
    assert len(builders.build_optimizer(model, tiny_config()).param_groups) <= 2  # off: timm's decay/no-decay


def test_gradient_accumulation_steps_less_often(aptos_dir, tmp_path):
    train.fit(tiny_config(epochs=1, accum_steps=2, max_steps=6, batch_size=8), tmp_path, aptos_dir, progress=False)
    state = torch.load(tmp_path / "last.pt", weights_only=True)["state"]
    assert state["updates"] == 3


def test_freeze_epochs_keep_the_backbone_and_lp_ft_releases_it(aptos_dir, tmp_path):
    start = build_model("test_resnet", 1)
    torch.save(start.backbone.state_dict(), tmp_path / "w.pt")
    frozen = tiny_config(epochs=1, freeze_epochs=1, weights=str(tmp_path / "w.pt"))
    train.fit(frozen, tmp_path / "frozen", aptos_dir, progress=False)
    best = torch.load(tmp_path / "frozen" / "best.pt", weights_only=True)
    for k, v in start.backbone.state_dict().items():
        assert torch.equal(best[f"backbone.{k}"], v), k  # weights and BatchNorm statistics untouched
    lp_ft = tiny_config(epochs=2, lp_ft=True, weights=str(tmp_path / "w.pt"))
    assert builders.frozen_epochs(lp_ft) == 1
    train.fit(lp_ft, tmp_path / "lpft", aptos_dir, progress=False)
    last = torch.load(tmp_path / "lpft" / "last.pt", weights_only=True)
    assert [h["frozen"] for h in last["state"]["history"]] == [True, False]
    changed = [k for k, v in start.backbone.state_dict().items()
               if v.is_floating_point() and not torch.equal(last["model"][f"backbone.{k}"], v)]
    assert changed


def test_external_rows_train_but_never_validate(aptos_dir, tmp_path):
    dr = synthetic.make("dr2015", tmp_path / "dr", n=30, image_size=48)
    result = train.fit(tiny_config(epochs=1, external=["dr2015"]), tmp_path / "run", aptos_dir,
                       external_dirs={"dr2015": str(dr)}, progress=False)
    n_val = sum(int(0.2 * n) for n in pd.read_csv(aptos_dir / "train.csv")["diagnosis"].value_counts())
    assert result["n_external"] == 30 and result["n_train"] == 120 - n_val + 30 and result["n_val"] == n_val
    ids = np.load(tmp_path / "run" / "oof.npz")["ids"]
    assert not any(i.startswith("dr2015:") for i in ids)
    with pytest.raises(KtError, match="needs --external-dir dr2015=DIR"):
        train.fit(tiny_config(external=["dr2015"]), tmp_path / "x", aptos_dir, progress=False)


def test_size_reaches_the_loader_and_the_export(aptos_dir, tmp_path):
    from kaggle_transfer.training.export import export

    train.fit(tiny_config(epochs=1, size=40, max_steps=1), tmp_path, aptos_dir, progress=False)
    meta = export(tmp_path)["metadata"]
    assert meta["size"] == 40 and meta["recipe"]["size"] == 40


def test_intervention_flags_reach_the_config(aptos_dir, tmp_path):
    out = CliRunner().invoke(main, [
        "train", "aptos", "--data-dir", str(aptos_dir), "--arch", "test_resnet", "--no-pretrained", "--size", "32",
        "--epochs", "1", "--workers", "0", "--runs-root", str(tmp_path), "--no-progress", "--lp-ft", "--ema",
        "--layer-decay", "0.8", "--accum-steps", "2", "--augment", "randaugment", "--tta", "d4",
        "--set", "max_steps=2"])
    assert out.exit_code == 0, out.output
    cfg = next((tmp_path / "aptos").iterdir()).joinpath("config.yaml").read_text()
    for line in ("lp_ft: true", "ema: true", "layer_decay: 0.8", "accum_steps: 2", "augment: randaugment",
                 "tta: d4"):
        assert line in cfg, line


@pytest.mark.slow
@pytest.mark.parametrize("channels_last", [True, False])
def test_channels_last_reaches_the_convolutions_and_keeps_the_outputs(aptos_dir, tmp_path, monkeypatch,
                                                                      channels_last):
    seen = []
    original = train.build_model

    def recording_model(*args, **kwargs):
        model = original(*args, **kwargs)
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        conv.register_forward_pre_hook(lambda module, inputs: seen.append(
            (inputs[0].is_contiguous(memory_format=torch.channels_last),
             module.weight.is_contiguous(memory_format=torch.channels_last))))
        return model

    monkeypatch.setattr(train, "build_model", recording_model)
    cfg = tiny_config(epochs=1, channels_last=channels_last)
    train.fit(cfg, tmp_path / "run", aptos_dir, progress=False)
    assert seen and set(seen) == {(channels_last, channels_last)}
    oof = np.load(tmp_path / "run" / "oof.npz")["raw"]
    if channels_last:  # the same run in the default layout: same numbers up to float reassociation
        monkeypatch.setattr(train, "build_model", original)
        train.fit(tiny_config(epochs=1, channels_last=False), tmp_path / "plain", aptos_dir, progress=False)
        np.testing.assert_allclose(oof, np.load(tmp_path / "plain" / "oof.npz")["raw"], atol=1e-3)


@pytest.mark.slow
def test_compile_trains_like_eager_and_exports(aptos_dir, tmp_path, monkeypatch):
    """--compile: the run trains through torch.compile with the same outputs as eager up to kernel
    reassociation, and the checkpoint keeps plain module keys, so export still loads it.

    torch.compile traces the forward and backward graphs with its AOTAutograd backend here: the
    graphs kt hands over are the ones inductor would compile, without inductor's C++ code generation,
    which takes 47-55 s of one core of the 2-core CI machine for this tiny network and is torch's
    own to test."""
    import torch

    from kaggle_transfer.training.export import export

    compiled_with = []
    real_compile = torch.compile

    def compile_traced(model, **kwargs):
        compiled_with.append(type(model).__name__)
        return real_compile(model, backend="aot_eager", **kwargs)

    monkeypatch.setattr(torch, "compile", compile_traced)
    train.fit(tiny_config(epochs=1, compile=True), tmp_path / "compiled", aptos_dir, progress=False)
    assert compiled_with, "--compile did not reach torch.compile"
    monkeypatch.setattr(torch, "compile", real_compile)
    train.fit(tiny_config(epochs=1), tmp_path / "eager", aptos_dir, progress=False)
    compiled, eager = (np.load(tmp_path / name / "oof.npz")["raw"] for name in ("compiled", "eager"))
    np.testing.assert_allclose(compiled, eager, atol=1e-2)
    assert export(tmp_path / "compiled")["max_abs_diff"] <= 1e-4
