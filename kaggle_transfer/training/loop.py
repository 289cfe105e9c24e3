"""`fit()`: one readable training loop. No callbacks; read it top to bottom.

Writes into the run folder: config.yaml, run.json, history.csv, metrics.json, oof.npz, best.pt,
last.pt (for --resume) and plots/learning_curve.png.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn as nn  # noqa: F401 - type hints below
from tqdm.auto import tqdm

from .. import competitions, protocol, runs
from ..config import RunConfig
from ..data.splits import HELD_OUT
from ..errors import KtError
from ..tasks import Task
from . import distributed, tracking
from .augment import build_train_transform
from .averaging import Swa
from .builders import (
    amp_dtype,
    build_loss,
    build_mixer,
    build_optimizer,
    build_scheduler,
    frozen_epochs,
    pick_device,
    set_backbone_trainable,
    steady_heap,
    trim_heap,
)
from .checkpoints import checkpoint, restore, save, warm_start
from .dataset import ImageDataset, make_loader, sample_seed, seed_everything
from .evaluate import predict_raw  # noqa: F401 - also this module's API
from .models import build_model
from .summary import finish, record_start
from .tables import load_tables, meta_inputs
from .targets import training_targets

SYNC_EVERY = (
    50  # training steps between two reads of the loss by the host (each read waits for the GPU)
)


def _check_finite(nonfinite: torch.Tensor, epoch: int, step: int) -> None:
    if int(nonfinite.item()):
        raise KtError(
            f"the training loss became NaN or inf by epoch {epoch + 1} step {step + 1}; lower --lr "
            "or use --amp off"
        )


def _train_epoch(
    bar,
    epoch: int,
    parts: dict[str, Any],
    state: dict[str, Any],
    *,
    forward,
    criterion,
    mixer,
    task: Task,
    cfg: RunConfig,
    device: torch.device,
    dtype,
    channels_last: bool,
    steps: int,
    meta: torch.Tensor | None = None,
    lr_hold: float | None = None,
) -> tuple[torch.Tensor, int]:
    """One epoch of optimizer steps. Returns (the loss summed on the device, images seen)."""
    model, optimizer, scheduler, scaler, ema = (
        parts[k] for k in ("model", "optimizer", "scheduler", "scaler", "ema")
    )
    seen = 0
    hold = (
        [] if lr_hold is None else optimizer.param_groups
    )  # SWA's window with --set swa_lr: a constant rate
    for group in hold:
        group["lr"] = lr_hold * group.get("lr_scale", 1.0)
    loss_sum, nonfinite = (
        torch.zeros((), device=device),
        torch.zeros((), device=device, dtype=torch.int64),
    )
    optimizer.zero_grad(set_to_none=True)
    for step, (x, y, rows) in enumerate(bar):
        if step >= steps:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        extra = (
            () if meta is None else (meta[rows].to(device, non_blocking=True),)
        )  # the rows' metadata
        if mixer is not None and epoch < cfg.epochs - cfg.mix_off_epochs:
            x, y = mixer(x, y)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype) if dtype else nullcontext():
            loss = _step_loss(criterion, forward(x, *extra), y, task)
        scaler.scale(loss / cfg.accum_steps).backward()
        if (step + 1) % cfg.accum_steps == 0 or step + 1 == steps:
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            state["updates"] += 1
            if scheduler is not None:
                scheduler.step_update(state["updates"])
            for group in hold:  # after the schedule's update: the held rate wins
                group["lr"] = lr_hold * group.get("lr_scale", 1.0)
            if ema is not None:
                ema.update(model)
        # summed on the device: the host reads the loss every SYNC_EVERY steps, never once a step
        loss_sum, nonfinite = (
            loss_sum + loss.detach().float(),
            nonfinite + (~torch.isfinite(loss.detach())),
        )
        seen += len(x)
        if (step + 1) % SYNC_EVERY == 0 or step + 1 == steps:
            _check_finite(nonfinite, epoch, step)
            bar.set_postfix(
                loss=f"{loss_sum.item() / (step + 1):.4f}",
                lr=f"{optimizer.param_groups[-1]['lr']:.2e}",
            )
    return loss_sum, seen


def _shape(out: torch.Tensor, task: Task) -> torch.Tensor:
    return out.squeeze(1) if task.num_outputs == 1 else out


def _step_loss(
    criterion: nn.Module, out: torch.Tensor, y: torch.Tensor, task: Task
) -> torch.Tensor:
    hard = task.classifies and y.ndim == 1  # class indices; mixed batches bring probabilities
    return criterion(_shape(out, task).float(), y.long() if hard else y.float())


def _loaders(
    cfg: RunConfig,
    train_rows: pd.DataFrame,
    val_rows: pd.DataFrame,
    targets,
    *,
    channels: list[int],
    proto,
    generator: torch.Generator,
    pin: bool,
):
    """(training loader, validation loader over this rank's shard, the shard's row indices)."""
    transform = build_train_transform(cfg.augment, cfg.size, len(channels), flips=proto.flips)
    train_ds = ImageDataset(
        train_rows,
        cfg.size,
        targets=targets[0],
        transform=transform,
        channels=channels,
        crop=cfg.fundus_crop,
        seed=cfg.seed,
    )
    sampler = None
    if distributed.active():  # each rank trains on its own shuffled share of the rows
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(train_ds, shuffle=True, seed=cfg.seed, drop_last=True)
    train_loader = make_loader(
        train_ds, cfg.batch_size, cfg.workers, True, generator=generator, pin=pin, sampler=sampler
    )
    val_ds = ImageDataset(
        val_rows,
        cfg.size,
        targets=targets[1],
        channels=channels,
        crop=cfg.fundus_crop,
        resize=proto.resize,
    )
    val_shard = distributed.shard(len(val_ds))
    val_loader = make_loader(
        torch.utils.data.Subset(val_ds, val_shard.tolist()),
        cfg.batch_size,
        cfg.workers,
        False,
        generator=None,
        pin=pin,
    )
    return train_loader, val_loader, val_shard


def fit(
    cfg: RunConfig,
    run_dir: Path,
    data_dir: Path,
    *,
    external_dirs: dict[str, str] | None = None,
    resume: bool = False,
    skip_bad_images: bool = False,
    progress: bool = True,
    train_table: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Train one model on one fold; keep the best epoch by the competition metric. Returns metrics.json."""
    run_dir, external_dirs = Path(run_dir), dict(external_dirs or {})
    comp = competitions.for_config(cfg)
    task = comp.task.trained_with(cfg.loss)  # ordinal + ce: one logit per grade
    proto = protocol.for_run(cfg, comp)
    channels = comp.select_channels(protocol.channels(cfg, comp))
    loss_name = cfg.loss or task.default_loss
    main = distributed.is_main()
    if main:
        record_start(cfg, run_dir, data_dir, external_dirs, skip_bad_images, proto)
    tracker = tracking.start(
        cfg, run_dir, resume=resume, main=main
    )  # --track mlflow; a no-op otherwise
    steady_heap()  # batch-sized CPU buffers mapped and unmapped, not left resident on the heap
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    if device.type == "cuda" and distributed.active():
        device = torch.device("cuda", distributed.local_rank())
    dtype = amp_dtype(cfg.amp, device)
    channels_last = cfg.channels_last and device.type in (
        "cuda",
        "cpu",
    )  # cuDNN and oneDNN both gain

    table = load_tables(
        cfg,
        data_dir,
        external_dirs=external_dirs,
        skip_bad_images=skip_bad_images,
        train_table=train_table,
    )
    val_rows = table[table["fold"] == cfg.fold]
    train_rows = table[(table["fold"] != cfg.fold) & (table["fold"] != HELD_OUT)]
    if len(val_rows) == 0 or len(train_rows) == 0:
        raise KtError(
            f"fold {cfg.fold} leaves an empty train or validation set ({len(train_rows)}/{len(val_rows)})"
        )
    y_val = task.targets(val_rows["target"])
    y_train, distill = training_targets(
        cfg, comp, task, train_rows, loss_name
    )  # soft labels, teacher targets
    meta_dim, meta_train, meta_val = meta_inputs(
        cfg, comp, train_rows, val_rows, run_dir if main else None
    )
    generator = torch.Generator().manual_seed(cfg.seed)
    train_loader, val_loader, val_shard = _loaders(
        cfg,
        train_rows,
        val_rows,
        (y_train, y_val),
        channels=channels,
        proto=proto,
        generator=generator,
        pin=device.type == "cuda",
    )

    model = build_model(
        cfg.arch,
        task.num_outputs,
        pool=cfg.pool,
        dropout=cfg.dropout,
        in_chans=len(channels),
        pretrained=cfg.pretrained,
        weights=cfg.weights,
        size=cfg.size,
        bgr=proto.bgr,
        imagenet_stats=proto.imagenet_stats,
        meta_dim=meta_dim,
    ).to(device)
    if cfg.init and not resume:  # a warm start (progressive resizing: 384 px, then 512 px)
        warm_start(model, cfg.init, cfg.arch)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    from timm.utils import ModelEmaV3

    optimizer = build_optimizer(model, cfg, decay_all=proto.decay_all)
    if len(train_loader) == 0:
        raise KtError(
            f"no training batch: {len(train_rows)} training rows over {distributed.world_size()} "
            "process(es); train on more rows or with fewer processes (torchrun --nproc_per_node)"
        )
    steps_per_epoch = min(len(train_loader), cfg.max_steps or len(train_loader))
    scheduler = build_scheduler(
        cfg, optimizer, -(-steps_per_epoch // cfg.accum_steps), per_epoch=proto.per_epoch
    )
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    ema = ModelEmaV3(model, decay=cfg.ema_decay) if cfg.ema else None
    criterion = build_loss(loss_name, task, cfg.label_smoothing)
    mixer = build_mixer(cfg.mix, prob=cfg.mix_prob, alpha=cfg.mix_alpha, task=task, loss=loss_name)
    forward = model
    if distributed.active():
        from torch.nn.parallel import DistributedDataParallel

        # frozen epochs leave backbone parameters without gradients: DDP must be told to expect that
        forward = DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=frozen_epochs(cfg) > 0,
        )
    forward = torch.compile(forward) if cfg.compile else forward
    swa = Swa(model, cfg.epochs, cfg.swa_epochs) if cfg.swa_epochs else None
    parts = {
        "model": model,
        "optimizer": optimizer,
        "scheduler": scheduler,
        "scaler": scaler,
        "ema": ema,
        "swa": swa.averaged if swa else None,
    }

    def validate(net: nn.Module, when: str) -> tuple[np.ndarray, float, dict[str, Any], float]:
        """(raw outputs, loss, fitted thresholds, score) on the validation rows, gathered over ranks."""
        raw = distributed.gather_rows(
            val_shard,
            predict_raw(net, val_loader, device, dtype, meta=meta_val, channels_last=channels_last),
            len(val_rows),
        )
        if not np.isfinite(
            raw
        ).all():  # a diverged model must not be kept as "best" with a score of 0
            raise KtError(
                f"validation outputs became NaN or inf {when}; lower --lr (or --amp off) and start again"
            )
        fitted = task.fit(raw, y_val)
        return (
            raw,
            float(_step_loss(criterion, torch.from_numpy(raw), torch.from_numpy(y_val), task)),
            fitted,
            task.score(y_val, raw, fitted),
        )

    def keep(net: nn.Module, raw: np.ndarray, fitted: dict[str, Any]) -> None:
        """The best weights so far and their validation outputs."""
        if main:
            save(net.state_dict(), run_dir / runs.BEST)
            runs.save_oof(run_dir, val_rows["id"], raw, y_val, fitted=fitted)

    state = {
        "epoch": 0,
        "best_score": -math.inf,
        "best_epoch": -1,
        "history": [],
        "bad_epochs": 0,
        "updates": 0,
    }
    if resume:
        state = restore(run_dir / runs.LAST, device, parts)

    started, frozen = time.time(), frozen_epochs(cfg)
    for epoch in range(state["epoch"], cfg.epochs):
        generator.manual_seed(cfg.seed * 1000 + epoch)  # same shuffle after a resume
        # dropout / drop-path masks: a function of (seed, epoch, rank), so a resumed epoch draws the
        # masks the uninterrupted run drew, and ranks do not share masks
        torch.manual_seed(sample_seed(cfg.seed, epoch, distributed.rank()))
        np.random.seed(
            sample_seed(cfg.seed, epoch, distributed.rank()) % 2**32
        )  # timm's Mixup draws here
        train_loader.sampler.set_epoch(epoch)  # (and the DistributedSampler's shuffle)
        model.train()
        set_backbone_trainable(model, epoch >= frozen)
        t0 = time.time()
        bar = tqdm(
            train_loader,
            total=steps_per_epoch,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            unit="batch",
            disable=not progress,
            leave=False,
            dynamic_ncols=True,
        )
        loss_sum, seen = _train_epoch(
            bar,
            epoch,
            parts,
            state,
            forward=forward,
            mixer=mixer,
            task=task,
            criterion=criterion if distill is None else distill,
            cfg=cfg,
            device=device,
            dtype=dtype,
            channels_last=channels_last,
            steps=steps_per_epoch,
            meta=meta_train,
            lr_hold=cfg.swa_lr if swa is not None and epoch >= swa.start else None,
        )
        train_time = time.time() - t0
        if scheduler is not None:
            scheduler.step(epoch + 1)

        if swa is not None:
            swa.update(model, epoch)
        eval_model = ema.module if ema is not None else model
        raw, val_loss, fitted, score = validate(eval_model, f"at epoch {epoch + 1}")
        row = {
            "epoch": epoch + 1,
            "train_loss": loss_sum.item() / max(steps_per_epoch, 1),
            "val_loss": val_loss,
            "score": score,
            "lr": optimizer.param_groups[-1]["lr"],
            "train_images_per_s": seen * distributed.world_size() / max(train_time, 1e-9),
            "epoch_s": time.time() - t0,
            "frozen": epoch < frozen,
        }
        state["history"].append(row)
        tracker.epoch(row, epoch + 1)
        if progress and main:
            tqdm.write(
                f"epoch {epoch + 1}/{cfg.epochs}  loss {row['train_loss']:.4f}  val_loss {val_loss:.4f}  "
                f"{task.metric} {score:.4f}  {row['train_images_per_s']:.1f} img/s"
            )
        if score > state["best_score"]:
            state.update(best_score=score, best_epoch=epoch + 1, bad_epochs=0)
            keep(eval_model, raw, fitted)
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch + 1
        if main:
            runs.write_history(run_dir, pd.DataFrame(state["history"]))
            checkpoint(run_dir / runs.LAST, parts, state)
        trim_heap()  # freed activations back to the OS: the next epoch's peak does not creep up
        if cfg.patience and state["bad_epochs"] >= cfg.patience:
            break
    if (
        swa is not None and swa.epochs_averaged
    ):  # SWA's weights, BatchNorm recomputed, kept when they score higher
        net = swa.finish(train_loader, device, steps_per_epoch, meta=meta_train)
        raw, _, fitted, score = validate(net, "for the SWA weights")
        state["swa"] = {
            "epochs_averaged": swa.epochs_averaged,
            "score": score,
            "selected": cfg.swa_keep == "always" or score > state["best_score"],
        }
        if main:
            save(net.state_dict(), run_dir / runs.SWA)
        if state["swa"]["selected"]:
            state["best_score"] = score
            keep(net, raw, fitted)
    if not main:
        return {
            "score": state["best_score"],
            "best_epoch": state["best_epoch"],
            "rank": distributed.rank(),
        }
    result = finish(
        run_dir,
        comp,
        table,
        train_rows,
        val_rows=val_rows,
        state=state,
        loss_name=loss_name,
        device=device,
        dtype=dtype,
        started=started,
        parameters=sum(p.numel() for p in model.parameters()),
    )
    tracker.finish(run_dir, result)
    return result
