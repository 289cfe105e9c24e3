"""`kt runs NAME`: the competition's finished runs and run groups, best first."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .. import competitions, runs
from ..config import FIELDS, keys_with
from ..errors import KtError


def runs_table(competition: str, root: str | Path | None = None) -> pd.DataFrame:
    """One row per run and run group of a competition, best first, with what differs from the best."""
    comp = competitions.get(competition)
    rows = []
    for d in runs.competition_runs(comp.name, root):
        m = runs.read_metrics(d)
        cfg = runs.load_config(d).to_dict()
        group = m.get("type") == "group"
        rows.append(
            {
                "run": d.name,
                "kind": "group" if group else "run",
                "score": m["score"],
                "cv": f"{m['mean']:.4f} ± {m['std']:.4f}" if group else "",
                "arch": cfg["arch"],
                "size": cfg["size"],
                "minutes": round(m.get("time_s", 0) / 60, 1),
                "config": cfg,
            }
        )
    if not rows:
        raise KtError(f"no finished runs in {runs.runs_root(root) / comp.name}")
    table = pd.DataFrame(rows).sort_values("score", ascending=False).reset_index(drop=True)
    best = table["config"][0]
    ignore = set(FIELDS) - set(keys_with("diff"))  # seed, fold, workers, device, max_steps
    table["differs from best"] = [
        ", ".join(f"{k}={v}" for k, v in c.items() if k not in ignore and best.get(k) != v)
        for c in table["config"]
    ]
    return table.drop(columns="config")
