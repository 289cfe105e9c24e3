"""--protocol paper against the study's released code: torchvision's eval transform, torch's
schedulers, decay on every parameter, B, G, R input, ImageNet statistics; and a run that keeps them
from training through ONNX to prediction."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from kaggle_transfer import competitions, config, protocol
from kaggle_transfer.competitions import synthetic
from kaggle_transfer.data import images
from kaggle_transfer.errors import KtError

from .conftest import tiny_config


@pytest.mark.parametrize("shape", [(90, 60), (60, 90), (40, 30), (64, 64), (257, 300)])
def test_center_crop_is_torchvisions_resize_then_center_crop(shape):
    """Same geometry as torchvision's Resize(size) + CenterCrop(size) on a PIL image (the study's eval
    transform); pixels agree up to the interpolation (OpenCV area/linear vs PIL's antialiased bilinear)."""
    from PIL import Image
    from torchvision import transforms

    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (h + w)], -1).astype(np.uint8)
    size = 48
    ours = images.center_crop(img, size)
    theirs = np.asarray(transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size)])(
        Image.fromarray(img)))
    assert ours.shape == theirs.shape == (size, size, 3)
    assert np.abs(ours.astype(int) - theirs.astype(int)).mean() < 3
    if h != w:  # a squash would differ: the crop keeps the aspect
        assert np.abs(images.resize(img, size).astype(int) - theirs.astype(int)).mean() > 3


def _lrs(cfg, per_epoch: bool, epochs: int = 30) -> list[float]:
    from kaggle_transfer.training.builders import build_scheduler

    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = build_scheduler(cfg, opt, steps_per_epoch=7, per_epoch=per_epoch)
    out = []
    for epoch in range(epochs):
        for step in range(7):
            if step == 0:
                out.append(opt.param_groups[0]["lr"])
            sched.step_update(epoch * 7 + step + 1)
        sched.step(epoch + 1)
    return out


def _torch_lrs(kind: str, lr: float, epochs: int = 30) -> list[float]:
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs) if kind == "cosine"
             else torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[15, 20, 25], gamma=0.1))
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("schedule", ["cosine", "step"])
def test_paper_schedule_is_torchs_per_epoch_schedule(schedule):
    """sample_train.py: CosineAnnealingLR(T_max=epochs) or MultiStepLR([15, 20, 25]), stepped per epoch."""
    cfg = config.resolve(flags={"schedule": schedule, "lr": 1e-3, "epochs": 30, "warmup_epochs": 2})
    assert _lrs(cfg, per_epoch=True) == pytest.approx(_torch_lrs(schedule, 1e-3), rel=1e-9, abs=1e-15)
    if schedule == "cosine":  # kt's own: per step, warm-up, a floor; not the paper's
        assert _lrs(cfg, per_epoch=False) != pytest.approx(_torch_lrs(schedule, 1e-3))


def test_paper_decays_every_parameter():
    from kaggle_transfer.training.builders import build_optimizer
    from kaggle_transfer.training.models import build_model

    model = build_model("test_resnet", 3)
    cfg = config.resolve(flags={"weight_decay": 0.01})
    kt = build_optimizer(model, cfg)
    paper = build_optimizer(model, cfg, decay_all=True)
    assert {g["weight_decay"] for g in kt.param_groups} == {0.0, 0.01}  # biases and norms exempt
    assert [g["weight_decay"] for g in paper.param_groups] == [0.01]
    assert sum(p.numel() for g in paper.param_groups for p in g["params"]) == sum(
        p.numel() for p in model.parameters())


def test_bgr_network_equals_the_plain_one_on_reversed_channels():
    from kaggle_transfer.training.models import build_model

    torch.manual_seed(0)
    plain = build_model("test_resnet", 3, proto=protocol.Protocol("paper", imagenet_stats=True)).eval()
    bgr = build_model("test_resnet", 3, proto=protocol.Protocol("paper", bgr=True, imagenet_stats=True)).eval()
    bgr.load_state_dict(plain.state_dict())
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert torch.allclose(bgr(x), plain(x.flip(1)), atol=1e-5)
    assert not torch.allclose(bgr(x), plain(x), atol=1e-3)
    # timm's test_resnet declares mean 0.5; the study normalised every model with ImageNet's statistics
    assert plain.mean.flatten().tolist() == pytest.approx([v * 255 for v in protocol.IMAGENET_MEAN])
    assert build_model("test_resnet", 3).mean.flatten().tolist() == pytest.approx([127.5] * 3)


def test_recipes_follow_the_released_loaders():
    """Transcribed from datasets/*.py: which loaders keep cv2's BGR, which flips, HPA's dropped yellow."""
    table = {name: (c.paper.bgr, c.paper.flips, c.paper.channels, c.paper.size, c.paper.loss)
             for name, c in ((n, competitions.get(n)) for n in ("aptos", "cct20", "hpa", "siim_isic", "cassava",
                                                                  "eurosat"))}
    assert table == {"aptos": (True, "h", None, 256, "ce"), "cct20": (True, "h", None, 256, None),
                     "hpa": (True, "hv", "rgb", 256, None), "siim_isic": (True, "hv", None, 256, "ce"),
                     "cassava": (False, "hv", None, 256, None), "eurosat": (False, "", None, 224, None)}


def test_train_flips_per_dataset():
    from kaggle_transfer.training.augment import build_train_transform

    def names(flips):
        return [type(t).__name__ for t in build_train_transform("paper", 32, flips=flips).transforms]

    assert names("") == ["RandomResizedCrop"]
    assert names("h") == ["RandomResizedCrop", "HorizontalFlip"]
    assert names("hv") == ["RandomResizedCrop", "HorizontalFlip", "VerticalFlip"]


