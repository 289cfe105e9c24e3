"""`kt runs NAME`: a competition's run groups and runs, each ranked among its own kind, the runs that
have not finished with their state, and `--compare A B` side by side; text that fits 120 columns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from .. import competitions, runs
from ..config import FIELDS, describe, keys_with
from ..errors import KtError

WIDTH = 120
# what "differs from best" and --compare leave out: seed, fold, workers, device, max_steps
IGNORED = set(FIELDS) - set(keys_with("diff"))


def _row(d: Path) -> dict[str, Any]:
    """One folder's row; a folder whose files do not read back is a `damaged` row naming the file."""
    try:
        return _read_row(d)
    except KtError as e:
        return {
            "run": d.name,
            "kind": "run",
            "state": "damaged",
            "score": float("nan"),
            "cv": "",
            "members": 0,
            "epochs": "",
            "arch": "",
            "size": "",
            "minutes": float("nan"),
            "config": {},
            "problem": str(e),
        }


def _read_row(d: Path) -> dict[str, Any]:
    cfg = runs.load_config(d)
    state = runs.run_state(d)
    group = (d / runs.GROUP).is_file() or (d / runs.GROUP_REQUEST).is_file()
    m = runs.read_metrics(d) if state == "finished" else None
    if m is not None and group:
        runs.read_group(d)  # the members' record is checked too
    for member in sorted(p.parent for p in d.glob(f"*/{runs.HISTORY}")) if group else [d]:
        runs.read_history(member)
    members = sorted(p.parent for p in d.glob(f"*/{runs.CONFIG}")) if group else [d]
    return {
        "run": d.name,
        "kind": "group" if group else "run",
        "state": state,
        "score": m["score"] if m else float("nan"),
        "cv": f"{m['mean']:.4f} ± {m['std']:.4f}" if m and group else "",
        "members": len(members) if group else 1,
        "epochs": f"{max((runs.epochs_done(x) for x in members), default=0)}/{cfg.epochs}",
        "arch": cfg.arch,
        "size": cfg.size,
        "minutes": round(m.get("time_s", 0) / 60, 1) if m and not group else float("nan"),
        "config": cfg.to_dict(),
        "problem": "",
    }


def runs_table(competition: str, root: str | Path | None = None) -> pd.DataFrame:
    """One row per run and run group, finished or not: groups first, then runs, each kind best first
    (a group's pooled OOF is not ranked against single runs), unfinished ones last; "differs from
    best" names the keys that differ from the best of the same kind."""
    comp = competitions.get(competition)
    rows = [_row(d) for d in runs.run_folders(comp.name, root)]
    if not rows:
        raise KtError(
            f"no runs in {runs.runs_root(root) / comp.name}; train one with kt train {comp.name}"
        )
    table = pd.DataFrame(rows)
    table["order"] = table["kind"].map({"group": 0, "run": 1}) + 2 * (table["state"] != "finished")
    table = table.sort_values(["order", "score"], ascending=[True, False], na_position="last")
    table = table.drop(columns="order").reset_index(drop=True)
    differs = []
    for _, row in table.iterrows():
        finished = table.index[(table["kind"] == row["kind"]) & (table["state"] == "finished")]
        best = table["config"][finished[0]] if len(finished) else row["config"]
        changed = {k: v for k, v in row["config"].items() if k not in IGNORED and best.get(k) != v}
        differs.append(describe(changed) if changed else "")
    table["differs from best"] = [p or d for p, d in zip(table["problem"], differs, strict=True)]
    return table.drop(columns=["config", "problem"])


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _block(title: str, frame: pd.DataFrame, columns: list[str], width: int) -> list[str]:
    """A titled table whose last column is cut to fit `width`."""
    if frame.empty:
        return []
    cells = frame[columns].astype(str).replace({"nan": "", "<NA>": ""})
    cells["run"] = [_clip(r, 44) for r in cells["run"]]
    widths = {c: max(len(c), *(len(v) for v in cells[c])) for c in columns[:-1]}
    head = "  ".join(c.ljust(widths[c]) for c in columns[:-1]) + "  " + columns[-1]
    lines = [title, _clip("  " + head, width)]
    for _, r in cells.iterrows():
        lines.append(
            _clip(
                "  "
                + "  ".join(r[c].ljust(widths[c]) for c in columns[:-1])
                + "  "
                + r[columns[-1]],
                width,
            )
        )
    return [*(line.rstrip() for line in lines), ""]


