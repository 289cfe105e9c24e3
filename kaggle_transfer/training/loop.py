"""`fit()`: one readable training loop. No callbacks; read it top to bottom.

Writes into the run folder: config.yaml, run.json, history.csv, metrics.json, oof.npz, best.pt,
last.pt (for --resume) and plots/learning_curve.png.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn as nn  # noqa: F401 - type hints below
from tqdm.auto import tqdm

from .. import competitions, config, protocol, runs
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
    trim_heap,
)
from .checkpoints import checkpoint, restore, save, warm_start
from .dataset import ImageDataset, make_loader, sample_seed, seed_everything
from .evaluate import predict_raw  # noqa: F401 - also this module's API
from .models import Backbone, build_model, head_of
from .summary import finish, record_start
from .tables import load_tables, meta_inputs
from .targets import training_targets

# training steps between two reads of the loss by the host (each read waits for the GPU)
SYNC_EVERY = 50


@dataclass
class Trainee:
    """What the optimisation changes; every part is saved in last.pt for --resume."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any  # timm's scheduler, or None
    scaler: torch.amp.GradScaler
    ema: Any = None  # timm's ModelEmaV3 with --ema
    swa: Any = None  # the SWA running average with --set swa_epochs=K

    def parts(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class LoopState:
    """Where the loop stands; saved in last.pt, so a resumed run continues exactly."""

    epoch: int = 0
    best_score: float = -math.inf
    best_epoch: int = -1
    history: list[dict[str, Any]] = field(default_factory=list)
    bad_epochs: int = 0
    updates: int = 0
    swa: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> LoopState:
        return cls(**{f.name: saved[f.name] for f in fields(cls) if f.name in saved})


@dataclass(frozen=True)
class Stepper:
    """How one batch becomes one (accumulated) optimizer step."""

    forward: Any  # the model, or its DDP / compiled wrapper
    criterion: Any
    mixer: Any  # CutMix/MixUp, or None
    task: Task
    device: torch.device
    dtype: Any  # the autocast dtype, or None
    channels_last: bool
    accum_steps: int
    steps: int  # optimizer-visible batches per epoch (--set max_steps caps them)


@dataclass
class RunData:
    """A run's rows and loaders, fixed for the whole run."""

    table: pd.DataFrame
    train_rows: pd.DataFrame
    val_rows: pd.DataFrame
    y_val: np.ndarray
    train_loader: Any
    val_loader: Any
    val_shard: np.ndarray
    generator: torch.Generator
    meta_train: torch.Tensor | None = None
    meta_val: torch.Tensor | None = None


def _check_finite(nonfinite: torch.Tensor, epoch: int, step: int) -> None:
    if int(nonfinite.item()):
        raise KtError(
            f"the training loss became NaN or inf by epoch {epoch + 1} step {step + 1}; lower --lr "
            "or use --amp off"
        )


def hold_lr(optimizer: torch.optim.Optimizer, lr: float | None) -> None:
    """SWA's window with --set swa_lr: a constant rate (each group keeps its layer-decay scale)."""
    if lr is not None:
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)


