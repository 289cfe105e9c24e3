"""Calls per second of a function, with warm-up and CUDA synchronisation; shared by the benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable


def calls_per_s(fn: Callable[[], object], iters: int, cuda: bool = False, warmup: int = 1) -> float:
    """Warm-up calls first (graph optimisation, kernel choice, allocators), then `iters` timed calls."""
    import torch

    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    if cuda:
        torch.cuda.synchronize()
    return iters / (time.perf_counter() - t0)
