"""`kt ensemble --budget`: the best blend whose predicted run time fits a notebook's clock. Torch-free.

The cost model follows how kt predicts (inference/predict.py): each test image is decoded once, at the
largest input side of the blend, and resized for each model; every member then runs each of its ONNX
files (fold models) once per test-time view. So a blend costs, per test image,

    decode(largest side among its members) + sum over members of files x views x model time

Members' model times and the decode time per side are measured on this machine (a few batches of each
ONNX file on the CPU provider; a few of the competition's own images decoded and resized) and scaled to
the target:

- `here`: as measured.
- `kaggle-cpu`: Kaggle's notebook has 4 logical CPUs at about 2.0 GHz (`cpu_count_logical: 4` in the
  wandb-metadata.json that Kaggle notebook runs record, 2024): CPU times x (this machine's CPUs / 4).
- `kaggle-t4`, `kaggle-p100`: an estimate. Model time x (this CPU's peak FP32 rate / the GPU's
  datasheet FP32 rate: T4 8.1 TFLOPS, NVIDIA T4 datasheet; P100 PCIe 9.3 TFLOPS, NVIDIA Tesla P100
  datasheet), assuming both reach the same share of their peak; decoding stays on the notebook's 4
  CPUs. This machine's peak is cores x clock x FP32 FLOPs per cycle (32 with AVX2 + FMA, 64 with
  AVX-512), from /proc/cpuinfo.

With up to `EXHAUSTIVE` members every subset is scored (equal weights, the competition metric, cut
points refitted on OOF) and the best that fits is kept; ties go to the cheaper blend, so a tighter
budget never picks a slower blend. Above that, forward selection adds the member that most improves
the score among those that still fit. The chosen members are then weighted greedily (kt ensemble's
greedy) where that scores higher on OOF than equal weights.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import KtError
from . import tta
from .session import load_model, usable_cpus

EXHAUSTIVE = 10  # members up to which every subset is scored
KAGGLE_CPUS = 4
GPU_FP32_TFLOPS = {"kaggle-t4": 8.1, "kaggle-p100": 9.3}
TARGETS = ("here", "kaggle-cpu", "kaggle-t4", "kaggle-p100")


@dataclass(frozen=True)
class Costs:
    """Seconds per test image on the target: each member's models (files x views), and decoding plus
    resizing one image at each input side."""

    model_s: tuple[float, ...]
    sides: tuple[int, ...]  # each member's largest input side
    decode_s: dict[int, float] = field(default_factory=dict)
    target: str = "here"
    note: str = "measured on this machine"

    def per_image(self, chosen: Sequence[int]) -> float:
        chosen = sorted(set(chosen))
        if not chosen:
            return 0.0
        side = max(self.sides[m] for m in chosen)
        return self.decode_s[side] + sum(self.model_s[m] for m in chosen)


Score = Callable[[Sequence[int]], float]  # a blend's OOF score from its members' indices


def frontier(score: Score, n: int, costs: Costs, images: int) -> list[dict[str, Any]]:
    """Every subset (up to EXHAUSTIVE members) with its predicted seconds and OOF score, cheapest first;
    `pareto` marks the blends no cheaper blend scores as well as."""
    if n > EXHAUSTIVE:
        raise KtError(f"scoring every blend of {n} members is too slow; pass at most {EXHAUSTIVE}")
    rows = []
    for k in range(1, n + 1):
        for chosen in itertools.combinations(range(n), k):
            rows.append(
                {
                    "members": list(chosen),
                    "seconds": images * costs.per_image(chosen),
                    "score": float(score(chosen)),
                }
            )
    rows.sort(key=lambda r: (r["seconds"], -r["score"]))
    best = -np.inf
    for row in rows:
        row["pareto"] = row["score"] > best + 1e-12
        best = max(best, row["score"])
    return rows


def select(
    score: Score, n: int, costs: Costs, budget_s: float, images: int
) -> tuple[list[int], list[dict[str, Any]]]:
    """The members (of n) of the best blend predicted to finish within `budget_s` on `images` test
    images, and the frontier. Nothing fits: one line naming the cheapest member's time."""
    cheapest = min(range(n), key=lambda m: costs.per_image([m]))
    if images * costs.per_image([cheapest]) > budget_s:
        raise KtError(
            f"--budget {_hours(budget_s)}: no member fits; the cheapest alone needs "
            f"{_hours(images * costs.per_image([cheapest]))} for {images:,} images on "
            f"{where(costs.target)} "
            "(fewer views, a smaller side, or a faster target)"
        )
    if n <= EXHAUSTIVE:
        rows = frontier(score, n, costs, images)
        fits = [r for r in rows if r["seconds"] <= budget_s]
        best = max(fits, key=lambda r: (r["score"], -r["seconds"]))
        return best["members"], rows
    chosen, score = [], -np.inf  # forward selection among members that still fit
    while True:
        options = [
            (float(score([*chosen, m])), m)
            for m in range(n)
            if m not in chosen and images * costs.per_image([*chosen, m]) <= budget_s
        ]
        if not options or max(options)[0] <= score + 1e-12:
            break
        score, pick = max(options)
        chosen.append(pick)
    rows = [
        {"members": chosen[: k + 1], "seconds": images * costs.per_image(chosen[: k + 1])}
        for k in range(len(chosen))
    ]
    return sorted(chosen), rows


