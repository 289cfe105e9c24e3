"""Training-loader throughput: kt's loader (heavy preset) from the original JPEGs and from kt prepare's
cache, against timm's own loader (timm.data.create_loader with flips and colour jitter, no prefetcher)
on the same files; images/s per worker in wall time and images per CPU-second (main + workers).

    python benchmarks/loader_speed.py [--images 96] [--sizes 256,512] [--workers 2] [--epochs 2]

The originals are photo-like 2000x1500 JPEGs; the cache is kt prepare's default format at each size.
"""

from __future__ import annotations

import argparse
import gc
import resource
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch


def _cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def drain(make_loader, epochs: int) -> tuple[float, float, int]:
    """(wall s, CPU s, images) over `epochs` full passes; the loader's workers are joined before CPU is read."""
    wall, cpu = time.perf_counter(), _cpu()
    loader = make_loader()
    n = 0
    for epoch in range(epochs):
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        for x, *_ in loader:
            n += len(x)
    it = getattr(loader, "_iterator", None)
    if it is not None:
        it._shutdown_workers()  # persistent workers: join them so their CPU time is counted
    del loader, it
    gc.collect()
    return time.perf_counter() - wall, _cpu() - cpu, n


def kt_loader(table: pd.DataFrame, size: int, workers: int, batch: int):
    from kaggle_transfer.training.augment import build_train_transform
    from kaggle_transfer.training.dataset import ImageDataset, make_loader

    def make():
        dataset = ImageDataset(table, size, targets=[0] * len(table), transform=build_train_transform("heavy", size))
        return make_loader(dataset, batch, workers, True, generator=torch.Generator().manual_seed(0), pin=False)

    return make


def timm_loader(root: Path, size: int, workers: int, batch: int):
    from timm.data import ImageDataset, create_loader

    def make():
        return create_loader(ImageDataset(str(root)), (3, size, size), batch, is_training=True, hflip=0.5, vflip=0.5,
                             color_jitter=0.3, num_workers=workers, use_prefetcher=False, device=torch.device("cpu"),
                             persistent_workers=False)

    return make


def main() -> None:
    from prepare_vs_pil import photos  # the same photo-like JPEGs as the prepare benchmark

    from kaggle_transfer.data.cache import prepare, use_cache

    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=96)
    p.add_argument("--sizes", default="256,512")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--epochs", type=int, default=2)
    a = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = photos(tmp / "data" / "class0", a.images, ".jpg", (1500, 2000))
        table = pd.DataFrame({"id": range(len(paths)), "paths": paths})
        for size in (int(s) for s in a.sizes.split(",")):
            prepare([table], tmp / "cache", "bench", size, workers=a.workers, progress=False)
            cached = use_cache(table, tmp / "cache", "bench", size, crop=False)
            assert cached["cached"].all()
            runs = {"timm create_loader (originals)": timm_loader(tmp / "data", size, a.workers, a.batch),
                    "kt (originals)": kt_loader(table, size, a.workers, a.batch),
                    "kt (kt prepare cache)": kt_loader(cached, size, a.workers, a.batch)}
            results = {name: drain(make, a.epochs) for name, make in runs.items()}
            base = results["timm create_loader (originals)"]
            for name, (wall, cpu, n) in results.items():
                rows.append((size, name, n / wall / a.workers, n / cpu, base[0] / wall, base[1] / cpu))
    print(f"\n{a.images} photo-like 2000x1500 JPEGs, {a.epochs} epochs, {a.workers} workers, batch {a.batch}, "
          "heavy augmentation (timm: flips + colour jitter)")
    print(f"{'size':>5}  {'loader':<32}{'img/s/worker':>13}{'img/CPU-s':>11}{'vs timm wall':>13}{'vs timm CPU':>12}")
    for size, name, per_worker, per_cpu, wall_ratio, cpu_ratio in rows:
        print(f"{size:>5}  {name:<32}{per_worker:>13.1f}{per_cpu:>11.1f}{wall_ratio:>12.2f}x{cpu_ratio:>11.2f}x")


if __name__ == "__main__":
    main()
