"""kt prepare vs a plain PIL open→convert→resize loop on the same images to the same size: wall time and
CPU time (the process and its workers), so the ratio per core is visible beside the ratio in wall time.

    python benchmarks/prepare_vs_pil.py [--images 40] [--pngs 16] [--size 512]

The plain loop only decodes and resizes; kt prepare also writes each cache file and its manifest.
"""

from __future__ import annotations

import argparse
import resource
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


def _cpu() -> float:
    """CPU seconds of this process and of its finished (joined) children, e.g. a process pool's workers."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), _cpu()
    fn()
    return time.perf_counter() - wall, _cpu() - cpu


def plain(paths, size: int) -> tuple[float, float]:
    from PIL import Image

    def loop():
        for (p,) in paths:
            with Image.open(p) as im:
                im.convert("RGB").resize((size, size))

    return timed(loop)


def ours(paths, size: int, root: Path, workers: int) -> tuple[float, float]:
    from kaggle_transfer.data.cache import prepare

    return timed(lambda: prepare([pd.DataFrame({"paths": paths})], root, "bench", size, workers=workers,
                                 progress=False))


def main() -> None:
    import kaggle_transfer.data.cache  # noqa: F401 - imported before timing, as `kt prepare` has it loaded

    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=40)
    p.add_argument("--pngs", type=int, default=16)
    p.add_argument("--size", type=int, default=512)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = []
        for name, paths in (("JPEG 2000x1500", photos(tmp / "jpg2", a.images, ".jpg", (1500, 2000))),
                            ("JPEG 4000x3000", photos(tmp / "jpg4", a.images, ".jpg", (3000, 4000))),
                            ("PNG 2000x2000", photos(tmp / "png", a.pngs, ".png", (2000, 2000)))):
            base = plain(paths, a.size)
            one = ours(paths, a.size, tmp / f"c1{name}", workers=1)
            two = ours(paths, a.size, tmp / f"c2{name}", workers=2)
            rows.append((name, len(paths), base, one, two))
    print(f"\nresize to {a.size} px; seconds per 100 images (wall / CPU), and plain PIL's time over kt's")
    print(f"{'images':<16}{'plain PIL':>14}{'kt, 1 process':>16}{'ratio wall/CPU':>16}{'kt, 2 processes':>18}"
          f"{'ratio wall/CPU':>16}")
    for name, n, base, one, two in rows:
        per = [(w * 100 / n, c * 100 / n) for w, c in (base, one, two)]
        print(f"{name:<16}{per[0][0]:>7.2f}/{per[0][1]:<6.2f}{per[1][0]:>9.2f}/{per[1][1]:<6.2f}"
              f"{base[0] / one[0]:>9.2f}x/{base[1] / one[1]:.2f}x{per[2][0]:>11.2f}/{per[2][1]:<6.2f}"
              f"{base[0] / two[0]:>9.2f}x/{base[1] / two[1]:.2f}x")


if __name__ == "__main__":
    main()
