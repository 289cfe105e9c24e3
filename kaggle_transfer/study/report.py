"""`kt study report`: the paper's figure and table from a study's storage and run folders.

Normalised slope (stated in the report): both axes min-max scaled to [0, 1] over the models shown,
then the least-squares slope of task score on ImageNet top-1. 1 means the task improves as fast as
ImageNet across the range; near 0 means ImageNet progress does not transfer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from .. import competitions
from ..errors import KtError
from ..files import atomic_path, write_text
from ..reports import plots
from .appendix import compare, grid_table
from .archs import imagenet_top1
from .stats import SLOPE_DEFINITION, correlations, secondary_accuracy
from .storage import default_storage, grid_studies, masked, open_storage


def read_top1(path: str | Path | None) -> dict[str, tuple[float, str]]:
    """A user's ImageNet numbers for archs outside the study's table: CSV arch,top1[,source]."""
    if not path:
        return {}
    df = pd.read_csv(path)
    if not {"arch", "top1"} <= set(df.columns):
        raise KtError(f"--top1 {path} needs columns arch,top1 (and optionally source)")
    return {
        r.arch: (float(r.top1), getattr(r, "source", f"--top1 {Path(path).name}"))
        for r in df.itertuples()
    }


def _heldout(trial, split: str) -> float:
    return float((trial.user_attrs.get("heldout") or {}).get(split, np.nan))


def study_table(
    competition: str,
    storage_url: str,
    top1: dict[str, tuple[float, str]] | None = None,
    *,
    grid: str | None = None,
) -> pd.DataFrame:
    """One row per arch: best score over every study of the grid (a point trained twice counts once),
    its hyperparameters, trials done, ImageNet top-1 and source, the held-out scores."""
    import optuna

    comp = competitions.get(competition)
    storage = open_storage(storage_url)
    names = grid_studies(comp.name, storage, grid)
    if not names:
        import optuna

        ablations = any(
            s.user_attrs.get("kind") == "ablation" and s.study_name.startswith(f"{comp.name}-")
            for s in optuna.get_all_study_summaries(storage)
        )
        raise KtError(
            f"no grid study of {comp.name} in {masked(storage_url)}, only ablations: kt study "
            f"ablate wrote their reports to runs/{comp.name}/ablation-report/"
            if ablations
            else f"no study of {comp.name} in {masked(storage_url)}; run kt study run {comp.name} first"
        )
    by_arch: dict[str, dict[str, Any]] = {}  # arch → {point: trial}, each point once
    studies: dict[str, str] = {}
    for name in names:
        study = optuna.load_study(study_name=name, storage=storage)
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            point = json.dumps(t.params, sort_keys=True)
            by_arch.setdefault(t.params["arch"], {}).setdefault(point, t)
            studies.setdefault(t.params["arch"], name)
    rows = []
    for arch in sorted(by_arch):
        trials = list(by_arch[arch].values())
        best = max(trials, key=lambda t: t.value)
        value, source = (top1 or {}).get(arch) or imagenet_top1(arch)
        heldout = best.user_attrs.get("heldout") or {}
        reported = comp.evaluation.reported
        # the test score the grid's best would have had: not a selection a user could make, shown
        # beside the validation-selected one as the released script printed both (sample_train.py)
        best_heldout = (
            {f"best_{reported}": max(_heldout(t, reported) for t in trials)} if reported else {}
        )
        rows.append(
            {
                "study": studies[arch],
                "arch": arch,
                "imagenet_top1": value,
                "top1_source": source,
                "score": best.value,
                "metric": comp.task.metric,
                # what the paper plots: the held-out split it reports (CCT-20 cis_test), else validation
                "reported": heldout.get(comp.evaluation.reported, best.value),
                "reported_split": reported if reported in heldout else "validation",
                **heldout,
                **best_heldout,
                "size": best.user_attrs.get("size"),
                "external": ",".join(best.user_attrs.get("external") or []),
                "parameters_m": (best.user_attrs.get("parameters") or float("nan")) / 1e6,
                "accuracy": best.user_attrs["accuracy"]
                if "accuracy" in best.user_attrs
                else secondary_accuracy(Path(best.user_attrs["run_dir"]), comp),
                "host": best.user_attrs.get("host"),
                "best_params": json.dumps({k: v for k, v in best.params.items() if k != "arch"}),
                "trials_done": len(trials),
                "run_dir": best.user_attrs["run_dir"],
            }
        )
    if not rows:
        raise KtError(f"the {comp.name} study in {masked(storage_url)} has no finished trial yet")
    return (
        pd.DataFrame(rows).sort_values("imagenet_top1", na_position="first").reset_index(drop=True)
    )


def not_the_papers(competition: str, table: pd.DataFrame) -> str | None:
    """Why these trials are not the paper's experiment, or None: a dataset whose study split holds
    external data (SIIM-ISIC's 2019 shards) trained without it validates on other rows."""
    comp = competitions.get(competition)
    needed = set(comp.paper.external)
    if not needed:
        return None
    used = [set(filter(None, str(e).split(","))) for e in table.get("external", [])]
    short = [a for a, u in zip(table["arch"], used, strict=True) if not needed <= u]
    if not short:
        return None
    sources = ",".join(sorted(needed))
    return (
        f"{competition}: {len(short)} of {len(table)} models trained without {sources}; the "
        f"study's split validates on those rows too, so these are another experiment than the "
        f"paper's (kt study {competition} --set external={sources} --external-dir {sources}=FOLDER)"
    )


def figure(
    table: pd.DataFrame, competition: str, path: Path, *, min_top1: float | None = None
) -> dict[str, float]:
    """study.png when a model has an ImageNet top-1 (else nothing to plot: no file); correlations
    need three models (below that the stats are NaN and the title says so)."""
    known = table.dropna(subset=["imagenet_top1"])
    if min_top1 is not None:  # the paper's "above 70 % ImageNet" view
        known = known[known["imagenet_top1"] >= min_top1]
    stats = correlations(known["imagenet_top1"].to_numpy(float), known["reported"].to_numpy(float))
    if known.empty:
        path.unlink(missing_ok=True)  # an older report's plot would show other models
        return stats
    metric = table["metric"].iloc[0] if len(table) else ""
    title = (
        f"{competition}: {len(known)} model(s) with an ImageNet top-1; a correlation needs three"
        if len(known) < 3
        else f"{competition}: Pearson {stats['pearson']:.2f}, Spearman {stats['spearman']:.2f}, "
        f"slope {stats['slope']:.2f} [{stats['slope_low']:.2f}, {stats['slope_high']:.2f}]"
        + (f" (top-1 >= {min_top1:g}%)" if min_top1 is not None else "")
    )
    plots.transfer_scatter(
        known,
        ylabel=f"{competition} {metric} (best over the grid)",
        title=title,
        footnote=SLOPE_DEFINITION,
        path=path,
    )
    return stats


def report_studies(
    competition: str | None,
    *,
    every: bool = False,
    root: Path,
    storage_url: str | None = None,
    top1_file: str | Path | None = None,
    min_top1: float | None = None,
    grid: str | None = None,
) -> tuple[dict[str, dict[str, Any]], pd.DataFrame | None]:
    """`kt study report`: one competition's report, or with `every` each competition that has a study
    under `root` plus the cross-dataset table."""
    names = (
        [p.parent.name for p in sorted(Path(root).glob("*/study.db"))]
        if every
        else [competition]
        if competition
        else []
    )
    if not names:
        raise KtError("name a competition (kt study report NAME) or pass --all")
    results = {
        name: report(
            name,
            storage_url or default_storage(root, name),
            Path(root) / name / "study-report",
            top1_file,
            min_top1=min_top1,
            grid=grid,
        )
        for name in names
    }
    across = (
        report_all({n: r["table"] for n, r in results.items()})
        if every and len(results) > 1
        else None
    )
    return results, across


def report(
    competition: str,
    storage_url: str,
    out_dir: Path,
    top1_file: str | Path | None = None,
    *,
    min_top1: float | None = None,
    grid: str | None = None,
) -> dict[str, Any]:
    """study.csv (one row per model), grid.csv (every trial), compare.csv (the paper's figures beside
    the measured ones), study.png and study.md."""
    table = study_table(competition, storage_url, read_top1(top1_file), grid=grid)
    out_dir.mkdir(parents=True, exist_ok=True)
    trials, versus = grid_table(competition, storage_url, grid), compare(competition, table)
    for name, frame in (("study.csv", table), ("grid.csv", trials), ("compare.csv", versus)):
        with atomic_path(out_dir / name) as tmp:
            frame.to_csv(tmp, index=False)
    stats = figure(table, competition, out_dir / "study.png", min_top1=min_top1)
    shown = table.drop(columns=["run_dir", "study"]).to_string(index=False)
    plotted = (out_dir / "study.png").is_file()
    warning = not_the_papers(competition, table)
    write_text(
        out_dir / "study.md",
        f"# Study: {competition}\n\n"
        + (f"**Warning:** {warning}.\n\n" if warning else "")
        + f"```\n{shown}\n```\n\n{summary_line(stats)}.\n\n"
        + (f"{SLOPE_DEFINITION}.\n\n![study](study.png)\n\n" if plotted else "")
        + f"## The paper's figures beside these\n\n```\n{versus.to_string(index=False)}\n```\n\n"
        f"## Every trial of the grid\n\n```\n{trials.to_string(index=False)}\n```\n",
    )
    names = (
        ("study.csv", "grid.csv", "compare.csv")
        + (("study.png",) if plotted else ())
        + ("study.md",)
    )
    files = [str(out_dir / n) for n in names]
    return {"table": table, "stats": stats, "compare": versus, "files": files, "warning": warning}


def summary_line(stats: dict[str, float]) -> str:
    if stats["models"] < 3:
        return (
            f"no correlation: {stats['models']} model(s) with an ImageNet top-1, three are needed "
            "(kt study report --top1 FILE gives the others)"
        )
    return (
        f"Pearson {stats['pearson']:.3f} (p {stats['pearson_p']:.3g}), Spearman {stats['spearman']:.3f} "
        f"(p {stats['spearman_p']:.3g}), slope {stats['slope']:.3f} [95% {stats['slope_low']:.3f}, "
        f"{stats['slope_high']:.3f}], min-max slope {stats['minmax_slope']:.3f} over "
        f"{stats['models']} models"
    )


def report_all(
    tables: dict[str, pd.DataFrame], *, resamples: int = 2000, seed: int = 0
) -> pd.DataFrame:
    """Across datasets (the paper's Appendix N.2 view): each dataset's Spearman correlation with ImageNet
    top-1 and with the mean score of the other datasets, over the archs every study shares, with
    p-values, and a bootstrap over models of how often ImageNet predicts the dataset at least as well
    as the other datasets do (`p_imagenet_as_good`)."""
    scores = pd.DataFrame(
        {
            name: t.set_index("arch")["reported" if "reported" in t else "score"]
            for name, t in tables.items()
        }
    ).dropna()
    first = next(iter(tables.values())).set_index("arch")["imagenet_top1"]
    top1 = pd.Series({a: first.get(a) for a in scores.index}, dtype=float).to_numpy()
    rng, rows = np.random.default_rng(seed), []
    for name in scores.columns:
        mine, others = scores[name].to_numpy(), scores.drop(columns=name).mean(axis=1).to_numpy()
        row = {"dataset": name, "models": len(scores)}
        if len(scores) >= 3 and scores.shape[1] > 1:
            (r_in, p_in), (r_out, p_out) = spearmanr(top1, mine), spearmanr(others, mine)
            draws = (rng.integers(0, len(mine), len(mine)) for _ in range(resamples))
            # a draw whose correlations are undefined (a constant sample) counts for neither side;
            # with none defined the share is undefined (nan), not 0
            pairs = [
                (spearmanr(top1[i], mine[i])[0], spearmanr(others[i], mine[i])[0]) for i in draws
            ]
            wins = [float(a >= b) for a, b in pairs if np.isfinite(a) and np.isfinite(b)]
            row.update(
                spearman_vs_imagenet=r_in,
                p_vs_imagenet=p_in,
                spearman_vs_other_datasets=r_out,
                p_vs_other_datasets=p_out,
                p_imagenet_as_good=float(np.mean(wins)) if wins else float("nan"),
            )
        rows.append(row)
    return pd.DataFrame(rows)
