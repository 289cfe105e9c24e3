"""Weight averaging: SWA over a run's last epochs (`--set swa_epochs=K`), and `kt average` over the
best weights of finished runs of one network (a "model soup"; timm's avg_checkpoints averages a
run's top checkpoints the same way: every floating-point tensor is the mean of the inputs').

SWA (Izmailov et al. 2018) uses torch.optim.swa_utils: AveragedModel keeps the running mean of the
weights at the end of each of the last K epochs; BatchNorm statistics are then recomputed over the
training images (update_bn), because the mean of weights is a network no batch has passed through.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import competitions, protocol, runs
from ..config import keys_with
from ..errors import KtError
from ..files import copy_file, sha256, write_json
from . import checkpoints
from .builders import pick_device
from .evaluate import predict_raw
from .export import load_run_model
from .heldout import run_features

# what must agree between runs for their weights to be averaged and validated as one run
SAME = keys_with("same")


def mean_state(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of floating-point tensors (in float64, cast back); integer buffers such as
    BatchNorm's num_batches_tracked are taken from the first."""
    first = states[0]
    for i, state in enumerate(states[1:], start=1):
        if state.keys() != first.keys() or any(state[k].shape != first[k].shape for k in first):
            raise KtError(
                f"checkpoint {i + 1} has other tensors than the first; average runs of one network"
            )
    return {
        k: (
            torch.stack([s[k].double() for s in states]).mean(0).to(v.dtype)
            if v.is_floating_point()
            else v.clone()
        )
        for k, v in first.items()
    }


class Swa:
    """The SWA average of a run's weights over its last `cfg.swa_epochs` epochs."""

    def __init__(self, model: torch.nn.Module, epochs: int, swa_epochs: int):
        from torch.optim.swa_utils import AveragedModel

        if not 0 < swa_epochs <= epochs:
            raise KtError(
                f"--set swa_epochs={swa_epochs} must be between 1 and --epochs ({epochs})"
            )
        self.start = epochs - swa_epochs
        self.averaged = AveragedModel(model)

    @property
    def epochs_averaged(self) -> int:
        return int(self.averaged.n_averaged.item())

    def update(self, model: torch.nn.Module, epoch: int) -> None:
        if epoch >= self.start:
            self.averaged.update_parameters(model)

    def finish(
        self, loader, device: torch.device, steps: int, meta: torch.Tensor | None = None
    ) -> torch.nn.Module:
        """The averaged network with BatchNorm statistics recomputed over `steps` training batches."""
        net = self.averaged.module
        recompute_batchnorm(net, itertools.islice(loader, steps), device, meta)
        return net


def recompute_batchnorm(
    net: torch.nn.Module, batches, device: torch.device, meta: torch.Tensor | None = None
) -> None:
    """BatchNorm running statistics as the cumulative mean over `batches` of (images, _, rows), the
    algorithm of torch.optim.swa_utils.update_bn, which cannot pass a second input (the metadata)."""
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = {m: m.momentum for m in norms}
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average
    was_training = net.training
    net.train()
    with torch.no_grad():
        for x, _, rows in batches:
            net(x.to(device), *(() if meta is None else (meta[rows].to(device),)))
    for m in norms:
        m.momentum = momenta[m]
    net.train(was_training)


def _check_same(run_dirs: Sequence[Path]) -> list[Any]:
    cfgs = [runs.load_config(d) for d in run_dirs]
    for d, cfg in zip(run_dirs[1:], cfgs[1:], strict=True):
        for key in SAME:
            if getattr(cfg, key) != getattr(cfgs[0], key):
                raise KtError(
                    f"{d} has {key}={getattr(cfg, key)!r} but {run_dirs[0]} has {getattr(cfgs[0], key)!r}; "
                    "kt average needs runs of one network, input and validation fold"
                )
        comp = competitions.for_config(cfg)
        if (
            comp.task.trained_with(cfg.loss).num_outputs
            != comp.task.trained_with(cfgs[0].loss).num_outputs
        ):
            raise KtError(
                f"{d} was trained with loss {cfg.loss!r}, {run_dirs[0]} with {cfgs[0].loss!r}: "
                "their heads differ"
            )
    return cfgs


def _same_validation_rows(run_dirs: Sequence[Path]) -> set[str]:
    """The members' validation ids, compared (not assumed from the config): a member trained with
    --skip-bad-images or another split file validated on other rows, which another member trained on."""
    sets = []
    for d in run_dirs:
        oof = runs.load_oof(d)
        if oof is None:
            raise KtError(f"{d} has no {runs.OOF}; pass finished run folders made by kt train")
        sets.append(set(map(str, oof["ids"])))
    for d, ids in zip(run_dirs[1:], sets[1:], strict=True):
        if ids != sets[0]:
            raise KtError(
                f"{d} validated on other rows than {run_dirs[0]} ({len(ids ^ sets[0])} differ); kt "
                "average needs runs validated on the same rows, or the soup is scored on its own "
                "training rows"
            )
    return sets[0]