def _train_epoch(
    bar,
    epoch: int,
    t: Trainee,
    state: LoopState,
    step: Stepper,
    *,
    mix: bool,
    meta=None,
    lr_hold=None,
) -> tuple[torch.Tensor, int]:
    """One epoch of optimizer steps. Returns (the loss summed on the device, images seen)."""
    seen = 0
    hold_lr(t.optimizer, lr_hold)
    loss_sum = torch.zeros((), device=step.device)
    nonfinite = torch.zeros((), device=step.device, dtype=torch.int64)
    t.optimizer.zero_grad(set_to_none=True)
    for i, (x, y, rows) in enumerate(bar):
        if i >= step.steps:
            break
        # the batch, its rows' metadata, mixed and laid out as the model runs fastest
        x, y = x.to(step.device, non_blocking=True), y.to(step.device, non_blocking=True)
        extra = () if meta is None else (meta[rows].to(step.device, non_blocking=True),)
        if mix and step.mixer is not None:
            x, y = step.mixer(x, y)
        if step.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        # forward under autocast, backward scaled; the optimizer steps every accum_steps batches
        with torch.autocast(step.device.type, dtype=step.dtype) if step.dtype else nullcontext():
            loss = step_loss(step.criterion, step.forward(x, *extra), y, step.task)
        t.scaler.scale(loss / step.accum_steps).backward()
        if (i + 1) % step.accum_steps == 0 or i + 1 == step.steps:
            t.scaler.step(t.optimizer)
            t.scaler.update()
            t.optimizer.zero_grad(set_to_none=True)
            state.updates += 1
            if t.scheduler is not None:
                t.scheduler.step_update(state.updates)
            hold_lr(t.optimizer, lr_hold)  # after the schedule's update: the held rate wins
            if t.ema is not None:
                t.ema.update(t.model)
        # summed on the device: the host reads the loss every SYNC_EVERY steps, never once a step
        loss_sum = loss_sum + loss.detach().float()
        nonfinite = nonfinite + (~torch.isfinite(loss.detach()))
        seen += len(x)
        if (i + 1) % SYNC_EVERY == 0 or i + 1 == step.steps:
            _check_finite(nonfinite, epoch, i)
            lr = t.optimizer.param_groups[-1]["lr"]
            bar.set_postfix(loss=f"{loss_sum.item() / (i + 1):.4f}", lr=f"{lr:.2e}")
    return loss_sum, seen


def _shape(out: torch.Tensor, task: Task) -> torch.Tensor:
    return out.squeeze(1) if task.num_outputs == 1 else out


def step_loss(criterion: nn.Module, out: torch.Tensor, y: torch.Tensor, task: Task) -> torch.Tensor:
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
        train_ds,
        cfg.batch_size,
        cfg.workers,
        True,
        generator=generator,
        pin=pin,
        sampler=sampler,
        keep_last=proto.keeps_last_batch,
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


@dataclass(frozen=True)
class Setting:
    """What a config trains and where: the adapter, the task as trained, the protocol's choices."""

    comp: Any
    task: Task
    proto: Any
    channels: list[int]
    loss_name: str
    device: torch.device
    dtype: Any  # the autocast dtype, or None
    channels_last: bool


def setting(cfg: RunConfig) -> Setting:
    comp = competitions.for_config(cfg)
    task = comp.task.trained_with(cfg.loss)  # ordinal + ce: one logit per grade
    device = pick_device(cfg.device)
    if device.type == "cuda" and distributed.active():
        device = torch.device("cuda", distributed.local_rank())
    return Setting(
        comp,
        task,
        protocol.for_run(cfg, comp),
        comp.select_channels(protocol.channels(cfg, comp)),
        cfg.loss or task.default_loss,
        device,
        amp_dtype(protocol.amp(cfg), device),
        cfg.channels_last and device.type in ("cuda", "cpu"),  # cuDNN, oneDNN both gain
    )


def network(cfg: RunConfig, s: Setting, meta_dim: int, *, warm: bool = True) -> nn.Module:
    """The model on its device: the backbone, kt's head, a warm start from --init when `warm`."""
    model = build_model(
        cfg.arch,
        s.task.num_outputs,
        head=head_of(cfg, s.task, meta_dim),
        in_chans=len(s.channels),
        backbone=Backbone(cfg.pretrained, cfg.weights, cfg.drop_path),
        size=cfg.size,
        proto=s.proto,
    ).to(s.device)
    if cfg.init and warm:  # a warm start (progressive resizing: 384 px, then 512 px)
        warm_start(model, cfg.init, cfg.arch)
    if s.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def run_data(cfg: RunConfig, s: Setting, inputs: dict[str, Any]):
    """The run's rows split into training and validation, their targets and loaders; the
    distillation criterion (or None) and the width of the metadata input."""
    comp, task, proto, channels, pin = s.comp, s.task, s.proto, s.channels, s.device.type == "cuda"
    table = load_tables(
        cfg,
        inputs["data_dir"],
        external_dirs=inputs["external_dirs"],
        skip_bad_images=inputs["skip_bad_images"],
        train_table=inputs["train_table"],
    )
    val_rows = table[table["fold"] == cfg.fold]
    train_rows = table[(table["fold"] != cfg.fold) & (table["fold"] != HELD_OUT)]
    if len(val_rows) == 0 or len(train_rows) == 0:
        raise KtError(
            f"fold {cfg.fold} leaves an empty train or validation set "
            f"({len(train_rows)}/{len(val_rows)})"
        )
    y_val = task.targets(val_rows["target"])
    # soft labels, teacher targets; the metadata columns beside the image (--set meta=true)
    y_train, distill = training_targets(cfg, comp, task, train_rows, s.loss_name)
    meta_dim, meta_train, meta_val = meta_inputs(
        cfg, comp, train_rows, val_rows, inputs["meta_dir"]
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
        pin=pin,
    )
    data = RunData(
        table,
        train_rows,
        val_rows,
        y_val,
        train_loader,
        val_loader,
        val_shard,
        generator,
        meta_train,
        meta_val,
    )
    return data, distill, meta_dim


