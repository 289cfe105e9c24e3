"""`kt report RUN|GROUP|ENSEMBLE.json`: the PNGs people would rather look at, and a short markdown summary.

Runs and groups: learning curves, and from the OOF a confusion matrix (multiclass, ordinal), QWK as
the cut points shift (ordinal), per-class F1 and thresholds (multilabel), the ROC curve (binary).
Ensembles: members' weights and OOF scores against the blend's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import competitions, metrics, runs
from .ensemble import load_spec
from .errors import KtError
from .fsutil import atomic_path, write_text
from .tasks import sigmoid


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    _plt().close(fig)
    return path


def confusion(y: np.ndarray, pred: np.ndarray, names: list[str], path: Path) -> Path:
    from sklearn.metrics import confusion_matrix

    plt = _plt()
    cm = confusion_matrix(y, pred, labels=range(len(names)))
    fig, ax = plt.subplots(figsize=(1 + 0.6 * len(names), 1 + 0.5 * len(names)))
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", color="black" if v < cm.max() / 2 else "white")
    ax.set(xticks=range(len(names)), yticks=range(len(names)), xlabel="predicted", ylabel="true",
           title="Confusion matrix (OOF)")
    ax.set_xticklabels(names, rotation=45, ha="right")
    ax.set_yticklabels(names)
    return _save(fig, path)


def cut_shift(raw: np.ndarray, y: np.ndarray, cuts: list[float], path: Path) -> Path:
    """QWK as every cut point moves by the same offset: how sharp the fitted optimum is."""
    plt = _plt()
    offsets = np.linspace(-1, 1, 81)
    fitted = [metrics.qwk(y, metrics.apply_cutpoints(raw, np.asarray(cuts) + o)) for o in offsets]
    rounding = metrics.qwk(y, metrics.apply_cutpoints(raw, np.arange(len(cuts)) + 0.5))
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(offsets, fitted, label="fitted cut points + offset")
    ax.axhline(rounding, color="grey", linestyle="--", label=f"plain rounding {rounding:.4f}")
    ax.set(xlabel="offset added to every cut point", ylabel="QWK", title="QWK vs cut points (OOF)")
    ax.legend()
    return _save(fig, path)


def per_class_f1(prob: np.ndarray, y: np.ndarray, thresholds: list[float], names: list[str], *, path: Path) -> Path:
    from sklearn.metrics import f1_score

    plt = _plt()
    f1 = f1_score(y, prob >= np.asarray(thresholds), average=None, zero_division=0)
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(names)), 4))
    x = np.arange(len(names))
    ax.bar(x, f1, label="F1")
    ax.plot(x, thresholds, "r.", label="threshold")
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=90)
    ax.set(ylim=(0, 1), title=f"Per-class F1 (macro {f1.mean():.4f}) and fitted thresholds")
    ax.legend()
    return _save(fig, path)


def roc(prob: np.ndarray, y: np.ndarray, path: Path) -> Path:
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _plt()
    fpr, tpr, _ = roc_curve(y, prob)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(fpr, tpr, label=f"AUC {roc_auc_score(y, prob):.4f}")
    ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (OOF)")
    ax.legend()
    return _save(fig, path)


def ensemble_weights(spec: dict[str, Any], path: Path) -> Path:
    plt = _plt()
    members = spec["members"]
    labels = [Path(m["run"]).name for m in members]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 0.5 * len(members) + 2))
    a.barh(labels, [m["weight"] for m in members])
    a.set(title=f"weights ({spec['method']})")
    b.barh(labels + ["blend"], [m["oof_score"] for m in members] + [spec["oof_score"]],
           color=["tab:blue"] * len(members) + ["tab:green"])
    b.set(title=f"OOF {spec['metric']} (gain {spec['gain']:+.4f})")
    return _save(fig, path)


def report(target: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    target = Path(target)
    if target.suffix == ".json" and target.is_file():
        spec = load_spec(target)  # the one schema every reader of a spec goes through
        for key in ("metric", "oof_score", "gain"):
            if not isinstance(spec.get(key), (str if key == "metric" else (int, float))):
                raise KtError(f"{target}: {key!r} is missing or mistyped; the spec is damaged: rebuild it with "
                              "kt ensemble")
        if not all(isinstance(m.get("oof_score"), (int, float)) and isinstance(m.get("run"), str)
                   for m in spec["members"]):
            raise KtError(f"{target}: a member lacks its run or OOF score; rebuild the spec with kt ensemble")
        out_dir = Path(out) if out else target.with_suffix("")
        png = ensemble_weights(spec, out_dir / "ensemble.png")
        lines = [f"# Ensemble {target.name}", "", f"blend ({spec['method']}) OOF {spec['metric']} "
                 f"{spec['oof_score']:.4f}, {spec['gain']:+.4f} over the best member", "",
                 "| member | weight | OOF |", "|---|---|---|"]
        lines += [f"| {m['run']} | {m['weight']:.3f} | {m['oof_score']:.4f} |" for m in spec["members"]]
        lines += ["", f"![weights]({png.name})"]
        write_text(out_dir / "report.md", "\n".join(lines) + "\n")
        return {"dir": str(out_dir), "pngs": [str(png)]}
    oof = runs.load_oof(target)
    if oof is None:
        raise KtError(f"{target} is not a run, a run group or an ensemble spec (no {runs.OOF}); "
                      "pass runs/<competition>/<run> or an ensembles/*.json")
    cfg = runs.load_config(target).to_dict()
    comp = competitions.for_config(cfg)
    task = comp.task
    raw, y, fitted = oof["raw"], oof["targets"], oof["fitted"]
    out_dir = Path(out) if out else target / "plots"
    pngs = []
    if task.kind in ("multiclass", "ordinal"):
        pngs.append(confusion(y.astype(int), task.decode(raw, fitted), comp.class_names, out_dir / "confusion.png"))
    if task.kind == "ordinal":
        pngs.append(cut_shift(raw.reshape(-1), y, fitted["cutpoints"], out_dir / "cutpoints.png"))
    if task.kind == "multilabel":
        pngs.append(per_class_f1(sigmoid(raw), y, fitted["thresholds"], comp.class_names,
                                 path=out_dir / "per_class.png"))
    if task.kind == "binary":
        pngs.append(roc(sigmoid(raw.reshape(-1)), y, out_dir / "roc.png"))
    histories = sorted(target.glob("*/history.csv")) or [target / "history.csv"]
    from .plots import learning_curve

    for h in histories:
        if h.is_file():
            try:
                history = pd.read_csv(h)
            except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
                raise KtError(f"{h} is not a readable history (one row per epoch); the run's files are damaged") \
                    from None
            needed = {"epoch", "train_loss", "val_loss", "score"}
            if not needed <= set(history.columns) or not all(
                    pd.api.types.is_numeric_dtype(history[c]) for c in needed):
                raise KtError(f"{h} lacks numeric {', '.join(sorted(needed))} columns; the run's files are damaged")
            pngs.append(learning_curve(history, task.metric, out_dir / f"learning_curve_{h.parent.name}.png"))
    score = task.score(y, raw, fitted)
    lines = [f"# {target.name}", "", f"{comp.name}, {task.metric} on {len(y)} OOF rows: **{score:.4f}**", "",
             f"arch {cfg['arch']}, size {cfg['size']}, pool {cfg['pool']}, loss {cfg.get('loss') or task.default_loss}"
             f", augment {cfg['augment']}", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in pngs]
    write_text(out_dir / "report.md", "\n".join(lines) + "\n")
    return {"dir": str(out_dir), "pngs": [str(p) for p in pngs], "score": score}


def leaderboard(competition: str, root: str | Path | None = None) -> pd.DataFrame:
    """One row per run and run group of a competition, best first, with what differs from the best."""
    comp = competitions.get(competition)
    rows = []
    for d in runs.competition_runs(comp.name, root):
        m = runs.read_metrics(d)
        cfg = runs.load_config(d).to_dict()
        group = m.get("type") == "group"
        rows.append({"run": d.name, "kind": "group" if group else "run", "score": m["score"],
                     "cv": f"{m['mean']:.4f} ± {m['std']:.4f}" if group else "",
                     "arch": cfg["arch"], "size": cfg["size"], "minutes": round(m.get("time_s", 0) / 60, 1),
                     "config": cfg})
    if not rows:
        raise KtError(f"no finished runs in {runs.runs_root(root) / comp.name}")
    table = pd.DataFrame(rows).sort_values("score", ascending=False).reset_index(drop=True)
    best = table["config"][0]
    ignore = {"seed", "fold", "workers", "device", "max_steps"}
    table["differs from best"] = [", ".join(f"{k}={v}" for k, v in c.items() if k not in ignore and best.get(k) != v)
                                  for c in table["config"]]
    return table.drop(columns="config")
