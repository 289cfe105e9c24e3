"""The study report's tables beyond the figure: the whole grid (every trial, as the paper's Appendix A
lists what was searched) and the paper's published figures beside the measured ones.

`paper.csv` holds figures from the paper's text, each with its source. Only figures stated in the
text are there (Melanoma's correlation and slope; Cassava's above 70 % ImageNet top-1); the others
are read off the paper's plots and are not transcribed.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .. import competitions
from .grid import GRIDS
from .stats import correlations
from .storage import grid_studies, open_storage

PAPER_CSV = Path(__file__).with_name("paper.csv")
VIEWS = {"all": None, "top1>=70": 70.0}


def grid_table(competition: str, storage_url: str, grid: str | None = None) -> pd.DataFrame:
    """Every finished trial of the grid (a point trained by two studies once): arch, optimizer, lr,
    weight decay (the grid's value), schedule, the validation score and the reported one (CCT-20:
    cis_test; HPA: test_val), best epoch, parameters."""
    import json

    import optuna

    comp = competitions.get(competition)
    storage = open_storage(storage_url)
    rows, seen = [], set()
    for name in grid_studies(comp.name, storage, grid):
        study = optuna.load_study(study_name=name, storage=storage)
        lr_lists = study.user_attrs.get("lr") or GRIDS["paper"]["lr"]  # each optimizer's lr list
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            if json.dumps(t.params, sort_keys=True) in seen:
                continue
            seen.add(json.dumps(t.params, sort_keys=True))
            p, heldout = t.params, t.user_attrs.get("heldout") or {}
            lrs = lr_lists.get(p["optimizer"], [])
            rows.append(
                {
                    "arch": p["arch"],
                    "optimizer": p["optimizer"],
                    "lr": lrs[p["lr_index"]] if p["lr_index"] < len(lrs) else None,
                    "weight_decay": p["weight_decay"],
                    "schedule": p["schedule"],
                    "score": t.value,
                    "reported": heldout.get(comp.evaluation.reported, t.value),
                    **heldout,
                    "best_epoch": t.user_attrs.get("best_epoch"),
                    "parameters_m": (t.user_attrs.get("parameters") or float("nan")) / 1e6,
                }
            )
    columns = ["arch", "optimizer", "lr", "weight_decay", "schedule"]
    return (
        pd.DataFrame(rows).sort_values(columns).reset_index(drop=True)
        if rows
        else pd.DataFrame(columns=columns)
    )


def paper_figures() -> pd.DataFrame:
    return pd.read_csv(PAPER_CSV)


def compare(competition: str, table: pd.DataFrame) -> pd.DataFrame:
    """The paper's figures for this dataset beside the same statistics over the measured models."""
    figures = paper_figures()
    figures = figures[figures["dataset"] == competition]
    measured = {}
    known = table.dropna(subset=["imagenet_top1"])
    for view, floor in VIEWS.items():
        shown = known if floor is None else known[known["imagenet_top1"] >= floor]
        measured[view] = correlations(
            shown["imagenet_top1"].to_numpy(float), shown["reported"].to_numpy(float)
        )
    rows = [
        {
            "dataset": competition,
            "view": f.view,
            "statistic": f.statistic,
            "paper": f.value,
            "measured": measured.get(f.view, {}).get(f.statistic),
            "models": measured.get(f.view, {}).get("models"),
            "source": f.source,
        }
        for f in figures.itertuples()
    ]
    for view, stats in measured.items():  # the statistics the paper did not state in its text
        stated = set(figures.loc[figures["view"] == view, "statistic"])
        rows += [
            {
                "dataset": competition,
                "view": view,
                "statistic": s,
                "paper": None,
                "measured": stats[s],
                "models": stats["models"],
                "source": "not stated in the paper's text",
            }
            for s in ("pearson", "spearman", "slope")
            if s not in stated
        ]
    return pd.DataFrame(rows)