def _trainee(cfg: RunConfig, model: nn.Module, data: RunData, *, proto, dtype, device) -> Trainee:
    """The optimizer, schedule, scaler and weight averages around the network."""
    from timm.utils import ModelEmaV3

    optimizer = build_optimizer(model, cfg, decay_all=proto.decay_all)
    if len(data.train_loader) == 0:
        raise KtError(
            f"no training batch: {len(data.train_rows)} training rows over "
            f"{distributed.world_size()} process(es); train on more rows or with fewer processes "
            "(torchrun --nproc_per_node)"
        )
    steps = _steps_per_epoch(cfg, data)
    scheduler = build_scheduler(
        cfg, optimizer, -(-steps // cfg.accum_steps), per_epoch=proto.per_epoch
    )
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    ema = ModelEmaV3(model, decay=cfg.ema_decay) if cfg.ema else None
    return Trainee(model, optimizer, scheduler, scaler, ema)


def _steps_per_epoch(cfg: RunConfig, data: RunData) -> int:
    return min(len(data.train_loader), cfg.max_steps or len(data.train_loader))


def _forward(cfg: RunConfig, model: nn.Module, device: torch.device):
    """The model as the steps call it: wrapped for DistributedDataParallel and torch.compile."""
    forward = model
    if distributed.active():
        from torch.nn.parallel import DistributedDataParallel

        # frozen epochs leave backbone parameters without gradients: DDP must be told to expect that
        forward = DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=frozen_epochs(cfg) > 0,
        )
    return torch.compile(forward) if cfg.compile else forward


@dataclass
class FoldRun:
    """One fold's fixed context: what every epoch, validation and the best-so-far keeping read."""

    cfg: RunConfig
    run_dir: Path
    main: bool  # rank 0 writes every file
    task: Task
    criterion: Any  # the plain loss: validation is scored without distillation
    data: RunData
    stepper: Stepper
    swa: Swa | None
    tracker: Any
    progress: bool

    def validate(
        self, net: nn.Module, when: str
    ) -> tuple[np.ndarray, float, dict[str, Any], float]:
        """(raw outputs, loss, fitted thresholds, score) on the validation rows, gathered over
        ranks."""
        s, data = self.stepper, self.data
        out = predict_raw(
            net,
            data.val_loader,
            s.device,
            s.dtype,
            meta=data.meta_val,
            channels_last=s.channels_last,
        )
        raw = distributed.gather_rows(data.val_shard, out, len(data.val_rows))
        if not np.isfinite(raw).all():  # a diverged model must not be kept as "best" with a score 0
            raise KtError(
                f"validation outputs became NaN or inf {when}; lower --lr (or --amp off) and start "
                "again"
            )
        fitted = self.task.fit(raw, data.y_val)
        y = torch.from_numpy(data.y_val)
        loss = step_loss(self.criterion, torch.from_numpy(raw), y, self.task)
        return raw, float(loss), fitted, self.task.score(data.y_val, raw, fitted)

    def keep(self, net: nn.Module, raw: np.ndarray, fitted: dict[str, Any]) -> None:
        """The best weights so far and their validation outputs."""
        if self.main:
            save(net.state_dict(), self.run_dir / runs.BEST)
            runs.save_oof(
                self.run_dir, self.data.val_rows["id"], raw, self.data.y_val, fitted=fitted
            )


