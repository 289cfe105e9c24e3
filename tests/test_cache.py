"""kt prepare's cache: used when present, invalidated when a source changes, same pixels as no cache."""

import hashlib
import os
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from kaggle_transfer.competitions import APTOS, HPA, synthetic
from kaggle_transfer.data import images
from kaggle_transfer.data.cache import load_manifest, prepare, use_cache
from kaggle_transfer.training.dataset import ImageDataset


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture
def big_aptos(tmp_path):
    return synthetic.make("aptos", tmp_path / "aptos", n_train=24, n_test=6, image_size=160)


def test_prepare_is_idempotent_resumable_and_leaves_sources_alone(big_aptos, tmp_path):
    before = _digest(big_aptos)
    tables = [APTOS.read_train(big_aptos), APTOS.read_test(big_aptos)]
    first = prepare(tables, tmp_path / "cache", "aptos", 64, workers=1, progress=False)
    assert first["cached"] == 30 and first["failed"] == 0
    assert prepare(tables, tmp_path / "cache", "aptos", 64, workers=1, progress=False)["cached"] == 0
    folder = Path(first["folder"])
    manifest = load_manifest(folder)
    for key in list(manifest)[:7]:  # as if killed before these were recorded
        del manifest[key]
    (folder / "manifest.json").write_text(__import__("json").dumps(manifest))
    assert prepare(tables, tmp_path / "cache", "aptos", 64, workers=2, progress=False)["cached"] == 7
    assert _digest(big_aptos) == before


def test_training_table_uses_the_cache_and_a_changed_source_invalidates_it(big_aptos, tmp_path):
    table = APTOS.read_train(big_aptos)
    prepare([table], tmp_path / "cache", "aptos", 64, workers=1, progress=False)
    used = use_cache(table, tmp_path / "cache", "aptos", 48, crop=False)
    assert used["cached"].all() and all(p[0].endswith(".kt.jpg") for p in used["paths"])
    assert not use_cache(table, tmp_path / "cache", "aptos", 96, crop=False)["cached"].any()  # too small a cache
    assert not use_cache(table, tmp_path / "cache", "aptos", 48, crop=True)["cached"].any()  # other preprocessing
    source = Path(table["paths"][0][0])
    time.sleep(0.01)
    cv2.imwrite(str(source), np.zeros((160, 160, 3), np.uint8))
    stale = use_cache(table, tmp_path / "cache", "aptos", 48, crop=False)
    assert not stale["cached"][0] and stale["cached"][1:].all() and stale["paths"][0] == table["paths"][0]
    assert prepare([table], tmp_path / "cache", "aptos", 64, workers=1, progress=False)["cached"] == 1


def test_cached_and_uncached_pipelines_give_the_same_tensors(big_aptos, tmp_path):
    table = APTOS.read_train(big_aptos)
    prepare([table], tmp_path / "cache", "aptos", 64, workers=1, progress=False)
    cached = use_cache(table, tmp_path / "cache", "aptos", 48, crop=False)
    a = np.stack([ImageDataset(table, 48)[i][0].numpy() for i in range(len(table))]).astype(float)
    b = np.stack([ImageDataset(cached, 48)[i][0].numpy() for i in range(len(table))]).astype(float)
    assert np.abs(a - b).mean() < 2.0  # two-step vs one-step area resize: a couple of grey levels at most
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.995


def test_four_channel_samples_cache_as_one_file_in_order(tmp_path):
    hpa = synthetic.make("hpa", tmp_path / "hpa", n_train=6, n_test=2, image_size=48)
    table = HPA.read_train(hpa)
    prepare([table], tmp_path / "cache", "hpa", 48, workers=1, progress=False)
    cached = use_cache(table, tmp_path / "cache", "hpa", 48, crop=False)
    assert cached["cached"].all()
    assert np.array_equal(images.read_image(cached["paths"][0]), images.read_image(table["paths"][0]))


def test_reduced_jpeg_decoding_keeps_the_requested_side(tmp_path):
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 255, (1200, 1800, 3), dtype=np.uint8), (31, 31), 0)
    cv2.imwrite(str(tmp_path / "big.jpg"), img)
    fast = images.read_image([str(tmp_path / "big.jpg")], reduce_to=128)
    full = images.read_image([str(tmp_path / "big.jpg")])
    assert min(fast.shape[:2]) >= 128 and fast.shape[0] < full.shape[0]
    a, b = images.resize(fast, 128).astype(float), images.resize(full, 128).astype(float)
    assert np.abs(a - b).mean() < 3.0


def test_fundus_crop_trims_black_borders():
    img = np.zeros((100, 140, 3), np.uint8)
    img[20:80, 30:110] = 120
    assert images.fundus_crop(img).shape == (60, 80, 3)
    assert images.fundus_crop(np.zeros((50, 50, 3), np.uint8)).shape == (50, 50, 3)  # all black: unchanged


