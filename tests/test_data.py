"""Decoding, resizing, augmentation presets and the Dataset."""

import cv2
import numpy as np
import pytest

from kaggle_transfer.data import images
from kaggle_transfer.errors import KtError
from kaggle_transfer.training.augment import build_train_transform


def test_read_image_returns_rgb(tmp_path):
    bgr = np.zeros((8, 10, 3), np.uint8)
    bgr[..., 2] = 200  # red in OpenCV's BGR order
    cv2.imwrite(str(tmp_path / "red.png"), bgr)
    rgb = images.read_image([str(tmp_path / "red.png")])
    assert rgb.shape == (8, 10, 3) and rgb[..., 0].min() == 200 and rgb[..., 2].max() == 0


def test_channel_files_are_stacked_in_order(tmp_path):
    paths = []
    for k, name in enumerate(["red", "green", "blue", "yellow"]):
        cv2.imwrite(str(tmp_path / f"x_{name}.png"), np.full((6, 6), 10 * (k + 1), np.uint8))
        paths.append(str(tmp_path / f"x_{name}.png"))
    img = images.read_image(paths)
    assert img.shape == (6, 6, 4) and img[0, 0].tolist() == [10, 20, 30, 40]


def test_corrupt_and_missing_images_are_named(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(KtError, match="bad.png is corrupt"):
        images.read_image([str(bad)])
    with pytest.raises(KtError, match="nope.png is missing; replace it or pass --skip-bad-images"):
        images.read_image([str(tmp_path / "nope.png")])


def test_resize_and_layout():
    img = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    small = images.resize(img, 32)
    assert small.shape == (32, 32, 3) and small.dtype == np.uint8
    assert images.to_chw(small).shape == (3, 32, 32)
    assert images.resize(img[..., :1], 16).shape == (16, 16, 1)


@pytest.mark.parametrize("preset", ["paper", "heavy", "randaugment", "augmix"])
def test_augment_presets_make_the_input_size_and_vary(preset):
    img = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    t = build_train_transform(preset, 32)
    outs = [t(image=img)["image"] for _ in range(6)]
    assert all(o.shape == (32, 32, 3) and o.dtype == np.uint8 for o in outs)
    assert len({o.tobytes() for o in outs}) > 1


def test_heavy_changes_colour_and_paper_does_not():
    img = np.full((40, 40, 3), (120, 80, 40), np.uint8)
    paper = build_train_transform("paper", 32)(image=img)["image"]
    assert np.array_equal(np.unique(paper.reshape(-1, 3), axis=0), [[120, 80, 40]])
    heavy_means = [build_train_transform("heavy", 32)(image=img)["image"].mean() for _ in range(8)]
    assert np.std(heavy_means) > 1.0


def test_heavy_on_four_channels_and_unknown_preset():
    img = np.random.default_rng(0).integers(0, 255, (40, 40, 4), dtype=np.uint8)
    assert build_train_transform("heavy", 32, channels=4)(image=img)["image"].shape == (32, 32, 4)
    assert build_train_transform("none", 32) is None
    with pytest.raises(KtError, match="valid: none, paper, heavy"):
        build_train_transform("crazy", 32)


def test_dataset_yields_uint8_chw(aptos_dir):
    from kaggle_transfer.competitions import APTOS
    from kaggle_transfer.training.dataset import ImageDataset

    table = APTOS.read_train(aptos_dir)
    x, y, i = ImageDataset(table, 32, targets=table["target"].to_numpy())[3]
    assert x.shape == (3, 32, 32) and str(x.dtype) == "torch.uint8" and i == 3 and int(y) == table["target"][3]