def test_hpa_paper_protocol_takes_rgb_and_refuses_four_channels():
    hpa = competitions.get("hpa")
    cfg = config.resolve(flags={"competition": "hpa", "protocol": "paper"})
    assert protocol.channels(cfg, hpa) == "rgb" and protocol.for_run(cfg, hpa).bgr
    assert protocol.channels(config.resolve(flags={"competition": "hpa"}), hpa) is None  # kt: all four
    with pytest.raises(KtError, match="channels=rgb"):
        protocol.for_run(config.resolve(flags={"competition": "hpa", "protocol": "paper"},
                                        sets=["channels=rgby"]), hpa)


def _widen(data_dir, pad: int = 24) -> None:
    """Make every image non-square, so center_crop and squash differ."""
    for path in (data_dir / "train_images").glob("*.png"):
        img = cv2.imread(str(path))
        noise = np.random.default_rng(0).integers(0, 255, (img.shape[0], pad, 3), dtype=np.uint8)
        cv2.imwrite(str(path), np.concatenate([noise, img, noise], axis=1))


def test_paper_run_keeps_its_protocol_through_onnx(tmp_path):
    """Trained with --protocol paper, the ONNX file records center_crop + BGR and prediction reproduces
    the run's own validation outputs (what the torch evaluation saw) from the image files."""
    from kaggle_transfer import runs
    from kaggle_transfer.inference.predict import RunOptions, predict_models
    from kaggle_transfer.inference.session import load_model
    from kaggle_transfer.training.export import export
    from kaggle_transfer.training.loop import fit

    data = synthetic.make("aptos", tmp_path / "data", n_train=60, n_test=4, image_size=40)
    _widen(data)
    run = tmp_path / "run"
    fit(tiny_config(protocol="paper", epochs=1, cache=False), run, data, progress=False)
    assert runs.load_config(run).protocol == "paper"
    assert runs.read_run_info(run)["preprocess"]["resize"] == "center_crop"
    model = load_model(export(run)["path"])
    assert model.meta["preprocess"] == {"protocol": "paper", "resize": "center_crop", "bgr": True,
                                        "mean": list(protocol.IMAGENET_MEAN), "std": list(protocol.IMAGENET_STD)}
    oof = runs.load_oof(run)
    train = pd.read_csv(data / "train.csv", dtype=str).set_index("id_code")
    paths = [(str(data / "train_images" / f"{i}.png"),) for i in oof["ids"]]
    assert set(oof["ids"]) <= set(train.index)
    raw = predict_models([model], paths, RunOptions(batch_size=8, threads=1, progress=False))[0]
    assert np.allclose(raw.reshape(oof["raw"].shape), oof["raw"], atol=1e-3)


def test_paper_protocol_trains_in_fp32_unless_amp_is_named():
    assert protocol.amp(config.resolve(sets=["protocol=paper"])) == "off"
    assert protocol.amp(config.resolve(sets=["protocol=paper", "amp=bf16"])) == "bf16"
    assert protocol.amp(config.resolve()) == "auto"


@pytest.mark.parametrize("rows, batch, paper, kt", [(70, 16, 5, 4), (65, 16, 4, 4), (64, 16, 4, 4),
                                                    (10, 16, 1, 1)])
def test_paper_protocol_keeps_the_last_partial_batch(rows, batch, paper, kt):
    """The released DataLoader(trainset, batch_size=128, shuffle=True) keeps its last batch (drop_last
    defaults to False); one row alone is still dropped, which batch norm cannot train on."""
    from kaggle_transfer.training.dataset import make_loader

    class Rows(torch.utils.data.Dataset):  # the training sampler hands (epoch, row) keys
        def __len__(self):
            return rows

        def __getitem__(self, key):
            return 0

    data = Rows()
    assert protocol.for_run(config.resolve(sets=["protocol=paper"]), competitions.get("aptos")).keeps_last_batch
    for keep, want in ((True, paper), (False, kt)):
        loader = make_loader(data, batch, 0, True, generator=torch.Generator().manual_seed(0), pin=False,
                             keep_last=keep)
        assert len(list(loader)) == want


def test_paper_protocol_crops_as_from_the_originals(tmp_path):
    """RandomResizedCrop(256, scale=(0.65, 1)) at torchvision's extreme ratio 3/4 takes a crop whose short
    side is sqrt(0.65 * 3/4) of the image's: a 256-px cache would be upsampled; 367 px is the least."""
    from kaggle_transfer.data.cache import prepare, use_cache

    assert protocol.cache_side(config.resolve(sets=["protocol=paper", "size=256"])) == 367
    assert protocol.cache_side(config.resolve(sets=["size=256"])) == 256
    data = synthetic.make("aptos", tmp_path / "data", n_train=12, n_test=2, image_size=64)
    table = competitions.get("aptos").read(data, "train")
    root = tmp_path / "cache"
    prepare([table], root, "aptos", 40, crop=False, progress=False)
    side = protocol.cache_side(config.resolve(sets=["protocol=paper", "size=32"]))
    assert side == 46 and not use_cache(table, root, "aptos", side, crop=False)["cached"].any()
    assert use_cache(table, root, "aptos", 32, crop=False)["cached"].all()  # kt's own protocol uses it
    prepare([table], root, "aptos", 48, crop=False, progress=False)
    assert use_cache(table, root, "aptos", side, crop=False)["cached"].all()
