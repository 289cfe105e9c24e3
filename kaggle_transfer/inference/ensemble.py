"""`kt ensemble`: blend runs and run groups on their out-of-fold outputs, write an ensemble spec.

Methods: `mean` (equal weights), `rank` (binary: mean of ranks), `greedy` (Caruana et al. 2004:
forward selection with replacement on the competition metric, stopping when no addition helps, so
the blend scores at least as well as its best member on OOF). Thresholds / cut points are refitted
on the blended OOF. The spec lists each member's ONNX files with sha256, so `kt predict --ensemble`
predicts with exactly the blend that was scored. Torch-free.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import competitions, runs
from ..config import ENSEMBLE_METHODS
from ..errors import KtError
from ..files import atomic_path, sha256, write_json
from . import budget as plan
from . import costs as cost_model
from .metadata import check_fitted
from .predict import blend
from .tta import views as tta_views

METHODS = ENSEMBLE_METHODS


def _score(task, raws, targets, weights, *, method) -> tuple[float, dict]:
    raw = blend(raws, weights, "rank" if method == "rank" else "mean", task)
    fitted = task.fit(raw, targets)
    return task.score(targets, raw, fitted), fitted


def greedy_weights(task, raws: np.ndarray, targets: np.ndarray, rounds: int = 25) -> np.ndarray:
    """Caruana's forward selection with replacement: add the member that most improves the blend."""
    counts = np.zeros(len(raws))
    best = -np.inf
    for _ in range(rounds):
        trials = []
        for m in range(len(raws)):
            trial = counts.copy()
            trial[m] += 1
            trials.append(_score(task, raws, targets, trial, method="mean")[0])
        pick = int(np.argmax(trials))
        if trials[pick] <= best + 1e-12:
            break
        best, counts[pick] = trials[pick], counts[pick] + 1
    return counts / counts.sum()


def build(
    competition: str,
    run_dirs: Sequence[str | Path],
    method: str = "greedy",
    out: str | Path | None = None,
    budget=None,
    *,
    overwrite: bool = False,
) -> dict[str, Any]:
    """The spec of a blend of the runs; with a `budget.Budget`, the best blend predicted to fit it,
    the frontier beside the spec (`<spec>_frontier.csv/png`) and the estimate in the spec."""
    if method not in METHODS:
        raise KtError(f"--method {method!r} is not valid; choose one of: {', '.join(METHODS)}")
    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:
        raise KtError("name the runs to blend: kt ensemble COMPETITION RUN_DIR...")
    if out is not None:
        _check_out(Path(out), overwrite, run_dirs, frontier=budget is not None)
    ids, raws, targets, cfg = runs.load_oofs(run_dirs)
    comp = competitions.for_config(cfg)
    if comp.name != competitions.get(competition).name:
        raise KtError(f"{run_dirs[0]} is a {comp.name} run, not {competition}")
    task = comp.task
    singles = [
        _score(task, raws[m : m + 1], targets, None, method="mean")[0] for m in range(len(raws))
    ]
    chosen, planned = list(range(len(raws))), None
    if budget is not None:
        chosen, planned = _within(comp, run_dirs, raws, targets, budget)
    weights = np.zeros(len(raws))
    sub = raws[chosen]
    weights[chosen] = (
        greedy_weights(task, sub, targets)
        if method == "greedy"
        else np.full(len(sub), 1 / len(sub))
    )
    if budget is not None and method == "greedy":  # equal weights where they score higher
        equal = np.zeros(len(raws))
        equal[chosen] = 1 / len(chosen)
        if (
            _score(task, raws, targets, equal, method="mean")[0]
            > _score(task, raws, targets, weights, method="mean")[0]
        ):
            weights = equal
    score, fitted = _score(task, raws, targets, weights, method=method)
    spec = {
        "type": "ensemble",
        "competition": comp.name,
        "metric": task.metric,
        "method": method,
        "created": runs.timestamp(),
        "oof_score": score,
        "oof_rows": len(ids),
        "best_member_score": max(singles),
        "gain": score - max(singles),
        "fitted": fitted,
        "members": [
            {
                "run": str(d.resolve()),
                "weight": float(w),
                "oof_score": s,
                "models": [
                    {"path": str(p.resolve()), "sha256": sha256(p)} for p in runs.onnx_files(d)
                ],
            }
            for d, w, s in zip(run_dirs, weights, singles, strict=True)
        ],
    }
    path = Path(out) if out else runs.ensemble_path(comp.name, method)
    if planned is not None:
        _drop_unweighted(planned, weights)
        spec["budget"] = planned["record"]
        spec["budget"]["frontier"] = _write_frontier(planned, run_dirs, path)
    write_json(path, spec)
    if planned is None and overwrite:  # a frontier left there by the spec this one replaced
        for stale in _frontier_paths(path):
            stale.unlink(missing_ok=True)
    spec["path"] = str(path)
    return spec


