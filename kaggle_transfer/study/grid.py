"""Hyperparameter grids. `paper` is the study's released grid (docs/competitions.md): AdamW lr
{1e-2,1e-3,1e-4,1e-5} or Nesterov SGD lr {1e-1,1e-2,1e-3,1e-4}; weight decay {1e-3,1e-4,1e-5,1e-6,0},
divided by the lr for AdamW; cosine or step schedule; 30 epochs, batch 128, under the study's protocol
(protocol.py), which also brings each dataset's size (256; EuroSAT 224; DeiT at 224) and loss (APTOS
and SIIM-ISIC ce). A YAML grid's `run: size:` is kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import KtError
from ..files import read_yaml
from .archs import arch_options, released_size

GRIDS: dict[str, dict[str, Any]] = {
    "paper": {
        "optimizer": ["adamw", "sgd"],
        "lr": {"adamw": [1e-2, 1e-3, 1e-4, 1e-5], "sgd": [1e-1, 1e-2, 1e-3, 1e-4]},
        "weight_decay": [1e-3, 1e-4, 1e-5, 1e-6, 0.0],
        "schedule": ["cosine", "step"],
        "run": {
            "epochs": 30,
            "batch_size": 128,
            "augment": "paper",
            "protocol": "paper",  # brings each dataset's size: 256, EuroSAT 224
        },
    },
    "small": {
        "optimizer": ["adamw"],
        "lr": {"adamw": [1e-3, 1e-4]},
        "weight_decay": [1e-5],
        "schedule": ["cosine"],
        "run": {"epochs": 10, "batch_size": 64, "size": 256, "augment": "paper"},
    },
}
KEYS = {"optimizer", "lr", "weight_decay", "schedule", "run"}


def load_grid(spec: str) -> tuple[str, dict[str, Any]]:
    """A named grid, or a YAML file with the same keys."""
    if spec in GRIDS:
        return spec, GRIDS[spec]
    path = Path(spec)
    if not path.is_file():
        raise KtError(f"--grid {spec!r}: not one of {', '.join(GRIDS)} and no such file")
    grid = read_yaml(path, what="--grid")
    if not isinstance(grid, dict) or set(grid) - KEYS or not {"optimizer", "lr"} <= set(grid):
        raise KtError(
            f"--grid {path}: keys must be optimizer, lr (per optimizer), weight_decay, schedule, run"
        )
    for opt in grid["optimizer"]:
        if opt not in grid["lr"]:
            raise KtError(f"--grid {path}: lr has no list for optimizer {opt!r}")
    grid.setdefault("weight_decay", [0.0])
    grid.setdefault("schedule", ["cosine"])
    grid.setdefault("run", {})
    return path.stem, grid


def search_space(grid: dict[str, Any], archs: list[str]) -> dict[str, list]:
    """A product space for Optuna's GridSampler; lr is an index into the optimizer's own list."""
    width = max(len(v) for v in grid["lr"].values())
    return {
        "arch": archs,
        "optimizer": list(grid["optimizer"]),
        "lr_index": list(range(width)),
        "weight_decay": list(grid["weight_decay"]),
        "schedule": list(grid["schedule"]),
    }


def trial_flags(
    grid: dict[str, Any], params: dict[str, Any], comp, sets=()
) -> dict[str, Any] | None:
    """A grid point's run config for one competition. Under the study's protocol: the study's loss for
    that dataset (APTOS cross-entropy over the grades, SIIM-ISIC two-class cross-entropy) and its input
    side, unless the grid's `run:` states a size: the dataset's (EuroSAT 224, else 256), or the
    model's own where the released code could only run it at its pretraining side (DeiT at 224:
    sample_train.py l.17, `img_size = 256 # may need to change to 224 for certain models`).
    `--set` values still win over these (config.resolve applies them last)."""
    flags = point_config(grid, params)
    if flags is None:
        return None
    flags = {"competition": comp.name, **arch_options(params["arch"]), **flags}
    chosen = [s.split("=", 1)[1].strip() for s in sets if s.split("=", 1)[0].strip() == "protocol"]
    if (chosen[-1] if chosen else flags.get("protocol")) == "paper":
        if "size" not in grid.get("run", {}):
            flags["size"] = released_size(params["arch"]) or comp.paper.size
        if comp.paper.loss:
            flags["loss"] = comp.paper.loss
        flags.update(dict(comp.paper.options))
    return flags


def point_config(grid: dict[str, Any], params: dict[str, Any]) -> dict[str, Any] | None:
    """Run-config values of a grid point; None when the index is past this optimizer's lr list."""
    lrs = grid["lr"][params["optimizer"]]
    if params["lr_index"] >= len(lrs):
        return None
    lr = lrs[params["lr_index"]]
    wd = params["weight_decay"] / lr if params["optimizer"] == "adamw" else params["weight_decay"]
    return {
        "arch": params["arch"],
        "optimizer": params["optimizer"],
        "lr": lr,
        "weight_decay": wd,
        "schedule": params["schedule"],
        **grid.get("run", {}),
    }


def point_key(p: dict[str, Any]) -> str:
    return f"{p['arch']}|{p['optimizer']}|{p['lr_index']}|{p['weight_decay']}|{p['schedule']}"