def _hours(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.3g} s"


@dataclass(frozen=True)
class Budget:
    """`--budget 9h --test-images N --target NAME`."""

    seconds: float
    images: int
    target: str = "kaggle-cpu"


def where(target: str) -> str:
    return "this machine" if target == "here" else target


def line(record: dict[str, Any]) -> str:
    """The spec's budget record as one line (kt ensemble, kt bundle and kt submit print it)."""
    return (
        f"predicted run: {_hours(record['estimated_s'])} of the {_hours(record['budget_s'])} budget "
        f"for {record['test_images']:,} images on {where(record['target'])} ({record['note']})"
    )


# --- measuring ----------------------------------------------------------------------------------


def cpu_peak_gflops() -> float:
    """This machine's peak FP32 rate: CPUs x clock x FLOPs per cycle (two FMA units)."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    mhz = [float(line.split(":")[1]) for line in text.splitlines() if line.startswith("cpu MHz")]
    per_cycle = 64 if " avx512f" in text else 32 if " avx2" in text else 16
    cpus = usable_cpus()
    return cpus * (max(mhz) / 1000 if mhz else 2.0) * per_cycle


def scale(costs: Costs, target: str) -> Costs:
    """Measured costs on this machine → the target's (see the module docstring)."""
    if target not in TARGETS:
        raise KtError(f"--target {target!r} is not one of {', '.join(TARGETS)}")
    if target == "here":
        return costs
    cpus = usable_cpus()
    cpu = cpus / KAGGLE_CPUS
    decode = {side: s * cpu for side, s in costs.decode_s.items()}
    if target == "kaggle-cpu":
        model = tuple(s * cpu for s in costs.model_s)
        note = f"measured here x {cpu:.2f} (this machine's {cpus} CPUs / Kaggle's {KAGGLE_CPUS})"
    else:
        gpu = cpu_peak_gflops() / (GPU_FP32_TFLOPS[target] * 1000)
        model = tuple(s * gpu for s in costs.model_s)
        note = (
            f"estimate: model time x {gpu:.3f} (this CPU's peak FP32 / the GPU's datasheet "
            f"{GPU_FP32_TFLOPS[target]} TFLOPS), decoding x {cpu:.2f} on Kaggle's {KAGGLE_CPUS} CPUs"
        )
    return Costs(model, costs.sides, decode, target, note)


def _time(fn, repeats: int = 5) -> float:
    """The fastest of `repeats` calls after a warm-up: the least disturbed by whatever else runs."""
    fn()  # warm up (allocations, the first run's graph set-up)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure(member_files: Sequence[Sequence[Path]], image_paths: Sequence[Sequence[str]]) -> Costs:
    """Seconds per image on this machine: each member's ONNX files (CPU provider, batches of 8 at the
    file's side, times its recorded views) and decoding + resizing `image_paths` at each side."""
    from ..data import images

    batch, model_s, sides, times = 8, [], [], {}
    for files in member_files:
        total = 0.0
        for path in files:
            if str(path) not in times:
                model = load_model(path, provider="cpu")
                shape = (batch, len(model.meta["channels"]), model.size, model.size)
                x = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
                spec = model.meta_spec
                meta = np.zeros((batch, spec["width"]), np.float32) if spec else None
                views = len(tta.views(tta.recorded_tta([model.meta])))
                seconds = _time(lambda m=model, x=x, f=meta: m.run(x, f)) / batch
                times[str(path)] = (seconds * views, model.size)
            total += times[str(path)][0]
        model_s.append(total)
        sides.append(max(times[str(p)][1] for p in files))
    if not image_paths:
        raise KtError(
            "--budget needs a few of the competition's images to time decoding; none found"
        )
    decode = {}
    for side in sorted(set(sides)):
        one = lambda s=side: [  # noqa: E731
            images.fit_to(images.read_image(p, reduce_to=s), s) for p in image_paths
        ]
        decode[side] = _time(one, repeats=3) / len(image_paths)
    return Costs(tuple(model_s), tuple(sides), decode)
