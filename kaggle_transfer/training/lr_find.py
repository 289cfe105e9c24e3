"""`kt lr-find` and `kt train --lr auto`: the learning-rate range test.

Smith, "Cyclical Learning Rates for Training Neural Networks" (2017), section 3.3, as fastai's
`Learner.lr_find` runs it: the rate grows exponentially from `start` to `end` over `steps` optimizer
steps on the run's own model, data, loss and optimizer; the loss is smoothed (an exponential average
with bias correction, beta 0.98) and the test stops once the smoothed loss passes 4x its minimum.
Two rates are suggested, as fastai's `SuggestionMethod` names them: `steep`, where the smoothed loss
falls fastest against log(lr), and `minimum / 10`, a decade below the lowest loss. `--lr auto` takes
`minimum / 10`: the conservative one, which stays below the divergence edge that `steep` can sit on
when the curve is noisy.

The test runs its own loop (one loss read per step, the rate set before each step) rather than a
package's: torch-lr-finder's `LRFinder` drives (inputs, labels) batches through its own AMP and
loss call, while kt's steps carry row metadata, mixed batches and the task's output shaping.
The trained weights are thrown away: the test only reads the losses.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import competitions, runs
from ..errors import KtError
from ..reports.plots import lr_curve
from .builders import build_loss, build_mixer, build_optimizer
from .dataset import seed_everything
from .loop import hold_lr, network, run_data, setting, step_loss


@dataclass(frozen=True)
class RangeTest:
    start: float = 1e-7
    end: float = 10.0
    steps: int = 200
    beta: float = 0.98  # the loss's smoothing (fastai's)
    diverge: float = 4.0  # stop once the smoothed loss passes this many times its minimum

    def rate(self, i: int) -> float:
        return self.start * (self.end / self.start) ** (i / max(self.steps - 1, 1))

    def check(self) -> None:
        if not 0 < self.start < self.end or self.steps < 5:
            raise KtError(
                f"the range test needs 0 < --start-lr < --end-lr and --steps >= 5 (got "
                f"{self.start:g}, {self.end:g}, {self.steps})"
            )


def sweep(step: Callable[[float], float], test: RangeTest = RangeTest()) -> pd.DataFrame:
    """Run `step(lr) -> loss` at each rate of the ramp; (lr, loss, smoothed) per step taken."""
    test.check()
    rows, average, lowest = [], 0.0, math.inf
    for i in range(test.steps):
        lr = test.rate(i)
        loss = float(step(lr))
        if not math.isfinite(loss):
            break  # diverged: the curve ends at the last finite loss
        average = test.beta * average + (1 - test.beta) * loss
        smoothed = average / (1 - test.beta ** (i + 1))
        rows.append({"lr": lr, "loss": loss, "smoothed": smoothed})
        lowest = min(lowest, smoothed)
        if smoothed > test.diverge * lowest:
            break
    return pd.DataFrame(rows, columns=["lr", "loss", "smoothed"])


def suggest(curve: pd.DataFrame) -> dict[str, float]:
    """The suggested rates of a curve: `steep` and `minimum / 10` (and the minimum itself)."""
    if len(curve) < 5:
        raise KtError(
            f"the range test diverged after {len(curve)} steps; lower --start-lr (or --amp off)"
        )
    lr, smoothed = curve["lr"].to_numpy(), curve["smoothed"].to_numpy()
    lowest = int(np.argmin(smoothed))
    # the steepest fall before the minimum, past the first tenth of the ramp: there the average
    # holds a handful of batches and its steps are the batches' noise (fastai v1 skipped 10 too)
    skip = min(max(len(curve) // 10, 3), lowest)
    falling = slice(skip, lowest + 1)
    steep = (
        float(lr[skip + int(np.argmin(np.gradient(smoothed[falling], np.log(lr[falling]))))])
        if lowest + 1 - skip >= 3
        else float(lr[lowest] / 10)
    )
    return {"steep": steep, "minimum_over_10": float(lr[lowest] / 10), "minimum": float(lr[lowest])}


def warnings(curve: pd.DataFrame, found: dict[str, float], test: RangeTest) -> list[str]:
    """What makes a suggestion untrustworthy, in words: a minimum at the end of the ramp (the loss
    never turned up: the best rate may lie beyond --end-lr) or a curve of few points."""
    out = []
    if found["minimum"] >= curve["lr"].iloc[-1] * 0.999 and len(curve) == test.steps:
        out.append(
            f"the loss was lowest at the end of the ramp ({found['minimum']:.1e}) and never "
            "turned up: raise --end-lr, or train with a rate you trust"
        )
    if len(curve) < 50:
        out.append(
            f"only {len(curve)} steps: the smoothed loss averages about 50, so the curve is "
            "mostly noise; use --steps 100 or more"
        )
    return out


def find_lr(
    cfg, inputs: dict[str, Any], out_dir: Path, *, test=RangeTest(), progress=True
) -> dict[str, Any]:
    """The range test on the run this config would train (fold cfg.fold's training rows; `inputs`
    as training.loop.run_data reads them). Writes lr_find.csv, lr_find.json and plots/lr_find.png
    into out_dir; returns lr_find.json."""
    step = _training_step(cfg, {**inputs, "meta_dir": None})
    curve = sweep(_with_bar(step, test.steps, progress), test)
    chosen = suggest(curve)
    result = {
        **chosen,
        "warnings": warnings(curve, chosen, test),
        "chosen": chosen["minimum_over_10"],
        "rule": "minimum_over_10",
        "steps_taken": len(curve),
        "start": test.start,
        "end": test.end,
        "competition": cfg.competition,
        "split": cfg.split or competitions.for_config(cfg).default_split,
        "fold": cfg.fold,
        "accum_steps": cfg.accum_steps,
        "arch": cfg.arch,
        "size": cfg.size,
        "optimizer": cfg.optimizer,
        "batch_size": cfg.batch_size,
    }
    runs.write_lr_find(out_dir, curve, result)
    lr_curve(curve, result, Path(out_dir) / runs.PLOTS / "lr_find.png")
    return result


def _training_step(cfg, inputs: dict[str, Any]) -> Callable[[float], float]:
    """`step(lr) -> loss`: one optimizer step at `lr` on the next training batch, as `fit` takes it
    (the run's model, loss, optimizer, mixing, autocast and metadata inputs)."""
    seed_everything(cfg.seed)
    s = setting(cfg)
    data, distill, meta_dim = run_data(cfg, s, inputs)
    model = network(cfg, s, meta_dim).train()
    optimizer = build_optimizer(model, cfg, decay_all=s.proto.decay_all)
    criterion = distill or build_loss(s.loss_name, s.task, cfg.label_smoothing)
    mixer = build_mixer(
        cfg.mix, prob=cfg.mix_prob, alpha=cfg.mix_alpha, task=s.task, loss=s.loss_name
    )
    scaler = torch.amp.GradScaler(s.device.type, enabled=s.dtype == torch.float16)
    batches = _endless(data.train_loader)

    def step(lr: float) -> float:
        """One optimizer step: --accum-steps batches, as training takes them."""
        hold_lr(optimizer, lr)
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(cfg.accum_steps):
            x, y, rows = next(batches)
            x, y = x.to(s.device), y.to(s.device)
            extra = () if data.meta_train is None else (data.meta_train[rows].to(s.device),)
            if mixer is not None:
                x, y = mixer(x, y)
            if s.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(s.device.type, dtype=s.dtype) if s.dtype else nullcontext():
                loss = step_loss(criterion, model(x, *extra), y, s.task)
            scaler.scale(loss / cfg.accum_steps).backward()
            total += float(loss.detach()) / cfg.accum_steps
        scaler.step(optimizer)
        scaler.update()
        return total

    return step


def _endless(loader):
    """The loader's batches, epoch after epoch (a small training set has fewer batches than steps)."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise KtError("the range test has no training batch; train on more rows")


def _with_bar(step: Callable[[float], float], steps: int, progress: bool):
    from tqdm.auto import tqdm

    bar = tqdm(total=steps, desc="lr range test", unit="step", disable=None if progress else True)

    def stepped(lr: float) -> float:
        loss = step(lr)
        bar.update()
        bar.set_postfix(lr=f"{lr:.1e}", loss=f"{loss:.4f}")
        return loss

    return stepped