def test_fundus_crop_is_the_box_of_pixels_brighter_than_the_threshold_in_any_channel():
    """Against the definition, pixel by pixel: a channel alone above the threshold keeps its row and column
    (grey, RGB, RGBY, and a non-contiguous view)."""
    rng = np.random.default_rng(3)
    for shape in [(41, 67), (41, 67, 3), (41, 67, 4), (30, 50, 1)]:
        for _ in range(20):
            img = (rng.random(shape) < 0.004).astype(np.uint8) * rng.integers(0, 256, shape, dtype=np.uint8)
            lit = img > 10 if img.ndim == 2 else (img > 10).any(axis=2)
            rows, cols = np.flatnonzero(lit.any(axis=1)), np.flatnonzero(lit.any(axis=0))
            want = img if len(rows) < 8 or len(cols) < 8 else img[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
            assert np.array_equal(images.fundus_crop(img), want)
            view = img[::2, 1:]
            lit = lit[::2, 1:]
            rows, cols = np.flatnonzero(lit.any(axis=1)), np.flatnonzero(lit.any(axis=0))
            want = view if len(rows) < 8 or len(cols) < 8 else view[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
            assert np.array_equal(images.fundus_crop(view), want)


def test_prediction_reads_the_cache(big_aptos, tmp_path, monkeypatch):
    from kaggle_transfer import config
    from kaggle_transfer.training.export import export
    from kaggle_transfer.training.loop import fit
    from tests.helpers import predict

    monkeypatch.setenv("KT_CACHE", str(tmp_path / "cache"))
    prepare([APTOS.read_train(big_aptos), APTOS.read_test(big_aptos)], tmp_path / "cache", "aptos", 64, crop=True,
            workers=1, progress=False)
    cfg = config.resolve(flags={"arch": "test_resnet", "pretrained": False, "size": 32, "epochs": 1, "workers": 0,
                                "fundus_crop": True, "batch_size": 8})
    result = fit(cfg, tmp_path / "run", big_aptos, progress=False)
    assert result["cached_rows"] == 24
    manifest = predict("aptos", [export(tmp_path / "run")["path"]], big_aptos, out_root=tmp_path / "subs",
                                  progress=False)
    assert manifest["cached_rows"] == 6
    shutil.rmtree(tmp_path / "cache")  # without the cache, the crop is applied on the fly: same answers
    again = predict("aptos", [tmp_path / "run" / "model.onnx"], big_aptos, out_root=tmp_path / "subs",
                               label="x",
                               progress=False)
    assert again["cached_rows"] == 0
    assert os.path.getsize(again["submission"]) > 0


@pytest.mark.parametrize("fmt, suffix", [("jpeg", ".kt.jpg"), ("png", ".kt.png"), ("raw", ".kt.npy")])
def test_each_cache_format_reads_back_what_was_cached(big_aptos, tmp_path, fmt, suffix):
    table = APTOS.read_train(big_aptos).head(6)
    prepare([table], tmp_path / "cache", "aptos", 64, workers=1, progress=False, fmt=fmt)
    cached = use_cache(table, tmp_path / "cache", "aptos", 64, crop=False)
    assert cached["cached"].all() and all(p[0].endswith(suffix) for p in cached["paths"])
    for source, entry in zip(table["paths"], cached["paths"], strict=True):
        want = images.resize_short_side(images.read_image(source, reduce_to=64), 64)
        got = images.read_image(entry)
        assert got.shape == want.shape and got.dtype == np.uint8
        if fmt == "jpeg":  # quality 95, 4:4:4, in RGB order (a swapped channel order would be far off)
            psnr = 10 * np.log10(255**2 / np.mean((got.astype(float) - want) ** 2))
            assert psnr > 35
        else:
            assert np.array_equal(got, want)


def test_another_format_replaces_the_entries_and_damage_is_detected(big_aptos, tmp_path):
    from kaggle_transfer.data.cache import entry_file, entry_intact

    table = APTOS.read_train(big_aptos).head(4)
    prepare([table], tmp_path / "cache", "aptos", 64, workers=1, progress=False)
    folder = tmp_path / "cache" / "aptos" / "64"
    again = prepare([table], tmp_path / "cache", "aptos", 64, workers=1, progress=False, fmt="raw")
    assert again["cached"] == 4 and not list(folder.glob("*.kt.jpg")) and len(list(folder.glob("*.kt.npy"))) == 4
    entry = next(folder.glob("*.kt.npy"))
    assert entry_intact(entry)
    entry.write_bytes(entry.read_bytes()[:-10])  # truncated
    assert not entry_intact(entry)
    assert prepare([table], tmp_path / "cache", "aptos", 64, workers=1, progress=False, fmt="raw")["cached"] == 1
    assert entry_file(folder, entry.name.split(".")[0]) == entry and entry_intact(entry)
    from kaggle_transfer.errors import KtError

    with pytest.raises(KtError, match="not a cache format"):
        prepare([table], tmp_path / "cache", "aptos", 64, workers=1, progress=False, fmt="webp")