def _epoch(run: FoldRun, t: Trainee, state: LoopState, epoch: int) -> None:
    """Train one epoch, validate, record it, keep the weights when they are the best so far."""
    cfg, data, stepper, frozen = run.cfg, run.data, run.stepper, frozen_epochs(run.cfg)
    # the epoch's randomness: the shuffle, and dropout / drop-path masks, are functions of
    # (seed, epoch, rank), so a resumed epoch draws what the uninterrupted run drew
    data.generator.manual_seed(cfg.seed * 1000 + epoch)
    torch.manual_seed(sample_seed(cfg.seed, epoch, distributed.rank()))
    np.random.seed(sample_seed(cfg.seed, epoch, distributed.rank()) % 2**32)  # timm's Mixup
    data.train_loader.sampler.set_epoch(epoch)  # (and the DistributedSampler's shuffle)
    t.model.train()
    set_backbone_trainable(t.model, epoch >= frozen)

    # train
    t0 = time.time()
    bar = tqdm(
        data.train_loader,
        total=stepper.steps,
        desc=f"epoch {epoch + 1}/{cfg.epochs}",
        unit="batch",
        disable=None
        if run.progress
        else True,  # None: no bar when stderr is not a terminal (a log)
        leave=False,
        dynamic_ncols=True,
    )
    hold = cfg.swa_lr if run.swa is not None and epoch >= run.swa.start else None
    loss_sum, seen = _train_epoch(
        bar,
        epoch,
        t,
        state,
        stepper,
        meta=data.meta_train,
        mix=epoch < cfg.epochs - cfg.mix_off_epochs,
        lr_hold=hold,
    )
    train_time = time.time() - t0
    if t.scheduler is not None:
        t.scheduler.step(epoch + 1)
    if run.swa is not None:
        run.swa.update(t.model, epoch)

    # validate (the EMA weights with --ema), record, keep the best
    eval_model = t.ema.module if t.ema is not None else t.model
    raw, val_loss, fitted, score = run.validate(eval_model, f"at epoch {epoch + 1}")
    row = {
        "epoch": epoch + 1,
        "train_loss": loss_sum.item() / max(stepper.steps, 1),
        "val_loss": val_loss,
        "score": score,
        "lr": t.optimizer.param_groups[-1]["lr"],
        "train_images_per_s": seen * distributed.world_size() / max(train_time, 1e-9),
        "epoch_s": time.time() - t0,
        "frozen": epoch < frozen,
    }
    state.history.append(row)
    run.tracker.epoch(row, epoch + 1)
    if run.main:  # one plain line per epoch, in a terminal and in a redirected log alike
        tqdm.write(_epoch_line(row, cfg.epochs, run.task.metric, state.history))
    if score > state.best_score:
        state.best_score, state.best_epoch, state.bad_epochs = score, epoch + 1, 0
        run.keep(eval_model, raw, fitted)
    else:
        state.bad_epochs += 1
    state.epoch = epoch + 1
    if run.main:
        runs.write_history(run.run_dir, pd.DataFrame(state.history))
        checkpoint(run.run_dir / runs.LAST, t.parts(), state.to_dict())
    trim_heap()  # freed activations back to the OS: the next epoch's peak does not creep up


def _epoch_line(row: dict[str, Any], epochs: int, metric: str, history: list[dict]) -> str:
    """`epoch 3/30  loss 0.4121  val_loss 0.3950  qwk 0.8123  lr 9.8e-05  152 img/s  ETA 4m10s`."""
    left = (epochs - row["epoch"]) * sum(h["epoch_s"] for h in history) / len(history)
    eta = f"{int(left // 60)}m{int(left % 60):02d}s" if left >= 60 else f"{left:.0f}s"
    return (
        f"epoch {row['epoch']}/{epochs}  loss {row['train_loss']:.4f}  val_loss {row['val_loss']:.4f}"
        f"  {metric} {row['score']:.4f}  lr {row['lr']:.1e}  {row['train_images_per_s']:.0f} img/s"
        f"  ETA {eta}"
    )


_clock = time.monotonic  # --time-limit's clock (a test may run it faster)


def _out_of_time(elapsed: float, last_s: float, budget: float) -> bool:
    """--time-limit: whether the next epoch, as long as the last one, would end past the budget
    (seconds since this process started training: a notebook's clock). The first epoch of a session
    always runs; rank 0 decides for every rank."""
    return bool(distributed.broadcast(last_s > 0 and elapsed + last_s > budget))


