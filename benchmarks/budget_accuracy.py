"""How well `kt ensemble --budget` predicts a run: its estimate for this machine (`--target here`) against
the time kt's predictor (what kt predict and the notebook run) then takes on the same images, for one
member and for K members (K copies of the ONNX file, K sessions, as K members load), where decoding
dominates (APTOS-size PNGs), where inference does (800x600 JPEGs at 256 px) and in between.

    python benchmarks/budget_accuracy.py [--k 3] [--rounds 2]

A ratio above 1 overestimates the run (a smaller blend than would fit); below 1 it underestimates it,
which is the side that costs a submission, so the table is the measure of how much margin to leave.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from predict_speed import tiny_model
from prepare_vs_pil import photos

# (label, image shape (h, w), extension, model side, images)
CASES = [
    ("APTOS-size PNG 3216x2136 -> 128 px", (2136, 3216), ".png", 128, 32),
    ("JPEG 800x600 -> 256 px", (600, 800), ".jpg", 256, 64),
    ("JPEG 1024x1024 -> 64 px", (1024, 1024), ".jpg", 64, 160),
]


def actual(files: list[Path], paths, rounds: int) -> float:
    """Wall seconds of kt's predictor over `paths` with every file as a member, best of `rounds`."""
    from kaggle_transfer.inference.predict import RunOptions, predict_models
    from kaggle_transfer.inference.session import load_model

    members = [load_model(f, provider="cpu") for f in files]
    predict_models(members, paths[:4], RunOptions(progress=False))  # warm: the first runs allocate
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        predict_models(members, paths, RunOptions(progress=False))
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    a = p.parse_args()
    from kaggle_transfer.inference import costs as cost_model

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for label, shape, ext, side, n in CASES:
            paths = photos(tmp / f"{side}{ext}", n, ext, shape)
            model = tiny_model(tmp, side)
            copies = [model] + [shutil.copy(model, tmp / f"m{side}_{i}.onnx") for i in range(1, a.k)]
            for k in (1, a.k):
                files = [Path(f) for f in copies[:k]]
                costs = cost_model.scale(cost_model.measure([[f] for f in files], paths[:4]), "here")
                estimate = n * costs.per_image(range(k))
                took = actual(files, paths, a.rounds)
                rows.append((label, k, estimate, took))
    print(f"\nkt ensemble --budget's estimate (--target here) vs kt's predictor, {n} images or as listed")
    print(f"{'images':<38}{'members':>8}{'estimate s':>12}{'actual s':>10}{'estimate/actual':>17}")
    for label, k, estimate, took in rows:
        print(f"{label:<38}{k:>8}{estimate:>12.2f}{took:>10.2f}{estimate / took:>16.2f}x")
    ratios = [e / t for _, _, e, t in rows]
    print(f"estimate / actual from {min(ratios):.2f}x to {max(ratios):.2f}x")


if __name__ == "__main__":
    main()