def format_table(table: pd.DataFrame, metric: str, *, width: int = WIDTH) -> str:
    """kt runs' text: groups, runs, then the unfinished runs with their state and --resume hint."""
    table = table.assign(score=[f"{v:.4f}" if v == v else "" for v in table["score"]])
    done = table[table["state"] == "finished"].rename(
        columns={"score": metric, "cv": f"cv {metric}"}
    )
    groups, single = done[done["kind"] == "group"], done[done["kind"] == "run"]
    pending = table[table["state"] != "finished"]
    lines = _block(
        "run groups (CV mean ± std over members; pooled OOF scored on every row once)",
        groups.rename(columns={metric: "pooled"}),
        ["run", f"cv {metric}", "pooled", "members", "arch", "size", "differs from best"],
        width,
    )
    lines += _block(
        "runs (best first)",
        single,
        ["run", metric, "epochs", "minutes", "arch", "size", "differs from best"],
        width,
    )
    lines += _block(
        "not finished (stopped: continue with kt train --resume RUN; damaged: a file does not read back)",
        pending.assign(kind=pending["kind"]),
        ["run", "state", "kind", "epochs", "arch", "size", "differs from best"],
        width,
    )
    return "\n".join(lines).rstrip()


def _find(competition: str, name: str, root: str | Path | None) -> Path:
    path = Path(name)
    if (path / runs.CONFIG).is_file():
        return path
    candidate = runs.runs_root(root) / competition / name
    if (candidate / runs.CONFIG).is_file():
        return candidate
    raise KtError(
        f"--compare {name}: neither a run folder nor a run of {competition} under "
        f"{runs.runs_root(root) / competition}; kt runs {competition} lists them"
    )


def compare(
    competition: str, a: str, b: str, root: str | Path | None = None
) -> list[tuple[str, str, str]]:
    """Two runs side by side: state, scores and time, then every config key whose values differ."""
    comp = competitions.get(competition)
    dirs = [_find(comp.name, x, root) for x in (a, b)]
    for d in dirs:
        other = runs.load_config(d).competition
        if other != comp.name:
            raise KtError(
                f"--compare {d}: a {other} run, not {comp.name}; compare runs of one competition"
            )
    rows = [_read_row(d) for d in dirs]
    metrics = [
        runs.read_metrics(d) if r["state"] == "finished" else None
        for d, r in zip(dirs, rows, strict=True)
    ]
    out = [("run", rows[0]["run"], rows[1]["run"]), ("state", rows[0]["state"], rows[1]["state"])]
    out.append(
        (comp.task.metric, *(f"{r['score']:.4f}" if r["state"] == "finished" else "" for r in rows))
    )
    if any(r["cv"] for r in rows):
        out.append((f"cv {comp.task.metric}", rows[0]["cv"], rows[1]["cv"]))
    out.append(("epochs", rows[0]["epochs"], rows[1]["epochs"]))
    for key, label in (("best_epoch", "best epoch"), ("train_images_per_s", "train images/s")):
        values = [m.get(key) if m else None for m in metrics]
        if any(v is not None for v in values):
            out.append(
                (
                    label,
                    *(
                        "" if v is None else f"{v:.1f}" if isinstance(v, float) else str(v)
                        for v in values
                    ),
                )
            )
    configs = [r["config"] for r in rows]
    for key in FIELDS:
        if configs[0].get(key) != configs[1].get(key):
            out.append((key, *(describe({key: c.get(key)}).split("=", 1)[1] for c in configs)))
    return out


def format_compare(rows: list[tuple[str, str, str]], *, width: int = WIDTH) -> str:
    key_w = max(len(r[0]) for r in rows)
    col = (width - key_w - 4) // 2
    return "\n".join(
        f"{k.ljust(key_w)}  {_clip(a, col).ljust(col)}  {_clip(b, col)}".rstrip()
        for k, a, b in rows
    )
