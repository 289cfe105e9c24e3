"""`fit()`: one readable training loop. No callbacks; read it top to bottom.

Writes into the run folder: config.yaml, run.json, history.csv, metrics.json, oof.npz, best.pt,
last.pt (for --resume) and plots/learning_curve.png.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from . import competitions, plots
from . import config as config_mod
from .config import RunConfig
from .data.augment import build_train_transform
from .data.dataset import ImageDataset
from .data.splits import HELD_OUT, TRAIN_ONLY, assign_folds, read_split_file
from .errors import KtError
from .fsutil import atomic_path, write_json
from .models import build_model
from .runs import git_sha, seed_everything
from .tasks import Task


def build_loss(name: str, task: Task) -> nn.Module:
    if name in ("l1", "smooth_l1", "mse"):
        return {"l1": nn.L1Loss, "smooth_l1": nn.SmoothL1Loss, "mse": nn.MSELoss}[name]()
    if name == "ce":
        return nn.CrossEntropyLoss()
    if name == "bce":
        return nn.BCEWithLogitsLoss()
    if name == "focal":
        from segmentation_models_pytorch.losses import FocalLoss

        mode = {"multiclass": "multiclass", "multilabel": "multilabel", "binary": "binary"}[task.kind]
        return FocalLoss(mode=mode)
    raise KtError(f"unknown loss {name!r}")


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise KtError("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")


def amp_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """auto: bf16 where the GPU supports it, else fp16 (with GradScaler); off on CPU, where it rarely helps."""
    if setting == "off" or (setting == "auto" and device.type != "cuda"):
        return None
    if setting == "bf16" or (setting == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def _worker_init(worker_id: int) -> None:
    # each worker and each epoch gets its own augmentation stream (torch reseeds per epoch from the loader)
    import random

    import cv2

    cv2.setNumThreads(0)
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    info = torch.utils.data.get_worker_info()
    transform = getattr(info.dataset, "transform", None)
    if transform is not None and hasattr(transform, "set_random_seed"):
        transform.set_random_seed(seed)


def _loader(dataset: ImageDataset, batch_size: int, workers: int, train: bool, generator: torch.Generator | None,
            pin: bool) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=train, drop_last=train and len(dataset) > batch_size,
                      num_workers=workers, pin_memory=pin, generator=generator, worker_init_fn=_worker_init,
                      persistent_workers=workers > 0)


def _shape(out: torch.Tensor, task: Task) -> torch.Tensor:
    return out.squeeze(1) if task.num_outputs == 1 else out


def _step_loss(criterion: nn.Module, out: torch.Tensor, y: torch.Tensor, task: Task) -> torch.Tensor:
    return criterion(_shape(out, task).float(), y.long() if task.kind == "multiclass" else y.float())


@torch.no_grad()
def predict_raw(model: nn.Module, loader: DataLoader, device: torch.device, dtype: torch.dtype | None,
                channels_last: bool) -> np.ndarray:
    """Raw outputs (N, num_outputs) in loader order."""
    model.eval()
    outs = []
    for x, _, _ in loader:
        x = x.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype) if dtype else nullcontext():
            outs.append(model(x).float().cpu())
    return torch.cat(outs).numpy()


def load_tables(cfg: RunConfig, data_dir: Path, external_dirs: dict[str, str], skip_bad_images: bool
                ) -> pd.DataFrame:
    """Competition rows plus external rows (training only), with a `fold` column."""
    comp = competitions.for_config(cfg)
    table = comp.read_train(data_dir, skip_bad_images)
    if cfg.split_file:
        table = table.drop(columns=["split"], errors="ignore").merge(read_split_file(cfg.split_file), on="id",
                                                                     how="left")
        if table["split"].isna().any():
            missing = table.loc[table["split"].isna(), "id"].iloc[0]
            raise KtError(f"--split-file {cfg.split_file} has no row for id {missing!r}")
    table["fold"] = assign_folds(table, cfg.split or comp.default_split, cfg.folds, cfg.seed)
    skipped = {"competition": int(table.attrs.get("skipped_images", 0))}
    for source in cfg.external:
        if source not in external_dirs:
            raise KtError(f"--external {source} needs --external-dir {source}=DIR")
        extra = comp.read_external(source, Path(external_dirs[source]))
        skipped[source] = int(extra.attrs.get("skipped_images", 0))
        table = pd.concat([table, extra.assign(fold=TRAIN_ONLY)], ignore_index=True)
    table.attrs["skipped_images"] = skipped
    return table


def preflight(cfg: RunConfig, data_dir: Path) -> None:
    """Cheap checks before a run folder is made: arch, loss and the training table (files included)."""
    from .models import check_arch

    comp = competitions.for_config(cfg)
    check_arch(cfg.arch)
    comp.select_channels(cfg.channels)
    comp.task.check_loss(cfg.loss or comp.task.default_loss)
    comp.read_train(data_dir, skip_bad_images=True)


def _scheduler(cfg: RunConfig, optimizer, steps_per_epoch: int):
    if cfg.schedule == "none":
        return None
    from timm.scheduler import create_scheduler_v2

    # `step` follows the study: x0.1 at 1/2, 2/3 and 5/6 of training (15/20/25 of 30 epochs)
    milestones = sorted({max(1, round(cfg.epochs * f)) for f in (1 / 2, 2 / 3, 5 / 6)})
    scheduler, _ = create_scheduler_v2(
        optimizer, sched="cosine" if cfg.schedule == "cosine" else "multistep", num_epochs=cfg.epochs,
        warmup_epochs=cfg.warmup_epochs, warmup_lr=cfg.lr * 0.01, decay_milestones=milestones,
        step_on_epochs=False, updates_per_epoch=steps_per_epoch,
        min_lr=cfg.lr * 1e-3 if cfg.schedule == "cosine" else 0)
    return scheduler


def fit(cfg: RunConfig, run_dir: Path, data_dir: Path, external_dirs: dict[str, str] | None = None,
        resume: bool = False, skip_bad_images: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train one model on one fold; keep the best epoch by the competition metric. Returns metrics.json."""
    run_dir, external_dirs = Path(run_dir), dict(external_dirs or {})
    comp = competitions.for_config(cfg)
    task = comp.task
    channels = comp.select_channels(cfg.channels)
    loss_name = cfg.loss or task.default_loss
    task.check_loss(loss_name)
    config_mod.save(cfg, run_dir / "config.yaml")
    write_json(run_dir / "run.json", {"data_dir": str(data_dir), "external_dirs": external_dirs,
                                      "skip_bad_images": skip_bad_images, "git_sha": git_sha()})
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    dtype = amp_dtype(cfg.amp, device)
    channels_last = cfg.channels_last and device.type == "cuda"

    table = load_tables(cfg, data_dir, external_dirs, skip_bad_images)
    val_rows = table[table["fold"] == cfg.fold]
    train_rows = table[(table["fold"] != cfg.fold) & (table["fold"] != HELD_OUT)]
    if len(val_rows) == 0 or len(train_rows) == 0:
        raise KtError(f"fold {cfg.fold} leaves an empty train or validation set ({len(train_rows)}/{len(val_rows)})")
    y_train, y_val = task.targets(train_rows["target"]), task.targets(val_rows["target"])
    generator = torch.Generator().manual_seed(cfg.seed)
    train_ds = ImageDataset(train_rows, cfg.size, y_train, build_train_transform(cfg.augment, cfg.size, len(channels)),
                            channels)
    pin = device.type == "cuda"
    train_loader = _loader(train_ds, cfg.batch_size, cfg.workers, True, generator, pin)
    val_ds = ImageDataset(val_rows, cfg.size, y_val, channels=channels)
    val_loader = _loader(val_ds, cfg.batch_size, cfg.workers, False, None, pin)

    model = build_model(cfg.arch, task.num_outputs, cfg.pool, cfg.dropout, len(channels), cfg.pretrained,
                        cfg.weights)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    from timm.optim import create_optimizer_v2
    from timm.utils import ModelEmaV3

    optimizer = create_optimizer_v2(model, opt=cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=0.9)
    steps_per_epoch = min(len(train_loader), cfg.max_steps or len(train_loader))
    scheduler = _scheduler(cfg, optimizer, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    ema = ModelEmaV3(model, decay=cfg.ema_decay) if cfg.ema else None
    criterion = build_loss(loss_name, task)
    forward = torch.compile(model) if cfg.compile else model

    state = {"epoch": 0, "best_score": -math.inf, "best_epoch": -1, "history": [], "bad_epochs": 0}
    last = run_dir / "last.pt"
    if resume:
        if not last.is_file():
            raise KtError(f"--resume: {last} not found; the run never finished an epoch, start it again")
        ckpt = torch.load(last, map_location=device, weights_only=True)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        if scheduler is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        if ema is not None:
            ema.load_state_dict(ckpt["ema"])
        state = ckpt["state"]

    started = time.time()
    for epoch in range(state["epoch"], cfg.epochs):
        generator.manual_seed(cfg.seed * 1000 + epoch)  # same shuffle and augmentations after a resume
        if cfg.workers == 0 and train_ds.transform is not None:  # workers reseed in _worker_init instead
            train_ds.transform.set_random_seed(cfg.seed * 1000 + epoch)
        model.train()
        losses, seen, t0 = [], 0, time.time()
        bar = tqdm(train_loader, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch",
                   disable=not progress, leave=False, dynamic_ncols=True)
        for step, (x, y, _) in enumerate(bar):
            if step >= steps_per_epoch:
                break
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=dtype) if dtype else nullcontext():
                loss = _step_loss(criterion, forward(x), y, task)
            if not torch.isfinite(loss):
                raise KtError(f"loss became {loss.item()} at epoch {epoch + 1} step {step}; "
                              "lower --lr or use --amp off")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if scheduler is not None:
                scheduler.step_update(epoch * steps_per_epoch + step + 1)
            if ema is not None:
                ema.update(model)
            losses.append(loss.item())
            seen += len(x)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
        train_time = time.time() - t0
        if scheduler is not None:
            scheduler.step(epoch + 1)

        eval_model = ema.module if ema is not None else model
        raw = predict_raw(eval_model, val_loader, device, dtype, channels_last)
        val_loss = float(_step_loss(criterion, torch.from_numpy(raw), torch.from_numpy(y_val), task))
        fitted = task.fit(raw, y_val)
        score = task.score(y_val, raw, fitted)
        row = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "val_loss": val_loss, "score": score,
               "lr": optimizer.param_groups[0]["lr"], "train_images_per_s": seen / max(train_time, 1e-9),
               "epoch_s": time.time() - t0}
        state["history"].append(row)
        if progress:
            tqdm.write(f"epoch {epoch + 1}/{cfg.epochs}  loss {row['train_loss']:.4f}  val_loss {val_loss:.4f}  "
                       f"{task.metric} {score:.4f}  {row['train_images_per_s']:.1f} img/s")
        if score > state["best_score"]:
            state.update(best_score=score, best_epoch=epoch + 1, bad_epochs=0)
            with atomic_path(run_dir / "best.pt") as tmp:
                torch.save(eval_model.state_dict(), tmp)
            _save_oof(run_dir / "oof.npz", val_rows, raw, y_val, fitted)
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch + 1
        pd.DataFrame(state["history"]).to_csv(run_dir / "history.csv", index=False)
        with atomic_path(last) as tmp:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict() if scheduler is not None else {},
                        "scaler": scaler.state_dict(), "ema": ema.state_dict() if ema is not None else {},
                        "state": state}, tmp)
        if cfg.patience and state["bad_epochs"] >= cfg.patience:
            break

    history = pd.DataFrame(state["history"])
    plots.learning_curve(history, task.metric, run_dir / "plots" / "learning_curve.png")
    oof = np.load(run_dir / "oof.npz")
    result = {
        "competition": comp.name, "metric": task.metric, "score": state["best_score"],
        "best_epoch": state["best_epoch"], "epochs_run": state["epoch"], "loss": loss_name,
        "fitted": json.loads(str(oof["fitted"])), "n_train": len(train_rows), "n_val": len(val_rows),
        "skipped_images": table.attrs["skipped_images"]["competition"],
        "skipped_external_images": {k: v for k, v in table.attrs["skipped_images"].items() if k != "competition"},
        "n_external": int((table["source"] != "competition").sum()), "device": device.type,
        "amp": str(dtype).removeprefix("torch.") if dtype else "off",
        "train_images_per_s": float(history["train_images_per_s"].mean()),
        "time_s": time.time() - started,
    }
    if task.kind == "ordinal":  # what the fitted cut points bought over plain rounding
        result["score_rounded"] = task.score(oof["targets"], oof["raw"], {})
    write_json(run_dir / "metrics.json", result)
    return result


def _save_oof(path: Path, rows: pd.DataFrame, raw: np.ndarray, y: np.ndarray, fitted: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, ids=np.asarray(rows["id"], dtype=str), raw=raw, targets=y, fitted=json.dumps(fitted))