def _finish_swa(run: FoldRun, state: LoopState) -> None:
    """SWA's weights, BatchNorm recomputed, validated; kept when they score higher (or always)."""
    s = run.stepper
    net = run.swa.finish(run.data.train_loader, s.device, s.steps, meta=run.data.meta_train)
    raw, _, fitted, score = run.validate(net, "for the SWA weights")
    selected = run.cfg.swa_keep == "always" or score > state.best_score
    state.swa = {"epochs_averaged": run.swa.epochs_averaged, "score": score, "selected": selected}
    if run.main:
        save(net.state_dict(), run.run_dir / runs.SWA)
    if selected:
        state.best_score = score
        run.keep(net, raw, fitted)


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
    """Train one model on one fold; keep the best epoch by the competition metric. Returns
    metrics.json."""
    run_dir, external_dirs = Path(run_dir), dict(external_dirs or {})
    s = setting(cfg)
    main = distributed.is_main()
    if main:
        record_start(cfg, run_dir, data_dir, external_dirs, skip_bad_images, s.proto)
    tracker = tracking.start(cfg, run_dir, resume=resume, main=main)  # a no-op without --track
    seed_everything(cfg.seed)

    # the rows, the network and what trains it
    inputs = {
        "data_dir": data_dir,
        "external_dirs": external_dirs,
        "skip_bad_images": skip_bad_images,
        "train_table": train_table,
        "meta_dir": run_dir if main else None,
    }
    data, distill, meta_dim = run_data(cfg, s, inputs)
    model = network(cfg, s, meta_dim, warm=not resume)
    t = _trainee(cfg, model, data, proto=s.proto, dtype=s.dtype, device=s.device)
    criterion = build_loss(s.loss_name, s.task, cfg.label_smoothing)
    stepper = Stepper(
        forward=_forward(cfg, model, s.device),
        criterion=criterion if distill is None else distill,
        mixer=build_mixer(
            cfg.mix, prob=cfg.mix_prob, alpha=cfg.mix_alpha, task=s.task, loss=s.loss_name
        ),
        task=s.task,
        device=s.device,
        dtype=s.dtype,
        channels_last=s.channels_last,
        accum_steps=cfg.accum_steps,
        steps=_steps_per_epoch(cfg, data),
    )
    swa = Swa(model, cfg.epochs, cfg.swa_epochs) if cfg.swa_epochs else None
    t.swa = swa.averaged if swa else None
    run = FoldRun(cfg, run_dir, main, s.task, criterion, data, stepper, swa, tracker, progress)

    state = LoopState()
    if resume:
        # timm's schedules are functions of the step: built from this config (a longer --epochs
        # stretches it) and set to where the run stands, rather than restored from last.pt
        parts = {k: v for k, v in t.parts().items() if k != "scheduler"}
        state = LoopState.from_dict(restore(run_dir / runs.LAST, s.device, parts))
        if t.scheduler is not None:
            t.scheduler.step(state.epoch)
            t.scheduler.step_update(state.updates)
        if cfg.patience and state.bad_epochs >= cfg.patience and state.epoch < cfg.epochs:
            state.bad_epochs = 0  # it had stopped early and is extended: patience starts again
    started, stopped, last_s = time.time(), None, 0.0
    budget, session = config.duration_s(cfg.time_limit), _clock()
    for epoch in range(state.epoch, cfg.epochs):
        if budget and _out_of_time(_clock() - session, last_s, budget):
            stopped = "time_limit"
            break
        begun = _clock()
        _epoch(run, t, state, epoch)
        last_s = _clock() - begun
        if cfg.patience and state.bad_epochs >= cfg.patience:
            stopped = "patience"
            break
    if swa is not None and swa.epochs_averaged:
        _finish_swa(run, state)
    if not main:
        return {
            "score": state.best_score,
            "best_epoch": state.best_epoch,
            "rank": distributed.rank(),
        }
    facts = {
        "loss": s.loss_name,
        "device": s.device.type,
        "amp": str(s.dtype).removeprefix("torch.") if s.dtype else "off",
        "time_s": time.time() - started,
        "parameters": sum(p.numel() for p in model.parameters()),
        "stopped": stopped,
    }
    result = finish(run_dir, s.comp, data, state.to_dict(), facts)
    tracker.finish(run_dir, result)
    return result