def average_runs(
    run_dirs: Sequence[str | Path],
    *,
    data_dir: str | Path | None = None,
    runs_root: str | Path | None = None,
    label: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """A new run folder whose best.pt is the mean of the runs' best.pt, validated on their shared fold
    (oof.npz, metrics.json), ready for kt export. Returns its metrics."""
    run_dirs = [Path(d) for d in run_dirs]
    if len(run_dirs) < 2:
        raise KtError("kt average needs two or more run folders")
    for d in run_dirs:
        runs.require_finished(d)
        if not (d / runs.BEST).is_file():
            raise KtError(f"{d / runs.BEST} not found; pass finished run folders made by kt train")
    cfgs = _check_same(run_dirs)
    val_ids = _same_validation_rows(run_dirs)
    cfg = cfgs[0]
    comp = competitions.for_config(cfg)
    info = runs.read_run_info(run_dirs[0])
    data_dir = Path(data_dir or info["data_dir"])
    state = mean_state([checkpoints.load(d / runs.BEST) for d in run_dirs])
    sources = [
        {
            "run": str(d.resolve()),
            "sha256": sha256(d / runs.BEST),
            "score": (runs.read_metrics(d) or {}).get("score"),
        }
        for d in run_dirs
    ]
    out = runs.new_run_dir(
        runs.runs_root(runs_root), comp.name, label or f"avg{len(run_dirs)}_{cfg.arch}@{cfg.size}"
    )
    try:
        runs.save_config(out, cfg)
        runs.write_run_info(
            out,
            {
                **info,
                "data_dir": str(data_dir.resolve()),
                "averaged_from": sources,
                "preprocess": protocol.for_run(cfg, comp).describe(),
                "init": None,
            },
        )
        checkpoints.save(state, out / runs.BEST)
        # the first run's metadata encoding (same training rows)
        if (run_dirs[0] / runs.TABULAR).is_file():
            copy_file(run_dirs[0] / runs.TABULAR, out / runs.TABULAR)
        score, fitted, n_val = _validate(out, cfg, data_dir, info, progress=progress)
        got = set(map(str, runs.load_oof(out)["ids"]))
        # the data changed since the runs trained (skipped images, a new split file)
        if got != val_ids:
            raise KtError(
                f"the averaged run validates on {len(got)} rows but its members on {len(val_ids)} "
                f"({len(got ^ val_ids)} differ); the data folder changed since they trained: average "
                "runs trained on the same data"
            )
        result = {
            "competition": comp.name,
            "metric": comp.task.metric,
            "score": score,
            "fitted": fitted,
            "best_epoch": None,
            "averaged_from": sources,
            "n_val": n_val,
            "loss": cfg.loss or comp.task.default_loss,
            "parameters": int(sum(v.numel() for v in state.values() if v.is_floating_point())),
        }
        write_json(out / runs.METRICS, result)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # a failed average leaves no half-made run behind
        raise
    return {**result, "run_dir": str(out)}


def _validate(
    run_dir: Path, cfg, data_dir: Path, info: dict[str, Any], *, progress: bool
) -> tuple[float, dict[str, Any], int]:
    """Score run_dir's best.pt on the validation rows of its fold; write oof.npz."""
    from torch.utils.data import DataLoader

    from .dataset import ImageDataset
    from .tables import load_tables

    comp = competitions.for_config(cfg)
    task = comp.task.trained_with(cfg.loss)
    table = load_tables(
        cfg,
        data_dir,
        external_dirs=info.get("external_dirs") or {},
        skip_bad_images=bool(info.get("skip_bad_images")),
    )
    rows = table[table["fold"] == cfg.fold]
    channels = comp.select_channels(protocol.channels(cfg, comp))
    dataset = ImageDataset(
        rows,
        cfg.size,
        channels=channels,
        crop=cfg.fundus_crop,
        resize=protocol.for_run(cfg, comp).resize,
    )
    model, _ = load_run_model(run_dir)
    device = pick_device(cfg.device)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, num_workers=min(cfg.workers, 4))
    raw = predict_raw(
        model.to(device),
        loader,
        device,
        None,
        channels_last=False,
        meta=run_features(run_dir, rows),
    )
    if not np.isfinite(raw).all():
        raise KtError(
            "the averaged weights give NaN or inf outputs; the runs are too far apart to average"
        )
    y = task.targets(rows["target"])
    fitted = task.fit(raw, y)
    runs.save_oof(run_dir, rows["id"], raw, y, fitted=fitted)
    return float(task.score(y, raw, fitted)), fitted, len(rows)
