"""RunConfig: one typed record of everything a training run varies, its fields in sections.

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
from .protocol import PROTOCOLS

# the sections of a run's config, in the order kt train --list-keys and --help show them
SECTIONS = (
    "data",
    "model",
    "optimisation",
    "augmentation",
    "interventions",
    "evaluation",
    "runtime",
)


def _f(default: Any, section: str, doc: str, *, diff: bool = True, same: bool = False) -> Any:
    """One RunConfig field: its section, what it means, and its role. `diff`: kt runs shows it when
    it differs from the best run's; `same`: runs must agree on it for kt average to average them."""
    meta = {"section": section, "doc": doc, "diff": diff, "same": same}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class RunConfig:
    """Everything a training run varies. config.yaml, --set and the ONNX metadata use these flat
    names; each field's section and role are in its metadata (FIELDS[name].metadata)."""

    # data: what the run reads and how it is split
    competition: str = _f("aptos", "data", "adapter name (kt competitions)", same=True)
    competition_file: str | None = _f(
        None, "data", "the YAML of a custom competition (kt train FILE.yaml)", same=True
    )
    external: list[str] = _f([], "data", "external sources added to training rows only")
    channels: str | None = _f(
        None,
        "data",
        "input channels by first letter, e.g. rgb or rgby (HPA); None = all",
        same=True,
    )
    keep_empty: bool = _f(
        False, "data", "CCT-20: keep the `empty` class (the paper drops it)", same=True
    )
    per_annotation: bool = _f(
        False, "data", "CCT-20: one sample per annotation, as the study's loader", same=True
    )
    split: str | None = _f(
        None, "data", "None = the competition's: paper | kfold | official", same=True
    )
    split_file: str | None = _f(
        None, "data", "CSV with id and Split columns (train/val/test); implies official", same=True
    )
    folds: int = _f(5, "data", "number of folds of a kfold split", same=True)
    fold: int = _f(0, "data", "which fold validates", diff=False, same=True)
    split_seed: int | None = _f(
        None, "data", "seeds the split; None = the study's (414, EuroSAT 42)", same=True
    )
    fundus_crop: bool = _f(
        False,
        "data",
        "trim black borders (APTOS fundus photos); recorded for prediction",
        same=True,
    )
    cache: bool = _f(True, "data", "use kt prepare's resized cache when one is present")
    # model: the network
    arch: str = _f(
        "resnet50", "model", "any timm model name, or tv:NAME for torchvision", same=True
    )
    pretrained: bool = _f(True, "model", "ImageNet weights through timm / Hugging Face")
    weights: str | None = _f(
        None, "model", "local backbone state dict (offline); overrides pretrained"
    )
    size: int = _f(
        256, "model", "square input side in pixels; the paper's baseline is 256", same=True
    )
    pool: str = _f("avg", "model", "avg | gem (learnable p, the APTOS winners' choice)", same=True)
    dropout: float = _f(0.0, "model", "before the linear head")
    drop_path: float = _f(0.0, "model", "stochastic depth rate of timm backbones (drop_path_rate)")
    meta: bool = _f(
        False,
        "model",
        "image + the competition's metadata columns (SIIM-ISIC: age, sex, site)",
        same=True,
    )
    protocol: str = _f(
        "kt",
        "model",
        "kt | paper: the study's preprocessing and optimisation (protocol.py)",
        same=True,
    )
    # optimisation
    loss: str | None = _f(
        None, "optimisation", "None = the task's default (ordinal: smooth_l1, ...)"
    )
    optimizer: str = _f("adamw", "optimisation", "adamw | sgd (Nesterov, momentum 0.9)")
    lr: float = _f(1e-4, "optimisation", "peak learning rate")
    weight_decay: float = _f(
        1e-5, "optimisation", "decoupled weight decay (biases and norms exempt)"
    )
    schedule: str = _f("cosine", "optimisation", "cosine | step | none")
    warmup_epochs: int = _f(0, "optimisation", "linear warm-up epochs")
    epochs: int = _f(30, "optimisation", "the study trains 30 epochs and keeps the best one")
    batch_size: int = _f(32, "optimisation", "images per step and process")
    accum_steps: int = _f(1, "optimisation", "gradient accumulation: a step every N batches")
    layer_decay: float | None = _f(None, "optimisation", "layer-wise lr decay (timm), e.g. 0.75")
    freeze_epochs: int = _f(0, "optimisation", "backbone frozen for the first N epochs")
    lp_ft: bool = _f(False, "optimisation", "linear probe, then full fine-tune")
    label_smoothing: float = _f(0.0, "optimisation", "classification losses (ce, bce)")
    patience: int = _f(0, "optimisation", "early stop after N epochs without improvement; 0 = off")
    seed: int = _f(414, "optimisation", "seeds training (weights, order, augmentation)", diff=False)
    # augmentation
    augment: str = _f(
        "paper",
        "augmentation",
        "none | paper (resized crop 0.65-1 + flip) | heavy | randaugment | augmix",
    )
    mix: str = _f("none", "augmentation", "none | mixup | cutmix | both (timm's Mixup)")
    mix_prob: float = _f(1.0, "augmentation", "share of batches mixed")
    mix_alpha: float = _f(1.0, "augmentation", "Beta(alpha, alpha) mixing strength")
    mix_off_epochs: int = _f(0, "augmentation", "the last N epochs train on unmixed images")
    # interventions beyond the architecture: distillation, warm starts, weight averages
    teacher: str | None = _f(None, "interventions", "distil from a kt ensemble spec's OOF outputs")
    distill_alpha: float = _f(0.5, "interventions", "weight of the teacher's term")
    distill_temperature: float = _f(2.0, "interventions", "softens class logits (Hinton et al.)")
    init: str | None = _f(None, "interventions", "warm start: another run's folder (or best.pt)")
    ema: bool = _f(False, "interventions", "keep a timm EMA of the weights and validate with it")
    ema_decay: float = _f(0.999, "interventions", "the EMA's decay")
    swa_epochs: int = _f(0, "interventions", "SWA over the last N epochs, BatchNorm recomputed")
    swa_lr: float | None = _f(None, "interventions", "SWA: a constant lr in those epochs")
    swa_keep: str = _f(
        "better", "interventions", "better | always: when SWA's weights become best.pt"
    )
    # evaluation
    tta: str = _f("none", "evaluation", "test-time views recorded for predict: none | flip | d4")
    # runtime: where and how it runs (never changes what is learned beyond float rounding)
    amp: str = _f("auto", "runtime", "auto (bf16 or fp16 on CUDA, off on CPU) | bf16 | fp16 | off")
    channels_last: bool = _f(True, "runtime", "NHWC memory layout on CUDA and CPU")
    compile: bool = _f(False, "runtime", "torch.compile the model")
    workers: int = _f(2, "runtime", "DataLoader worker processes", diff=False)
    device: str = _f("auto", "runtime", "auto | cpu | cuda", diff=False)
    track: str = _f("none", "runtime", "none | mlflow: params, metrics and files to MLflow")
    track_uri: str | None = _f(
        None, "runtime", "MLflow URI; None = $MLFLOW_TRACKING_URI or a SQLite"
    )
    max_steps: int = _f(0, "runtime", "steps per epoch at most; 0 = full epochs", diff=False)
    time_limit: str | None = _f(
        None,
        "runtime",
        "training time at most, e.g. 8h, 90m, 45s (a number: minutes): no epoch starts that would end "
        "past it; none = no limit",
        diff=False,
    )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def keys_with(role: str) -> tuple[str, ...]:
    """The fields whose metadata sets `role` (diff, same)."""
    return tuple(f.name for f in dataclasses.fields(RunConfig) if f.metadata[role])


