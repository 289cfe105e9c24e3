"""kt prepare vs a plain PIL open→convert→resize loop, on large JPEGs and PNGs (images/s, one process each).

    python benchmarks/prepare_vs_pil.py [--jpegs 40] [--pngs 16] [--size 256]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd


def photos(folder: Path, n: int, ext: str, shape: tuple[int, int]) -> list[tuple[str]]:
    """Photo-like images (smooth noise, so codecs work as on real photos, not on flat colour)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    base = cv2.resize(rng.integers(0, 255, (shape[0] // 16, shape[1] // 16, 3), dtype=np.uint8), shape[::-1],
                      interpolation=cv2.INTER_CUBIC)
    out = []
    for i in range(n):
        img = np.clip(base.astype(int) + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"{i}{ext}"), img)
        out.append((str(folder / f"{i}{ext}"),))
    return out


def plain(paths, size: int) -> float:
    from PIL import Image

    t0 = time.perf_counter()
    for (p,) in paths:
        with Image.open(p) as im:
            im.convert("RGB").resize((size, size))
    return len(paths) / (time.perf_counter() - t0)


def ours(paths, size: int, root: Path, workers: int) -> float:
    from kaggle_transfer.data.cache import prepare

    t0 = time.perf_counter()
    prepare([pd.DataFrame({"paths": paths})], root, "bench", size, workers=workers, progress=False)
    return len(paths) / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--jpegs", type=int, default=40)
    p.add_argument("--pngs", type=int, default=16)
    p.add_argument("--size", type=int, default=256)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = []
        for name, paths in (("JPEG 4000x3000", photos(tmp / "jpg", a.jpegs, ".jpg", (3000, 4000))),
                            ("PNG 2000x2000", photos(tmp / "png", a.pngs, ".png", (2000, 2000)))):
            base = plain(paths, a.size)
            one = ours(paths, a.size, tmp / f"c1{name[:3]}", workers=1)
            two = ours(paths, a.size, tmp / f"c2{name[:3]}", workers=2)
            rows.append((name, base, one, two))
    print(f"\nresize to {a.size}px, images/s")
    print(f"{'images':<16}{'plain PIL':>10}{'kt prepare (1 proc)':>21}{'ratio':>7}"
          f"{'kt prepare (2 procs)':>22}{'ratio':>7}")
    for name, base, one, two in rows:
        print(f"{name:<16}{base:>10.1f}{one:>21.1f}{one / base:>6.2f}x{two:>22.1f}{two / base:>6.2f}x")


if __name__ == "__main__":
    main()
