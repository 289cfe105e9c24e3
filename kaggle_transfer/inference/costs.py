"""The cost model of `kt ensemble --budget`: what each member and each decode side costs per test image,
measured on this machine and scaled to where the notebook runs. Torch-free.

Members' model times and the decode time per side are measured on this machine in CPU-seconds (a few
batches of each ONNX file on the CPU provider; a few of the competition's own images decoded and resized,
one thread), and a target's seconds are those CPU-seconds spread over the CPUs that run them: kt predict
decodes on one thread per CPU while onnxruntime's threads run the previous batch, so decoding and
inference share every CPU (benchmarks/budget_accuracy.py compares the estimate with kt predict's time).

- `here`: CPU-seconds / this process's CPUs.
- `kaggle-cpu`: CPU-seconds / 2. Kaggle's notebooks have 2 physical cores with 2 hyper-threads each
  at 2.0 GHz (`cpu_count: 2`, `cpu_count_logical: 4` in the wandb-metadata.json that Kaggle notebook
  runs record, 2024); hyper-threads share a core's vector units, so inference gains little from them,
  and a Kaggle core is taken to be as fast as one of this machine's CPUs.
- `kaggle-t4`, `kaggle-p100`: an estimate. Model CPU-seconds x (this CPU's fp32 rate per core,
  measured on a dense matmul / the GPU's datasheet FP32 rate: T4 8.1 TFLOPS, NVIDIA T4 datasheet; P100
  PCIe 9.3 TFLOPS, NVIDIA Tesla P100 datasheet), assuming both reach the same share of that rate;
  decoding stays on the notebook's 2 cores and is added, not overlapped.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import KtError
from . import tta
from .session import load_model, session_options, usable_cpus

KAGGLE_CORES = 2
GPU_FP32_TFLOPS = {"kaggle-t4": 8.1, "kaggle-p100": 9.3}
TARGETS = ("here", "kaggle-cpu", "kaggle-t4", "kaggle-p100")


@dataclass(frozen=True)
class Costs:
    """Seconds per test image: each member's models (files x views), and decoding plus resizing one
    image at each input side. measure() gives this machine's CPU-seconds; scale() the target's seconds."""

    model_s: tuple[float, ...]
    sides: tuple[int, ...]  # each member's largest input side
    decode_s: dict[int, float] = field(default_factory=dict)
    target: str = "here"
    note: str = "measured on this machine"
    views: tuple[int, ...] = ()  # each member's recorded test-time views, counted in model_s

    def per_image(self, chosen: Sequence[int]) -> float:
        chosen = sorted(set(chosen))
        if not chosen:
            return 0.0
        side = max(self.sides[m] for m in chosen)
        return self.decode_s[side] + sum(self.model_s[m] for m in chosen)


def cpu_gflops(n: int = 768) -> float:
    """This CPU's fp32 rate on one core: GFLOP per CPU-second of an n x n matmul in onnxruntime (its
    MLAS kernels, the ones the models run on), the best of five."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    spec = [helper.make_tensor_value_info(k, TensorProto.FLOAT, [n, n]) for k in "ABC"]
    node = helper.make_node("MatMul", ["A", "B"], ["C"])
    graph = helper.make_graph([node], "matmul", spec[:2], spec[2:])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    options = session_options(1)
    session = ort.InferenceSession(
        proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    return 2 * n**3 / _time(lambda: session.run(None, {"A": a, "B": a})) / 1e9


def scale(costs: Costs, target: str) -> Costs:
    """This machine's CPU-seconds → the target's seconds (see the module docstring)."""
    if target not in TARGETS:
        raise KtError(f"--target {target!r} is not one of {', '.join(TARGETS)}")
    cores = usable_cpus() if target == "here" else KAGGLE_CORES
    decode = {side: s / cores for side, s in costs.decode_s.items()}
    if target in ("here", "kaggle-cpu"):
        model = tuple(s / cores for s in costs.model_s)
        note = (
            f"CPU-seconds measured here / {cores} CPUs"
            if target == "here"
            else f"CPU-seconds measured here / Kaggle's {KAGGLE_CORES} cores"
        )
    else:
        rate = cpu_gflops()
        gpu = rate / (GPU_FP32_TFLOPS[target] * 1000)
        model = tuple(s * gpu for s in costs.model_s)
        note = (
            f"estimate: model CPU-seconds x {gpu:.4f} (this CPU's {rate:.0f} GFLOP/s per core / the "
            f"GPU's datasheet {GPU_FP32_TFLOPS[target]} TFLOPS), decoding on Kaggle's "
            f"{KAGGLE_CORES} cores"
        )
    return Costs(model, costs.sides, decode, target, note, costs.views)


def _time(fn, repeats: int = 5) -> float:
    """CPU-seconds of the cheapest of `repeats` calls after a warm-up (all of this process's threads:
    onnxruntime's intra-op pool included); the cheapest is the least disturbed by whatever else runs."""
    fn()  # warm up (allocations, the first run's graph set-up)
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def _model_seconds(paths: Sequence[Path], batch: int = 8, rounds: int = 5) -> dict[str, tuple]:
    """Per ONNX file: (CPU-seconds per image times its recorded views, its input side). The files run
    in turn, as kt predict runs an ensemble's members on each batch, so each pays for the caches the
    others evicted (3 resnet18 sessions in turn took 3.2x one session's time at 256 px)."""
    calls = {}
    for path in dict.fromkeys(str(p) for p in paths):
        model = load_model(path, provider="cpu")
        shape = (batch, len(model.meta["channels"]), model.size, model.size)
        x = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
        spec = model.meta_spec
        meta = np.zeros((batch, spec["width"]), np.float32) if spec else None
        views = len(tta.views(tta.recorded_tta([model.meta])))
        calls[path] = (lambda m=model, x=x, f=meta: m.run(x, f), views, model.size)
    best = dict.fromkeys(calls, float("inf"))
    for call, _, _ in calls.values():
        call()  # warm up (allocations, the first run's graph set-up)
    for _ in range(rounds):
        for path, (call, _, _) in calls.items():
            start = time.process_time()
            call()
            best[path] = min(best[path], time.process_time() - start)
    return {
        path: (best[path] / batch * views, size, views) for path, (_, views, size) in calls.items()
    }


def measure(member_files: Sequence[Sequence[Path]], image_paths: Sequence[Sequence[str]]) -> Costs:
    """CPU-seconds per image on this machine: each member's ONNX files (CPU provider, batches of 8 at
    the file's side, times its recorded views) and decoding + resizing `image_paths` at each side."""
    from ..data import images

    if not image_paths:
        raise KtError(
            "--budget needs a few of the competition's images to time decoding; none found"
        )
    times = _model_seconds([p for files in member_files for p in files])
    model_s = tuple(sum(times[str(p)][0] for p in files) for files in member_files)
    sides = tuple(max(times[str(p)][1] for p in files) for files in member_files)
    views = tuple(times[str(files[0])][2] for files in member_files)
    readable = []  # a broken image among the competition's must not stop the estimate
    for p in image_paths:
        try:
            images.read_image(p)
        except images.BadImage:
            continue
        readable.append(p)
    if not readable:
        raise KtError(
            f"--budget: none of the {len(image_paths)} competition images tried decodes, "
            f"e.g. {image_paths[0][0]}; check --data-dir"
        )
    sample = readable[:8]
    decode = {}
    for side in sorted(set(sides)):

        def one(s: int = side) -> list:
            return [images.fit_to(images.read_image(p, reduce_to=s), s) for p in sample]

        decode[side] = _time(one, repeats=3) / len(sample)
    return Costs(model_s, sides, decode, views=views)