def list_keys() -> str:
    """Every key by section with its type, default and meaning (kt train --list-keys)."""
    lines = []
    for section in SECTIONS:
        lines.append(f"{section}:")
        for f in dataclasses.fields(RunConfig):
            if f.metadata["section"] == section:
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
                kind = str(f.type).replace("None", "none")
                lines.append(f"  {f.name:<20} {kind:<13} {default!s:<9} {f.metadata['doc']}")
    return "\n".join(lines)


def differences(cfg: RunConfig) -> dict[str, Any]:
    """The keys whose value differs from kt's default, in field order (what kt train prints first)."""
    default = RunConfig()
    return {
        f.name: getattr(cfg, f.name)
        for f in dataclasses.fields(RunConfig)
        if getattr(cfg, f.name) != getattr(default, f.name)
    }


def describe(values: dict[str, Any]) -> str:
    """`key=value` pairs on one line, lists comma-joined (as --set takes them)."""
    shown = (
        f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in values.items()
    )
    return " ".join(shown) or "kt's defaults"


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
    "protocol": PROTOCOLS,
}
# choices of prediction and ensembling options, shared by the library that validates them and the CLI
BLENDS = ("mean", "rank")  # kt predict --blend
ENSEMBLE_METHODS = ("mean", "rank", "greedy")  # kt ensemble --method
IO_BINDING = ("auto", "on", "off")  # kt predict --io-binding
PROVIDER_CHOICES = ("auto", "cuda", "tensorrt", "cpu")  # kt predict / pseudo / evaluate --provider
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
            f"recipe {path} not found; pass -c with a shipped recipe's name "
            "(kt competitions NAME lists them) or an existing YAML file"
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


UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_s(text: str | None, flag: str = "--time-limit") -> float:
    """`8h`, `90m`, `45s`, `1.5h` or a bare number of minutes, in seconds; 0 for none."""
    if not text:
        return 0.0
    value = str(text).strip().lower()
    unit = UNITS.get(value[-1:]) if value[-1:].isalpha() else 60
    try:
        seconds = float(value[:-1] if value[-1:].isalpha() else value) * (unit or 0)
    except ValueError:
        seconds = -1.0
    if not unit or not seconds > 0 or seconds == float("inf"):
        raise KtError(
            f"{flag} {text!r}: give a duration such as 8h, 90m or 45s (a number: minutes)"
        )
    return seconds


def _in_range(value: float, low: float, high: float, bounds) -> bool:
    lo_ok = value >= low if bounds in (True, "[)") else value > low
    hi_ok = value <= high if bounds in (True, "(]") else value < high
    return lo_ok and hi_ok


def validate(cfg: RunConfig) -> None:
    duration_s(cfg.time_limit)  # a malformed duration fails here, before anything runs
    if cfg.fold >= cfg.folds:
        raise KtError(
            f"--fold {cfg.fold}: fold ids are 0..{cfg.folds - 1} (--set folds=N sets the count)"
        )
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
    try:
        data = read_yaml(path, what="run config") or {}
        if not isinstance(data, dict):
            raise KtError("not a mapping of config keys")
        cfg = RunConfig(**{k: parse_value(k, v) for k, v in data.items() if k in FIELDS})
        validate(cfg)
    except KtError as e:
        said = str(e).replace(str(path), "").strip(" :;")[:120]
        raise KtError(
            f"{path}: the run's config is damaged ({said}); train the run again"
        ) from None
    return cfg
