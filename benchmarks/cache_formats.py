"""Which format should kt prepare's cache store? Write time, read+decode time, size and exactness of
one resized image (short side 512, from 2000x1500 photo-like JPEGs) per format, in one process.

    python benchmarks/cache_formats.py [--images 40] [--size 512]

Read+decode per image is what a training loader pays every epoch, so its images/s per core decides
the default; write time is paid once by kt prepare; size is the disk it takes; exactness is the max
absolute pixel difference to the resized array (0 = lossless) and its PSNR.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

FORMATS = {
    "png (zlib 1)": (".png", [cv2.IMWRITE_PNG_COMPRESSION, 1]),
    "png (zlib 3)": (".png", [cv2.IMWRITE_PNG_COMPRESSION, 3]),
    "jpeg q95 4:4:4": (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 95, cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                                cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]),
    "jpeg q90 4:2:0": (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 90]),
    "webp q95": (".webp", [cv2.IMWRITE_WEBP_QUALITY, 95]),
    "webp lossless": (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]),
    "raw uint8 (.npy)": (".npy", None),
}


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def _heavy(size: int):
    """kt's `heavy` training transform at `size` (what a loader applies to each cached image)."""
    import random

    from kaggle_transfer.training.augment import build_train_transform

    transform = build_train_transform("heavy", size)

    def apply(image, rng):
        random.seed(int(rng.integers(1 << 31)))
        np.random.seed(int(rng.integers(1 << 31)))
        return transform(image=image)["image"]

    return apply


def measure(arrays: list[np.ndarray], folder: Path, ext: str, params) -> dict[str, float]:
    folder.mkdir()
    paths = [folder / f"{i}{ext}" for i in range(len(arrays))]

    def write():
        for img, path in zip(arrays, paths, strict=True):
            if params is None:
                np.save(path, img)
            else:
                path.write_bytes(cv2.imencode(ext, img, params)[1].tobytes())

    def read():
        return [np.load(p) if params is None else cv2.imdecode(np.fromfile(p, np.uint8), cv2.IMREAD_UNCHANGED)
                for p in paths]

    _, write_wall, write_cpu = _timed(write)
    read(), read()  # warm the page cache: a loader reads files the OS already holds after the first epoch
    back, read_wall, read_cpu = _timed(read)
    augment = _heavy(arrays[0].shape[0])
    rng = np.random.default_rng(0)
    _, _, load_cpu = _timed(lambda: [augment(image=img, rng=rng) for img in read()])
    err = max(int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in zip(arrays, back, strict=True))
    mse = np.mean([np.mean((a.astype(float) - b.astype(float)) ** 2) for a, b in zip(arrays, back, strict=True)])
    n = len(arrays)
    return {"write_ms": 1000 * write_cpu / n, "loader_ms": 1000 * load_cpu / n, "loader_per_s_core": n / load_cpu,
            "read_ms": 1000 * read_cpu / n, "read_wall_ms": 1000 * read_wall / n,
            "read_per_s_core": n / read_cpu, "kib": sum(p.stat().st_size for p in paths) / n / 1024,
            "max_err": err, "psnr": float("inf") if mse == 0 else 10 * np.log10(255**2 / mse),
            "write_wall_ms": 1000 * write_wall / n}


def main() -> None:
    from prepare_vs_pil import photos  # the same photo-like generator as the prepare benchmark

    from kaggle_transfer.data import images

    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=40)
    p.add_argument("--size", type=int, default=512)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sources = photos(tmp / "src", a.images, ".jpg", (1500, 2000))
        arrays = [images.resize_short_side(images.read_image(s, reduce_to=a.size), a.size) for s in sources]
        rows = {name: measure(arrays, tmp / name.replace(" ", "_").replace("(", "").replace(")", "")
                              .replace(":", ""), ext, params) for name, (ext, params) in FORMATS.items()}
    h, w = arrays[0].shape[:2]
    print(f"\n{a.images} images cached at {w}x{h} (short side {a.size}) from 2000x1500 JPEGs; CPU ms per image, "
          "one process")
    print(f"{'format':<18}{'write ms':>9}{'read ms':>9}{'read img/s/core':>16}{'+heavy aug ms':>14}"
          f"{'loader img/s/core':>18}{'KiB':>7}{'max err':>8}{'PSNR dB':>8}")
    for name, r in rows.items():
        print(f"{name:<18}{r['write_ms']:>9.2f}{r['read_ms']:>9.2f}{r['read_per_s_core']:>16.0f}{r['loader_ms']:>14.2f}"
              f"{r['loader_per_s_core']:>18.0f}{r['kib']:>7.0f}{r['max_err']:>8d}{r['psnr']:>8.1f}")


if __name__ == "__main__":
    main()
