"""`kt report RUN|GROUP|ENSEMBLE.json`: the PNGs people would rather look at, and a short markdown summary.

Runs and groups: learning curves, and from the OOF a confusion matrix (multiclass, ordinal), QWK as
the cut points shift (ordinal), per-class F1 and thresholds (multilabel), the ROC curve (binary).
Ensembles: members' weights and OOF scores against the blend's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import competitions, runs
from ..errors import KtError
from ..files import write_text
from ..inference.ensemble import load_spec
from ..tasks import sigmoid
from . import losses
from .plots import confusion, cut_shift, ensemble_weights, learning_curve, per_class_f1, roc


def _members_table(group: dict[str, Any] | None, metric: str) -> list[str]:
    """A run group's members, one row each, then their mean ± std and the pooled OOF score."""
    if not group:
        return []
    lines = [f"| member | fold | seed | {metric} |", "|---|---|---|---|"]
    lines += [
        f"| {m['dir']} | {m['fold']} | {m['seed']} | {m['score']:.4f} |" for m in group["members"]
    ]
    lines += [
        f"| **mean ± std** | | | **{group['mean']:.4f} ± {group['std']:.4f}** |",
        f"| pooled OOF ({group.get('rows', '?')} rows) | | | {group['pooled_score']:.4f} |",
        "",
    ]
    return lines


def report(
    target: str | Path, out: str | Path | None = None, *, per_class: bool = False
) -> dict[str, Any]:
    """A run's, group's or ensemble spec's PNGs and report.md; `per_class` adds one top-losses
    gallery per true class (plots/top_losses_<class>.png)."""
    target = Path(target)
    if target.suffix == ".json" and target.is_file():
        spec = load_spec(target)  # the one schema every reader of a spec goes through
        for key in ("metric", "oof_score", "gain"):
            if not isinstance(spec.get(key), (str if key == "metric" else (int, float))):
                raise KtError(
                    f"{target}: {key!r} is missing or mistyped; the spec is damaged: rebuild it with "
                    "kt ensemble"
                )
        if not all(
            isinstance(m.get("oof_score"), (int, float)) and isinstance(m.get("run"), str)
            for m in spec["members"]
        ):
            raise KtError(
                f"{target}: a member lacks its run or OOF score; rebuild the spec with kt ensemble"
            )
        out_dir = Path(out) if out else target.with_suffix("")
        png = ensemble_weights(spec, out_dir / "ensemble.png")
        lines = [
            f"# Ensemble {target.name}",
            "",
            f"blend ({spec['method']}) OOF {spec['metric']} "
            f"{spec['oof_score']:.4f}, {spec['gain']:+.4f} over the best member",
            "",
            "| member | weight | OOF |",
            "|---|---|---|",
        ]
        lines += [
            f"| {m['run']} | {m['weight']:.3f} | {m['oof_score']:.4f} |" for m in spec["members"]
        ]
        lines += ["", f"![weights]({png.name})"]
        write_text(out_dir / "report.md", "\n".join(lines) + "\n")
        return {"dir": str(out_dir), "pngs": [str(png)]}
    oof = runs.load_oof(target)
    if oof is None:
        raise KtError(
            f"{target} is not a run, a run group or an ensemble spec (no {runs.OOF}); "
            "pass runs/<competition>/<run> or an ensembles/*.json"
        )
    cfg = runs.load_config(target).to_dict()
    comp = competitions.for_config(cfg)
    task = comp.task
    raw, y, fitted = oof["raw"], oof["targets"], oof["fitted"]
    out_dir = Path(out) if out else target / runs.PLOTS
    pngs = []
    if task.kind in ("multiclass", "ordinal"):
        pngs.append(
            confusion(
                y.astype(int), task.decode(raw, fitted), comp.class_names, out_dir / "confusion.png"
            )
        )
    if task.kind == "ordinal":
        pngs.append(cut_shift(raw.reshape(-1), y, fitted["cutpoints"], out_dir / "cutpoints.png"))
    if task.kind == "multilabel":
        pngs.append(
            per_class_f1(
                sigmoid(raw),
                y,
                fitted["thresholds"],
                comp.class_names,
                path=out_dir / "per_class.png",
            )
        )
    if task.kind == "binary":
        pngs.append(roc(sigmoid(raw.reshape(-1)), y, out_dir / "roc.png"))
    members = sorted(h.parent for h in target.glob(f"*/{runs.HISTORY}"))
    for member in members or [target]:  # a group: one curve per member; a run: its own one
        history = runs.read_history(member)
        if history is not None:
            name = f"learning_curve_{member.name}.png" if members else "learning_curve.png"
            pngs.append(learning_curve(history, task.metric, out_dir / name))
    shown = losses.gallery(target, comp, runs.load_config(target), oof, out_dir / "top_losses.png")
    if shown is not None:
        pngs.append(shown[0])
    score = task.score(y, raw, fitted)
    lines = [
        f"# {target.name}",
        "",
        f"{comp.name}, {task.metric} on {len(y)} OOF rows: **{score:.4f}**",
        "",
        f"arch {cfg['arch']}, size {cfg['size']}, pool {cfg['pool']}, loss {cfg.get('loss') or task.default_loss}"
        f", augment {cfg['augment']}",
        "",
    ]
    lines += _members_table(runs.read_group(target), task.metric)
    lines += [f"![{Path(p).stem}]({Path(p).name})" for p in pngs]
    if shown is None:
        lines += [
            "",
            "No top-losses gallery: the images are not where the run read them.",
        ]
    else:
        lines += ["", f"## The {len(shown[1])} out-of-fold rows with the highest loss", ""]
        lines += losses.markdown(shown[1])
    for k, name in enumerate(comp.class_names if per_class and shown is not None else []):
        one = losses.gallery(
            target,
            comp,
            runs.load_config(target),
            oof,
            out_dir / f"top_losses_{runs.slug(name)}.png",
            rows_of=losses.of_class(task, y, k),
        )
        if one is None:
            lines += ["", f"## True class {name}: no out-of-fold row", ""]
            continue
        pngs.append(one[0])
        count = f"the {len(one[1])} rows" if len(one[1]) > 1 else "the one row"
        lines += ["", f"## True class {name}: {count} with the highest loss", ""]
        lines += [f"![{one[0].stem}]({one[0].name})", ""] + losses.markdown(one[1])
    write_text(out_dir / "report.md", "\n".join(lines) + "\n")
    return {"dir": str(out_dir), "pngs": [str(p) for p in pngs], "score": score}