def _check_out(path: Path, overwrite: bool, run_dirs: list[Path], *, frontier: bool) -> None:
    """-o names a new .json file (the frontier's CSV and PNG go beside it): never a folder, a file of a
    run it blends, or an existing file unless --overwrite; checked before any work, so a refusal
    writes nothing."""
    where = path.resolve()
    for run in run_dirs:
        if where.is_relative_to(run.resolve()):
            raise KtError(
                f"-o {path} is inside the run {run}, whose files kt reads; put the spec elsewhere "
                "(by default it goes to runs/<competition>/ensembles/)"
            )
    if path.is_dir():
        raise KtError(
            f"-o {path} is a folder; give the spec's file path, e.g. {path / 'blend.json'}"
        )
    if path.suffix.lower() != ".json":
        raise KtError(f"-o {path}: an ensemble spec is a .json file; give a path ending in .json")
    taken = [p for p in [path, *(_frontier_paths(path) if frontier else ())] if p.exists()]
    if taken and not overwrite:
        raise KtError(f"-o {path}: {taken[0]} exists; pass --overwrite to replace it")


def budget_line(
    spec_path: str | Path | None,
    *,
    tta: str | None = None,
    accelerator: str | None = None,
    int8: bool = False,
) -> str | None:
    """The budget line of an ensemble spec made with --budget, for the notebook it goes into (None:
    no spec, or none recorded); budget.notebook_line says what is rescaled and flagged."""
    if not spec_path:
        return None
    record = load_spec(spec_path).get("budget")
    if record is None:
        return None
    views = len(tta_views(tta)) if tta is not None else None
    return plan.notebook_line(record, tta, views, accelerator=accelerator, int8=int8)


def _frontier_paths(spec_path: Path) -> tuple[Path, Path]:
    """The frontier's CSV and PNG beside a spec."""
    return tuple(
        spec_path.with_name(spec_path.stem + f"_frontier{ext}") for ext in (".csv", ".png")
    )


def _within(comp, run_dirs: list[Path], raws, targets, budget) -> tuple[list[int], dict]:
    """The members of the best blend that fits the budget (inference/budget.py), and what to record."""
    data = runs.recorded_data_dir(runs.member_dirs(run_dirs[0])[0], budget.data_dir)
    try:
        table = comp.read(data, "test")
    except KtError:
        table = comp.read(data, "train")
    costs = cost_model.scale(
        cost_model.measure([runs.onnx_files(d) for d in run_dirs], list(table["paths"][:16])),
        budget.target,
    )

    def score(members) -> float:
        return _score(comp.task, raws[list(members)], targets, None, method="mean")[0]

    chosen, rows = plan.select(score, len(raws), costs, budget.seconds, budget.images)
    record = {
        "target": budget.target,
        "budget_s": budget.seconds,
        "test_images": budget.images,
        "estimated_s": budget.images * costs.per_image(chosen),
        "per_image_s": costs.per_image(chosen),
        "member_model_s": list(costs.model_s),
        "member_views": list(costs.views),
        "chosen_members": sorted(chosen),
        "decode_s": {str(k): v for k, v in costs.decode_s.items()},
        "note": costs.note,
    }
    return chosen, {"record": record, "rows": rows, "chosen": chosen, "costs": costs}


def _drop_unweighted(planned: dict, weights: np.ndarray) -> None:
    """Greedy weighting may give a chosen member weight 0; prediction never runs it, so neither does
    the estimate (the frontier keeps the blend as selected)."""
    used = [m for m in planned["chosen"] if weights[m] > 0]
    if used == planned["chosen"]:
        return
    record, costs = planned["record"], planned["costs"]
    record["chosen_members"] = used
    record["per_image_s"] = costs.per_image(used)
    record["estimated_s"] = record["test_images"] * record["per_image_s"]


def _write_frontier(planned: dict, run_dirs: list[Path], spec_path: Path) -> str:
    """The score-vs-time frontier beside the spec: every blend scored, a CSV (kt ensemble plots it)."""
    import pandas as pd

    names = [d.name for d in run_dirs]
    table = pd.DataFrame(planned["rows"])
    table["members"] = [" + ".join(names[m] for m in r) for r in table["members"]]
    table["hours"] = table["seconds"] / 3600
    csv = _frontier_paths(spec_path)[0]
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(csv) as tmp:
        table.to_csv(tmp, index=False)
    planned["record"]["chosen"] = " + ".join(names[m] for m in planned["chosen"])
    return str(csv.resolve())


