"""`kt train` (after `kt prepare`) against timm's own `train.py` on the same JPEGs: whole processes, wall
time, CPU time (the process and its loader workers) and the peak resident memory of the largest process.

    python benchmarks/train_vs_timm.py --timm-train PATH/TO/timm/train.py [--images 160] [--size 256]
    python benchmarks/train_vs_timm.py --timm-train … --no-cache --source 800x600 --images 400 --size 128

timm's train.py is not in its wheel: pass the file from a checkout of pytorch-image-models (the same
release as the installed timm, or close to it). Both train resnet18 from scratch with AdamW, batch 32,
2 loader workers, random-resized-crop + flips + colour jitter, on photo-like JPEGs (2000x1500 unless
--source); timm reads the JPEGs every epoch (it has no cache), kt reads kt prepare's cache, or with
--no-cache the same JPEGs (the compute-bound case: small JPEGs, decoding is not the bottleneck). kt
validates on 5 % of the rows each epoch; timm validates on nothing (--val-split ''). Trials alternate,
so machine drift hits both.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

# runs a command and prints what its process tree used: CPU of all reaped descendants, the largest RSS
WRAPPER = """
import json, resource, subprocess, sys, time
t = time.perf_counter()
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
wall = time.perf_counter() - t
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": code.returncode, "wall": wall, "cpu": r.ru_utime + r.ru_stime, "sys": r.ru_stime,
                  "rss_mib": r.ru_maxrss / 1024, "err": code.stderr[-800:]}))
"""


def measure(cmd: list[str], env: dict[str, str] | None = None) -> dict:
    import os

    out = subprocess.run([sys.executable, "-c", WRAPPER, *cmd], capture_output=True, text=True,
                         env={**os.environ, **(env or {})})
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["rc"]:
        raise SystemExit(f"{cmd[:3]} failed: {result['err']}")
    return result


def dataset(root: Path, n: int, shape: tuple[int, int] = (1500, 2000)) -> Path:
    """ImageFolder layout for timm (train/c0, train/c1) described by a kt competition YAML."""
    from prepare_vs_pil import photos

    ids = []
    for k in (0, 1):
        for (path,) in photos(root / "train" / f"c{k}", n // 2, ".jpg", shape):
            ids.append((f"c{k}/{Path(path).stem}", k))
    frame = pd.DataFrame(ids, columns=["id", "label"])
    frame.to_csv(root / "train.csv", index=False)
    frame[["id"]].to_csv(root / "test.csv", index=False)
    spec = {"name": "bench-jpegs", "task": "multiclass", "classes": ["c0", "c1"], "submit_via": "none",
            "train_csv": "train.csv", "id_column": "id", "target_column": "label",
            "image_pattern": "train/{id}.jpg", "test_csv": "test.csv"}
    (root / "bench.yaml").write_text(yaml.safe_dump(spec))
    return root


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--timm-train", required=True, help="timm's train.py from a pytorch-image-models checkout")
    p.add_argument("--images", type=int, default=160)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--trials", type=int, default=2)
    p.add_argument("--source", default="2000x1500", help="the JPEGs' width x height")
    p.add_argument("--no-cache", action="store_true", help="kt reads the original JPEGs, as timm does")
    a = p.parse_args()
    width, height = (int(v) for v in a.source.lower().split("x"))
    ours = "kt train (originals)" if a.no_cache else "kt train (cache)"
    rows: dict[str, list[dict]] = {"timm train.py": [], ours: []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = dataset(tmp / "data", a.images, (height, width))
        kt = [sys.executable, "-m", "kaggle_transfer"]
        env = {"KT_CACHE": str(tmp / "cache"), "KT_RUNS": str(tmp / "runs")}
        prep = None if a.no_cache else measure([*kt, "prepare", str(data / "bench.yaml"), "--data-dir", str(data),
                                                "--size", str(a.size), "--no-progress"], env)
        for trial in range(a.trials):
            rows["timm train.py"].append(measure([
                sys.executable, a.timm_train, "--data-dir", str(data), "--train-split", "train", "--val-split", "",
                "--model", a.arch, "--num-classes", "2", "--img-size", str(a.size), "-b", "32", "-j", "2",
                "--epochs", str(a.epochs), "--device", "cpu", "--no-prefetcher", "--opt", "adamw", "--lr", "1e-3",
                "--warmup-epochs", "0", "--vflip", "0.5", "--color-jitter", "0.3", "--log-interval", "1000",
                "--output", str(tmp / f"timm{trial}")]))
            rows[ours].append(measure([
                *kt, "train", str(data / "bench.yaml"), "--data-dir", str(data), "--arch", a.arch, "--no-pretrained",
                "--size", str(a.size), "--batch-size", "32", "--workers", "2", "--epochs", str(a.epochs),
                "--lr", "1e-3", "--augment", "heavy", "--no-progress", "--set", "split=kfold", "--set", "folds=20"],
                env))
    print(f"\n{a.arch} @ {a.size} px from scratch, {a.images} photo-like {a.source} JPEGs, {a.epochs} epochs, batch 32, "
          f"2 workers, {a.trials} alternating trials (whole processes)")
    print(f"{'run':<22}{'wall s':>10}{'CPU s':>10}{'system s':>10}{'peak RSS MiB':>14}")
    for name, trials in rows.items():
        wall, cpu, sys_, rss = (np.array([t[k] for t in trials]) for k in ("wall", "cpu", "sys", "rss_mib"))
        print(f"{name:<22}{wall.mean():>10.1f}{cpu.mean():>10.1f}{sys_.mean():>10.1f}{rss.max():>14.0f}")
    t, k = (pd.DataFrame(rows[n]) for n in rows)
    print(f"timm / kt: {(t['wall'] / k['wall']).mean():.2f}x wall, {(t['cpu'] / k['cpu']).mean():.2f}x CPU "
          f"(per trial wall: {', '.join(f'{r:.2f}' for r in t['wall'] / k['wall'])}); peak memory kt / timm "
          f"{k['rss_mib'].max() / t['rss_mib'].max():.2f}x")
    if prep:
        print(f"kt prepare (once, not in the ratios): {prep['wall']:.1f} s wall, {prep['cpu']:.1f} s CPU; including "
              f"it in kt's first trial: {t['wall'][0] / (k['wall'][0] + prep['wall']):.2f}x wall")


if __name__ == "__main__":
    main()
