"""Held-out accuracy of kt on real data (scikit-learn's digits), mean ± std over seeds.

The whole user path per seed: the YAML-described competition → kt train → export → predict →
validate → score against the held-out labels. Published classifiers reach about 98-99% here.

    python benchmarks/digits_accuracy.py [--seeds 3] [--epochs 10]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def run(seed: int, epochs: int, root: Path, data_dir: Path) -> tuple[float, float]:
    """Held-out accuracy of the run's fp32 model and of its kt export --int8 copy."""
    from kaggle_transfer import competitions, config
    from kaggle_transfer.inference.pipeline import predict_submission
    from kaggle_transfer.inference.predictor import Choice, RunOptions, load_predictor
    from kaggle_transfer.training.demo import hidden_label_score
    from kaggle_transfer.training.export import export
    from kaggle_transfer.training.loop import fit

    comp = competitions.get(str(data_dir / "digits.yaml"))
    cfg = config.resolve(comp.spec["recipe"], {"competition": comp.name, "competition_file": comp.spec_file,
                                               "seed": seed, "epochs": epochs})
    run_dir = root / f"run{seed}"
    run_dir.mkdir()
    fit(cfg, run_dir, data_dir, progress=False)
    onnx = export(run_dir)["path"]
    from kaggle_transfer.inference.quantize import quantize

    quantize(run_dir, force=True)  # the score check is what this measures
    scores = []
    for int8 in (False, True):
        predictor = load_predictor(comp.name, Choice(models=[onnx], int8=int8), RunOptions(progress=False))
        label = f"seed{seed}{'-int8' if int8 else ''}"
        manifest = predict_submission(predictor, data_dir, out_root=root / "subs", label=label)
        scores.append(hidden_label_score(comp, data_dir, Path(manifest["submission"])))
    return scores[0], scores[1]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=10)
    a = p.parse_args()
    from kaggle_transfer.data.digits import make_digits

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = make_digits(Path(tmp) / "digits")
        t0 = time.time()
        pairs = [run(seed, a.epochs, Path(tmp), data_dir) for seed in range(a.seeds)]
    scores, int8 = [p[0] for p in pairs], [p[1] for p in pairs]
    print(f"\ndigits (1,797 real 8x8 images; 450 held out), test_resnet @ 32px from scratch, {a.epochs} epochs")
    print(f"held-out accuracy per seed: {', '.join(f'{s:.4f}' for s in scores)}")
    print(f"mean ± std over {a.seeds} seeds: {np.mean(scores):.4f} ± {np.std(scores):.4f}  "
          f"({(time.time() - t0) / a.seeds:.0f}s per seed)")
    diffs = [100 * (b - s) for s, b in pairs]
    print(f"int8 (kt export --int8) per seed: {', '.join(f'{s:.4f}' for s in int8)}; int8 - fp32: "
          f"{', '.join(f'{d:+.2f}' for d in diffs)} points (mean {np.mean(diffs):+.2f})")


if __name__ == "__main__":
    main()
