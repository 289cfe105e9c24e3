"""What a run records: config.yaml and run.json when it starts; metrics.json and the learning-curve plot
when it finishes, from the loop's state and its best OOF."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pandas as pd

from .. import runs
from ..config import RunConfig
from ..files import clean_stale_tmp, sha256
from ..reports import plots
from . import distributed
from .checkpoints import init_source
from .targets import describe_sources


def finish(
    run_dir: Path, comp, data, state: dict[str, Any], facts: dict[str, Any]
) -> dict[str, Any]:
    """metrics.json and the learning-curve plot, from the loop's state (LoopState as a dict), its rows
    (RunData) and the best epoch's OOF. `facts`: loss, device, amp, time_s, parameters."""
    task, table, train_rows = comp.task, data.table, data.train_rows
    history = pd.DataFrame(state["history"])
    plots.learning_curve(history, task.metric, run_dir / runs.PLOTS / "learning_curve.png")
    oof = runs.load_oof(run_dir)
    skipped = table.attrs["skipped_images"]
    result = {
        "competition": comp.name,
        "metric": task.metric,
        "score": state["best_score"],
        "best_epoch": state["best_epoch"],
        "epochs_run": state["epoch"],
        "loss": facts["loss"],
        "fitted": oof["fitted"],
        "n_train": len(train_rows),
        "n_val": len(data.val_rows),
        "skipped_images": skipped["competition"],
        "skipped_external_images": {k: v for k, v in skipped.items() if k != "competition"},
        "n_external": int((table["source"] != "competition").sum()),
        "n_pseudo": int((train_rows["source"] == "pseudo").sum()),
        "pseudo_dropped": table.attrs.get("pseudo_dropped", 0),
        "device": facts["device"],
        "cached_rows": int(table["cached"].sum()) if "cached" in table.columns else 0,
        "amp": facts["amp"],
        "train_images_per_s": float(history["train_images_per_s"].mean()),
        "time_s": facts["time_s"],
        "parameters": facts["parameters"],
        "stopped": facts.get("stopped"),  # None (all epochs), patience or time_limit
        "weights": "swa" if (state.get("swa") or {}).get("selected") else "best_epoch",
        "swa": state.get("swa"),
    }
    if task.kind == "ordinal" and oof["raw"].ndim == 1:  # what the fitted cut points bought
        result["score_rounded"] = task.score(oof["targets"], oof["raw"], {})
    runs.write_metrics(run_dir, result)
    return result


def record_start(
    cfg: RunConfig,
    run_dir: Path,
    data_dir: Path,
    external_dirs: dict[str, str],
    skip_bad_images: bool,
    proto,
) -> None:
    """config.yaml and run.json: what the run is and what it reads (warm start, pseudo tables, teacher: sha256)."""
    clean_stale_tmp(run_dir)  # temp files of a killed earlier attempt
    runs.save_config(run_dir, cfg)
    init = init_source(cfg.init) if cfg.init else None
    runs.write_run_info(
        run_dir,
        {
            "data_dir": str(Path(data_dir).resolve()),
            "skip_bad_images": skip_bad_images,
            "external_dirs": {k: str(Path(v).resolve()) for k, v in external_dirs.items()},
            "world_size": distributed.world_size(),
            "host": socket.gethostname(),  # with pid: kt runs tells a running run from a killed one
            "pid": os.getpid(),
            "preprocess": proto.describe(),
            "init": {"path": str(init.resolve()), "sha256": sha256(init)} if init else None,
            "pseudo": describe_sources(cfg.external),
            "teacher": {"path": str(Path(cfg.teacher).resolve()), "sha256": sha256(cfg.teacher)}
            if cfg.teacher
            else None,
        },
    )