def load_spec(path: str | Path) -> dict[str, Any]:
    """Read an ensemble spec and refuse it when a member's ONNX file changed since it was scored."""
    path = Path(path)
    if not path.is_file():
        raise KtError(f"--ensemble {path} not found")
    spec = runs.read_json(path, what="ensemble spec")
    members = spec.get("members") if isinstance(spec, dict) else None
    if (
        not isinstance(members, list)
        or not members
        or not all(
            isinstance(m, dict)
            and isinstance(m.get("models"), list)
            and m["models"]
            and isinstance(m.get("weight"), (int, float))
            and not isinstance(m.get("weight"), bool)
            and all(
                isinstance(x, dict)
                and isinstance(x.get("path"), str)
                and isinstance(x.get("sha256"), str)
                for x in m["models"]
            )
            for m in members
        )
    ):
        raise KtError(
            f"--ensemble {path} is not an ensemble spec (members with models, weights and sha256); "
            "make one with kt ensemble"
        )
    if spec.get("method") not in METHODS:
        raise KtError(
            f"--ensemble {path}: method {spec.get('method')!r} is not one of {', '.join(METHODS)}"
        )
    _check_fitted(spec, path)
    if "budget" in spec:
        plan.check_record(spec["budget"], f"--ensemble {path}")
    weights = np.array([m["weight"] for m in members], dtype=float)
    if not np.isfinite(weights).all() or (weights < 0).any() or not 0 < weights.sum() < np.inf:
        raise KtError(
            f"--ensemble {path}: member weights must be finite, at least 0 and sum to more than 0 "
            f"(they are {weights.tolist()}); rebuild it with kt ensemble"
        )
    for member in members:
        # paths are absolute; older specs' relative ones mean beside the spec
        for model in member["models"]:
            model["path"] = (
                str(path.parent / model["path"])
                if not Path(model["path"]).is_absolute()
                else model["path"]
            )
            if not Path(model["path"]).is_file():
                raise KtError(f"ensemble member {model['path']} not found")
            if sha256(model["path"]) != model["sha256"]:
                raise KtError(
                    f"{model['path']} changed since the ensemble was built (sha256 differs); "
                    "rebuild it with kt ensemble"
                )
    return spec


def _check_fitted(spec: dict[str, Any], path: Path) -> None:
    """The spec's cut points or thresholds, held to the rules a model file's are (finite, increasing, the
    task's count, in [0, 1]): a hand-edited spec must not give every row one answer, reported valid."""
    name, fitted = spec.get("competition"), spec.get("fitted") or {}
    if isinstance(name, str) and (name in competitions.COMPETITIONS or name in competitions.CUSTOM):
        n = competitions.get(name).task.num_classes
    else:  # a YAML competition registers when its models load: its class count is checked there
        lists = (
            [v for v in (fitted.get("cutpoints"), fitted.get("thresholds")) if isinstance(v, list)]
            if isinstance(fitted, dict)
            else []
        )
        n = len(lists[0]) + (1 if isinstance(fitted.get("cutpoints"), list) else 0) if lists else 0

    def fail(where, key, why) -> KtError:
        return KtError(f"--ensemble {where}: {key!r} {why}; rebuild it with kt ensemble")

    check_fitted(fitted, n, path, fail)


@dataclasses.dataclass(frozen=True)
class Blend:
    """What prediction needs from a spec: every member's ONNX files, one weight per file (a member's
    weight shared by its fold models), the blend method and the thresholds fitted on blended OOF."""

    paths: list[str]
    weights: list[float]
    method: str
    fitted: dict[str, Any]
    label: str
    oof_score: float | None
    competition: str | None = None

    def require(self, competition: str, source: str | Path) -> None:
        """Its cut points were fitted for the competition it names: it must be the one predicted."""
        if self.competition != competition:
            raise KtError(
                f"--ensemble {source} says competition {self.competition!r} but its models are "
                f"{competition} models; rebuild it with kt ensemble {competition}"
            )


def load_blend(path: str | Path) -> Blend:
    """The spec's blend. Members a greedy blend gave weight 0 are left out: never bundled, never run."""
    spec = load_spec(path)
    members = [m for m in spec["members"] if m["weight"] > 0]
    return Blend(
        paths=[m["path"] for member in members for m in member["models"]],
        weights=[
            member["weight"] / len(member["models"]) for member in members for _ in member["models"]
        ],
        method="rank" if spec["method"] == "rank" else "mean",
        fitted=spec["fitted"],
        label=f"ensemble_{spec['method']}",
        oof_score=spec.get("oof_score"),
        competition=spec.get("competition"),
    )
