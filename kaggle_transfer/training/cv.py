"""Cross-validation run groups: every chosen fold (and seed) as a normal run, one pooled OOF.

runs/<competition>/<stamp>_<label>/
    fold0/ fold1/ …           (seed{s}_fold{k}/ with several seeds): ordinary run folders
    group.json                members, per-fold scores, mean ± std, pooled OOF score
    metrics.json, oof.npz     the group seen as one run: pooled score and OOF (what ensembles use)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from .. import competitions, runs
from ..config import RunConfig
from ..errors import KtError
from ..files import write_json


def parse_folds(text: str | None, n_folds: int) -> list[int] | None:
    """`all` → every fold, `0,2` → those folds; None/empty → not a CV run."""
    if not text:
        return None
    if text == "all":
        return list(range(n_folds))
    try:
        folds = sorted({int(t) for t in text.split(",") if t.strip()})
    except ValueError:
        raise KtError(
            f"--folds {text!r}: give a number of folds, 'all', or fold ids like 0,2"
        ) from None
    if not folds or folds[0] < 0 or folds[-1] >= n_folds:
        raise KtError(f"--folds {text!r}: fold ids must be in 0..{n_folds - 1}")
    return folds


def group_split(cfg: RunConfig) -> RunConfig:
    """The config a --folds group's members train on: folds need a k-fold split, so the paper's
    fixed split becomes kfold."""
    if (cfg.split or competitions.for_config(cfg).default_split) == "paper":
        return dataclasses.replace(cfg, split="kfold")
    return cfg


def fit_group(
    cfg: RunConfig,
    group_dir: Path,
    data_dir: Path,
    folds: list[int] | None,
    *,
    seeds: int = 1,
    external_dirs: dict[str, str] | None = None,
    skip_bad_images: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train every (seed, fold); pool their OOF; a finished member is not trained again (resumable).
    `folds` None: the run's own split and fold, once per seed (kt train --seeds N alone)."""
    from .loop import fit

    if folds is None:
        folds = [cfg.fold]
    else:
        cfg = group_split(cfg)
    members = []
    for s in range(seeds):
        for k in folds:
            name = f"seed{cfg.seed + s}_fold{k}" if seeds > 1 else f"fold{k}"
            run_dir = group_dir / name
            run_dir.mkdir(parents=True, exist_ok=True)
            member_cfg = dataclasses.replace(cfg, fold=k, seed=cfg.seed + s)
            result = runs.read_metrics(run_dir)
            if result is not None and runs.load_config(run_dir).epochs != cfg.epochs:
                result = None  # the group was extended (--resume GROUP --epochs N): train on
            if result is None:
                resume = (run_dir / runs.LAST).is_file()
                print(
                    f"{'resuming' if resume else 'training'} {name} ({len(members) + 1} of "
                    f"{seeds * len(folds)})",
                    flush=True,
                )
                result = fit(
                    member_cfg,
                    run_dir,
                    data_dir,
                    external_dirs=external_dirs,
                    resume=resume,
                    skip_bad_images=skip_bad_images,
                    progress=progress,
                )
            members.append({"dir": name, "fold": k, "seed": cfg.seed + s, "score": result["score"]})
            print(
                f"{name}: {result['metric'] if 'metric' in result else 'score'} "
                f"{result['score']:.4f}",
                flush=True,
            )
    return summarise(group_dir, cfg, members)


def pool_oof(
    group_dir: Path, members: list[dict[str, Any]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, raw, targets) over every validated row; seeds of the same row are averaged."""
    raw_by_id: dict[str, list[np.ndarray]] = {}
    target_by_id: dict[str, np.ndarray] = {}
    for m in members:
        oof = runs.load_oof(group_dir / m["dir"])
        for i, r, t in zip(oof["ids"], oof["raw"], oof["targets"], strict=True):
            raw_by_id.setdefault(str(i), []).append(r)
            target_by_id[str(i)] = t
    ids = np.array(sorted(raw_by_id))
    return (
        ids,
        np.stack([np.mean(raw_by_id[i], axis=0) for i in ids]),
        np.stack([target_by_id[i] for i in ids]),
    )


def summarise(group_dir: Path, cfg: RunConfig, members: list[dict[str, Any]]) -> dict[str, Any]:
    comp = competitions.for_config(cfg)
    ids, raw, targets = pool_oof(group_dir, members)
    fitted = comp.task.fit(raw, targets)
    pooled = comp.task.score(targets, raw, fitted)
    scores = [m["score"] for m in members]
    summary = {
        "type": "group",
        "competition": comp.name,
        "metric": comp.task.metric,
        "members": members,
        "score": pooled,
        "pooled_score": pooled,
        "mean": float(np.mean(scores)),
        "std": float(np.std(scores)),
        "fitted": fitted,
        "rows": len(ids),
        "config": cfg.to_dict(),
        "time_s": sum(runs.read_metrics(group_dir / m["dir"]).get("time_s", 0) for m in members),
    }
    runs.write_group(group_dir, summary)
    write_json(group_dir / runs.METRICS, {k: v for k, v in summary.items() if k != "config"})
    runs.save_oof(group_dir, ids, raw, targets, fitted=fitted)
    runs.save_config(group_dir, cfg)
    return summary
