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
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(KtError, match="dir.png is a folder, not an image"):
        images.read_image([str(tmp_path / "dir.png")])


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


def test_the_fast_png_decoder_gives_opencvs_pixels_and_falls_back(tmp_path, monkeypatch):
    """8-bit grey, RGB and RGBA PNGs go through imagecodecs; palette and 16-bit PNGs, and every PNG
    when imagecodecs is not installed (the notebook without its wheel), through OpenCV: same pixels."""
    import sys

    import cv2
    from PIL import Image

    from kaggle_transfer.data import images

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    files = {}
    for name, arr, mode in (("rgb", rgb, "RGB"), ("rgba", np.dstack([rgb, rgb[..., :1]]), "RGBA"),
                            ("gray", rgb[..., 0], "L")):
        files[name] = str(tmp_path / f"{name}.png")
        Image.fromarray(arr, mode).save(files[name])
    files["palette"] = str(tmp_path / "palette.png")
    Image.fromarray(rgb).convert("P").save(files["palette"])
    files["16bit"] = str(tmp_path / "16bit.png")
    cv2.imwrite(files["16bit"], (rgb.astype(np.uint16) * 257)[..., ::-1])

    def opencv(path, gray=False):
        img = cv2.imread(path, cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR)
        return img if gray else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

    assert images._fast_png(files["rgb"], gray=False) is not None  # the fast path is taken
    assert images._fast_png(files["palette"], gray=False) is None
    assert images._fast_png(files["16bit"], gray=False) is None
    for name in ("rgb", "rgba", "palette", "16bit"):
        assert np.array_equal(images.read_image([files[name]]), opencv(files[name])), name
    planes = images.read_image([files["gray"], files["gray"]])
    assert np.array_equal(planes[..., 0], opencv(files["gray"], gray=True))
    assert images.png_decoder().startswith("imagecodecs ")
    monkeypatch.setitem(sys.modules, "imagecodecs", None)  # not installed
    images._imagecodecs.cache_clear()
    assert images._fast_png(files["rgb"], gray=False) is None
    assert images.png_decoder().startswith("OpenCV ")
    assert np.array_equal(images.read_image([files["rgba"]]), opencv(files["rgba"]))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    monkeypatch.delitem(sys.modules, "imagecodecs")
    images._imagecodecs.cache_clear()
    with pytest.raises(KtError, match="bad.png is corrupt"):
        images.read_image([str(tmp_path / "bad.png")])


def test_every_jpeg_path_applies_the_exif_orientation(tmp_path):
    """The reduced decode (PIL draft: training, kt prepare, prediction) and OpenCV's (every other path)
    must agree on which way is up: a photo saved with EXIF orientation 6 comes out turned in both."""
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = cv2.resize(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8), (800, 600), interpolation=cv2.INTER_CUBIC)
    im = Image.fromarray(pixels)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "turned.jpg"
    im.save(path, exif=exif.tobytes(), quality=95)
    upright = np.rot90(pixels, k=-1)  # what a viewer shows: 600 wide, 800 high
    full = images.read_image([str(path)])
    reduced = images.read_image([str(path)], reduce_to=100)  # decoded at 1/4 scale, then turned
    assert full.shape == upright.shape and reduced.shape == (200, 150, 3)
    assert np.abs(full.astype(int) - upright).mean() < 3
    small = cv2.resize(upright, (150, 200), interpolation=cv2.INTER_AREA)
    assert np.abs(reduced.astype(int) - small).mean() < 3


def test_a_png_decodes_the_same_way_up_with_or_without_imagecodecs(tmp_path, monkeypatch):
    """imagecodecs (the fast path) leaves a PNG's eXIf orientation alone; OpenCV, which decodes PNGs
    where imagecodecs is missing, must too, or one notebook's pixels differ from another's."""
    import sys

    from PIL import Image

    pixels = np.random.default_rng(1).integers(0, 255, (30, 50, 3), dtype=np.uint8)
    im = Image.fromarray(pixels)
    exif = im.getexif()
    exif[0x0112] = 6
    path = tmp_path / "tagged.png"
    im.save(path, exif=exif.tobytes())
    fast = images.read_image([str(path)])
    monkeypatch.setitem(sys.modules, "imagecodecs", None)  # not installed
    images._imagecodecs.cache_clear()
    try:
        slow = images.read_image([str(path)])
    finally:
        monkeypatch.delitem(sys.modules, "imagecodecs")
        images._imagecodecs.cache_clear()
    assert fast.shape == slow.shape == (30, 50, 3) and np.array_equal(fast, slow) and np.array_equal(fast, pixels)
