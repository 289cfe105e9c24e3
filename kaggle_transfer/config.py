"""RunConfig: one flat, typed record of everything a training run varies.

Precedence: defaults → recipe YAML (`-c FILE`) → first-class flags → `--set key=value`.
The resolved config is saved as `config.yaml` in the run folder and in the ONNX metadata.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import KtError
from .files import read_yaml, write_text


@dataclass
class RunConfig:
    competition: str = "aptos"  # adapter name (kt competitions)
    competition_file: str | None = None  # the YAML of a custom competition (kt train FILE.yaml)
    arch: str = "resnet50"  # any timm model name
    pretrained: bool = True  # ImageNet weights through timm / Hugging Face
    weights: str | None = None  # local backbone state dict (offline); overrides pretrained
    size: int = 256  # square input side in pixels; the paper's baseline is 256
    pool: str = "avg"  # avg | gem (learnable p, the APTOS winners' choice)
    dropout: float = 0.0  # before the linear head
    loss: str | None = None  # None = the task's default (ordinal: smooth_l1, multiclass: ce, ...)
    optimizer: str = "adamw"  # adamw | sgd (Nesterov, momentum 0.9), as in the study's grid
    lr: float = 1e-4
    weight_decay: float = 1e-5
    schedule: str = "cosine"  # cosine | step | none
    warmup_epochs: int = 0
    epochs: int = 30  # the study trains 30 epochs and keeps the best one
    batch_size: int = 32
    augment: str = (
        "paper"  # none | paper (random-resized-crop 0.65-1 + flip) | heavy (+ colour, affine)
    )
    protocol: str = (
        "kt"  # kt | paper: the study's channel order, flips, normalisation, eval resize,
    )
    # weight-decay set and per-epoch schedule, per dataset (protocol.py)
    external: list[str] = field(
        default_factory=list
    )  # external sources added to training rows only
    amp: str = "auto"  # auto (bf16 or fp16 on CUDA, off on CPU) | bf16 | fp16 | off
    channels_last: bool = True  # CUDA and CPU (benchmarks/channels_last.py)
    compile: bool = False  # torch.compile the model
    label_smoothing: float = 0.0  # classification losses (ce, bce)
    layer_decay: float | None = None  # layer-wise lr decay (timm), e.g. 0.75; None = off
    accum_steps: int = 1  # gradient accumulation: optimizer step every N batches
    freeze_epochs: int = 0  # backbone frozen for the first N epochs (head only)
    lp_ft: bool = False  # linear probe, then full fine-tune (freeze_epochs or epochs // 4 frozen)
    mix: str = "none"  # none | mixup | cutmix | both: timm's Mixup/CutMix on training batches
    mix_prob: float = 1.0  # share of batches mixed
    mix_alpha: float = 1.0  # Beta(alpha, alpha) mixing strength
    mix_off_epochs: int = 0  # the last N epochs train on unmixed images
    teacher: str | None = (
        None  # knowledge distillation from a kt ensemble spec (its members' OOF outputs)
    )
    distill_alpha: float = 0.5  # weight of the teacher's term (1 - alpha: the labels')
    distill_temperature: float = (
        2.0  # softens class logits for the teacher's term (Hinton et al. 2015)
    )
    meta: bool = False  # image + the competition's metadata columns (SIIM-ISIC: age, sex, site)
    init: str | None = (
        None  # warm start: another run's folder (or best.pt) of the same arch and head
    )
    ema: bool = False  # keep a timm EMA of weights and validate with it
    ema_decay: float = 0.999
    swa_epochs: int = (
        0  # SWA: average the weights of the last N epochs, BatchNorm recomputed; 0 = off
    )
    swa_lr: float | None = None  # SWA: a constant lr during those epochs (None: the schedule's own)
    swa_keep: str = (
        "better"  # better: SWA's weights become best.pt when they validate higher | always
    )
    fundus_crop: bool = False  # trim black borders (APTOS fundus photos); recorded for prediction
    cache: bool = True  # use kt prepare's resized cache when one is present
    channels: str | None = (
        None  # input channels by first letter, e.g. rgb or rgby (HPA); None = all
    )
    keep_empty: bool = False  # CCT-20: keep the `empty` class (the paper drops it)
    per_annotation: bool = (
        False  # CCT-20: one sample per annotation, as the study's loader (default: per image)
    )
    split: str | None = (
        None  # None = the competition's: paper (20% per class, seed 414) | kfold | official
    )
    split_file: str | None = (
        None  # CSV with id and Split columns (train/val/test); implies split=official
    )
    folds: int = 5  # number of folds for split=kfold
    fold: int = 0  # which fold validates
    seed: int = 414  # seeds training (weights, order, augmentation)
    split_seed: int | None = (
        None  # seeds the split; None = the study's (414, EuroSAT 42); fixed across --seeds
    )
    patience: int = 0  # early stop after this many epochs without improvement; 0 = off
    tta: str = "none"  # test-time views recorded for predict: none | flip
    workers: int = 2  # DataLoader worker processes
    device: str = "auto"  # auto | cpu | cuda
    track: str = (
        "none"  # none | mlflow: params, per-epoch metrics and files to MLflow (optional extra)
    )
    track_uri: str | None = (
        None  # MLflow URI; None = $MLFLOW_TRACKING_URI or <runs root>/mlruns/mlflow.db
    )
    max_steps: int = 0  # stop each epoch after this many steps; 0 = full epoch (smoke tests)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


CHOICES = {
    "pool": ("avg", "gem"),
    "optimizer": ("adamw", "sgd"),
    "schedule": ("cosine", "step", "none"),
    "augment": ("none", "paper", "heavy", "randaugment", "augmix"),
    "amp": ("auto", "bf16", "fp16", "off"),
    "split": ("paper", "kfold", "official"),
    "tta": ("none", "flip", "d4"),
    "device": ("auto", "cpu", "cuda"),
    "mix": ("none", "mixup", "cutmix", "both"),
    "track": ("none", "mlflow"),
    "swa_keep": ("better", "always"),
    "protocol": ("kt", "paper"),
}
# choices of prediction and ensembling options, shared by the library that validates them and the CLI
BLENDS = ("mean", "rank")  # kt predict --blend
ENSEMBLE_METHODS = ("mean", "rank", "greedy")  # kt ensemble --method
IO_BINDING = ("auto", "on", "off")  # kt predict --io-binding
ACCELERATORS = ("gpu", "none")  # kt bundle / kt submit --accelerator (code competitions)
# Kaggle's notebook image runs Python 3.12: Kaggle/docker-python, Dockerfile.tmpl at 78aaa43 (2026-08-12),
# PACKAGE_PATH=/usr/local/lib/python3.12/dist-packages; its kaggle_requirements.txt lists onnx, not onnxruntime.
# Its Colab base moved to Python 3.13 on 2026-08-19 (googlecolab/backend-info), so Kaggle's next image will
# likely follow: bundles carry wheels for both, and the notebook installs the one matching its interpreter.
NOTEBOOK_PYTHON = "3.12,3.13"
FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}
_HINTS = typing.get_type_hints(RunConfig)


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def parse_value(key: str, value: Any) -> Any:
    """Coerce a YAML or command-line value to the type of RunConfig.<key>; KtError if it does not fit."""
    hint = _HINTS[key]
    args = typing.get_args(hint)
    optional = isinstance(hint, types.UnionType) and type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if optional else hint
    if value is None or (
        optional and isinstance(value, str) and value.lower() in ("none", "null", "")
    ):
        if optional:
            return None
        raise KtError(f"config key {key!r} cannot be empty")
    try:
        if typing.get_origin(base) is list:
            items = value.split(",") if isinstance(value, str) else list(value)
            return [str(v).strip() for v in items if str(v).strip()]
        if base is bool:
            return value if isinstance(value, bool) else _parse_bool(str(value))
        if base is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if base is float:
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise KtError(
            f"config key {key!r} wants {getattr(base, '__name__', base)}, got {value!r}"
        ) from None


def _check_key(key: str, where: str) -> None:
    if key not in FIELDS:
        close = difflib.get_close_matches(key, FIELDS, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise KtError(
            f"unknown config key {key!r} in {where}{hint}; valid keys: {', '.join(FIELDS)}"
        )


def load_recipe(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise KtError(
            f"recipe {path} not found; pass -c with an existing YAML file (see competitions/*/)"
        )
    data = read_yaml(path, what="recipe") or {}
    if not isinstance(data, dict):
        raise KtError(f"recipe {path} must be a mapping of config keys to values")
    return data


def resolve(
    recipe: str | Path | dict | list | None = None,
    flags: dict[str, Any] | None = None,
    sets: list[str] | tuple[str, ...] = (),
) -> RunConfig:
    """Defaults → recipes (YAML paths or mappings, in order) → flags (None means 'not given') →
    `--set key=value`."""
    values: dict[str, Any] = {}
    for item in recipe if isinstance(recipe, list) else [recipe] if recipe else []:
        for key, value in (item if isinstance(item, dict) else load_recipe(item)).items():
            _check_key(key, f"recipe {item}")
            values[key] = parse_value(key, value)
    for key, value in (flags or {}).items():
        if value is not None and value != ():
            _check_key(key, "flags")
            values[key] = parse_value(key, value)
    for item in sets:
        if "=" not in item:
            raise KtError(f"--set {item!r} must look like key=value")
        key, value = item.split("=", 1)
        _check_key(key.strip(), "--set")
        values[key.strip()] = parse_value(key.strip(), value)
    if values.get("split_file") and "split" not in values:
        values["split"] = "official"
    cfg = RunConfig(**values)
    validate(cfg)
    return cfg


# numeric fields and the ranges they must lie in (lower, upper, whether the bounds are included)
RANGES = {
    "lr": (0, 10, False),
    "weight_decay": (0, 10, True),
    "dropout": (0, 1, "[)"),
    "label_smoothing": (0, 1, "[)"),
    "ema_decay": (0, 1, False),
    "layer_decay": (0, 1, "(]"),
    "warmup_epochs": (0, 10_000, True),
    "workers": (0, 256, True),
    "freeze_epochs": (0, 100_000, True),
    "patience": (0, 100_000, True),
    "max_steps": (0, 10**9, True),
    "size": (8, 4096, True),
    "epochs": (1, 100_000, True),
    "batch_size": (1, 65_536, True),
    "accum_steps": (1, 4096, True),
    "folds": (2, 1000, True),
    "fold": (0, 999, True),
    "mix_prob": (0, 1, True),
    "mix_alpha": (0, 100, "(]"),
    "mix_off_epochs": (0, 100_000, True),
    "swa_epochs": (0, 100_000, True),
    "swa_lr": (0, 10, "(]"),
    "distill_alpha": (0, 1, True),
    "distill_temperature": (0, 100, "(]"),
    "seed": (0, 2**32 - 1, True),
    "split_seed": (0, 2**32 - 1, True),
}


def _in_range(value: float, low: float, high: float, bounds) -> bool:
    lo_ok = value >= low if bounds in (True, "[)") else value > low
    hi_ok = value <= high if bounds in (True, "(]") else value < high
    return lo_ok and hi_ok


def validate(cfg: RunConfig) -> None:
    for key, (low, high, bounds) in RANGES.items():
        value = getattr(cfg, key)
        if value is None:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise KtError(f"{key}={value} is not a finite number; e.g. {key}={FIELDS[key].default}")
        if not _in_range(value, low, high, bounds):
            left = "[" if bounds in (True, "[)") else "("
            right = "]" if bounds in (True, "(]") else ")"
            raise KtError(f"{key}={value} is outside {left}{low}, {high}{right}")
    for key, choices in CHOICES.items():
        if getattr(cfg, key) is not None and getattr(cfg, key) not in choices:
            raise KtError(
                f"{key}={getattr(cfg, key)!r} is not valid; choose one of: {', '.join(choices)}"
            )
    if cfg.mix != "none" and cfg.batch_size % 2:
        raise KtError(
            f"--set mix={cfg.mix} pairs each image with another of its batch: batch_size must be even, "
            f"got {cfg.batch_size}"
        )
    if cfg.swa_lr is not None and not cfg.swa_epochs:
        raise KtError("--set swa_lr holds the rate during SWA's epochs; set swa_epochs=K too")
    if cfg.swa_epochs > cfg.epochs:
        raise KtError(
            f"--set swa_epochs={cfg.swa_epochs} averages more epochs than the run has "
            f"(--epochs {cfg.epochs})"
        )
    if cfg.split == "kfold" and not 0 <= cfg.fold < cfg.folds:
        raise KtError(f"fold={cfg.fold} is outside 0..{cfg.folds - 1} for folds={cfg.folds}")


def save(cfg: RunConfig, path: str | Path) -> None:
    write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def load(path: str | Path) -> RunConfig:
    """A run's config.yaml, held to the rules a new run's config is (ranges, finite numbers, choices)."""
    data = load_recipe(path)
    cfg = RunConfig(**{k: parse_value(k, v) for k, v in data.items() if k in FIELDS})
    try:
        validate(cfg)
    except KtError as e:
        raise KtError(f"{path}: {e}; the run's config is damaged") from None
    return cfg
