"""What `kt train` decides before the loop starts: the config, the data, the run folder, one run or a group.

A `RunPlan` is made from a command line (`new_run`) or from a run folder (`resumed_run`), then
`train(plan)` trains it. The CLI only parses flags and prints; everything it decides lives here.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from .. import competitions, config, runs
from .. import recipes as shipped
from ..errors import KtError
from ..files import write_json
from . import distributed, tracking
from .cv import fit_group, group_split, parse_folds
from .weights import check_pretrained


@dataclasses.dataclass
class RunPlan:
    cfg: config.RunConfig
    run_dir: Path | None  # None until the folder is made
    data_dir: Path
    external_dirs: dict[str, str]
    skip_bad_images: bool = False
    resume: bool = False
    folds: list[int] | None = None  # a --folds group: these folds ...
    seeds: int = 1  # ... times this many training seeds
    own_split: bool = False  # --seeds alone: the run's own split and fold, repeated with each seed
    # the competition rows read by the preflight (read once)
    train_table: pd.DataFrame | None = None

    @property
    def is_group(self) -> bool:
        return self.folds is not None


def _competition_and_recipes(
    competition: str, recipe: str | None
) -> tuple[Any, list, dict[str, Any]]:
    """The adapter, the recipes to apply in order, and flags implied by a YAML-described contest.

    A competition YAML's `recipe:` section comes first, then `-c FILE`: both apply."""
    if competition == "custom":
        raise KtError(
            "pass the competition's YAML in place of 'custom': kt train FILE.yaml (-c names a recipe)"
        )
    comp = competitions.get(competition)
    spec_file = comp.spec_file
    recipes = [comp.spec["recipe"]] if spec_file and comp.spec.get("recipe") else []
    if recipe:
        recipes.append(shipped.resolve(comp.name, recipe))
    return comp, recipes, ({"competition_file": spec_file} if spec_file else {})


def absolute_sources(cfg) -> None:
    """Files the config names (pseudo tables, teacher spec, warm start) as absolute paths, so a resumed or
    grouped run finds them from any working folder."""
    from .targets import pseudo_file

    cfg.external = [
        f"pseudo={f.resolve()}" if (f := pseudo_file(s)) is not None else s for s in cfg.external
    ]
    for key in ("teacher", "init"):
        if getattr(cfg, key):
            setattr(cfg, key, str(Path(getattr(cfg, key)).resolve()))


@dataclasses.dataclass(frozen=True)
class TrainRequest:
    """What `kt train` was asked, flag by flag, before anything is resolved."""

    competition: str | None
    recipe: str | None = None  # -c: a recipe's name or path
    data_dir: str | None = None
    external_dirs: dict[str, str] | None = None
    sets: tuple[str, ...] = ()  # --set key=value
    runs_root: str | None = None
    label: str | None = None  # the run folder's suffix
    flags: dict[str, Any] | None = None  # first-class flags given (None: not given)
    folds: str | None = None  # --folds: which folds of a k-fold split
    seeds: int = 1
    skip_bad_images: bool = False
    lr_auto: bool = False  # --lr auto: the range test picks the rate


def resolve(request: TrainRequest) -> RunPlan:
    """Everything a new run decides before its folder exists: the config, the data, the checks
    (run_dir is left unset; `new_run` and `kt lr-find` make their own folders)."""
    r = request
    distributed.setup()  # under torchrun: join the process group before anything is decided
    if not r.competition:
        raise KtError("name the competition: kt train COMPETITION (kt competitions lists them)")
    comp, recipes, implied = _competition_and_recipes(r.competition, r.recipe)
    cfg = config.resolve(recipes, {"competition": comp.name, **implied, **(r.flags or {})}, r.sets)
    absolute_sources(cfg)
    data = competitions.find_data_dir(comp, r.data_dir)
    external = competitions.find_external_dirs(comp, cfg.external, r.external_dirs or {})
    from .tables import preflight

    cv_folds = parse_folds(r.folds, cfg.folds)
    own_split = cv_folds is None and r.seeds > 1  # --seeds alone repeats this run with other seeds
    if own_split:
        cv_folds = [cfg.fold]
    if cv_folds is not None and distributed.active():
        raise KtError(
            "--folds/--seeds groups run one process per fold; under torchrun train one run at a time"
        )
    if r.lr_auto and distributed.active():
        raise KtError(
            "--lr auto runs the range test in one process; run kt lr-find first and pass its --lr"
        )
    table = preflight(cfg, data, r.skip_bad_images)
    if cfg.pretrained and not cfg.weights:  # before the run folder exists
        check_pretrained(cfg.arch)
    if cfg.track != "none":
        tracking.check(cfg)
        cfg.track_uri = cfg.track_uri or tracking.default_uri(runs.runs_root(r.runs_root))
    return RunPlan(
        cfg,
        None,
        data,
        external,
        r.skip_bad_images,
        folds=cv_folds,
        seeds=r.seeds,
        own_split=own_split,
        train_table=table,
    )


def new_run(request: TrainRequest, *, progress: bool = True) -> RunPlan:
    """Resolve the config, check it and the data (before any folder exists), then make the run
    folder; with --lr auto, run the range test into it and train at its suggestion."""
    plan = resolve(request)
    cfg = plan.cfg
    # one run folder for all ranks: rank 0 makes it, the others are told its name
    label = request.label or f"{cfg.arch}_{cfg.size}"
    made = (
        str(runs.new_run_dir(runs.runs_root(request.runs_root), cfg.competition, label))
        if distributed.is_main()
        else None
    )
    plan.run_dir = Path(distributed.broadcast(made))
    if request.lr_auto:
        from .lr_find import find_lr

        # the range test runs on the split and fold the run (a group: its first member) trains on
        member = cfg
        if plan.is_group:
            member = dataclasses.replace(cfg, fold=plan.folds[0])
            member = member if plan.own_split else group_split(member)
        try:
            found = find_lr(member, loop_inputs(plan), plan.run_dir, progress=progress)
        except BaseException:
            shutil.rmtree(plan.run_dir, ignore_errors=True)  # nothing trained: no folder left
            raise
        cfg.lr = found["chosen"]
    if plan.is_group:
        runs.save_config(plan.run_dir, cfg)
        write_json(
            plan.run_dir / runs.GROUP_REQUEST,
            {
                "data_dir": str(plan.data_dir.resolve()),
                "folds": plan.folds,
                "seeds": plan.seeds,
                "own_split": plan.own_split,
                "external_dirs": plan.external_dirs,
                "skip_bad_images": plan.skip_bad_images,
            },
        )
    return plan


def loop_inputs(plan: RunPlan) -> dict[str, Any]:
    """What the loop reads the rows from (training.loop.run_data's inputs)."""
    return {
        "data_dir": plan.data_dir,
        "external_dirs": plan.external_dirs,
        "skip_bad_images": plan.skip_bad_images,
        "train_table": plan.train_table,
    }


def _extend(cfg: config.RunConfig, run_dir: Path, epochs: int, members: list[Path]) -> None:
    """--resume RUN --epochs N: train a run (or each member of a group) on to N epochs. timm's
    schedules are functions of the step, so the cosine is stretched to the new length (as timm's
    train.py does with --resume and a larger --epochs)."""
    if cfg.swa_epochs:
        raise KtError(
            f"--epochs with --resume: {run_dir} averages its last {cfg.swa_epochs} epochs (SWA), a "
            f"window that is already spent; train a new run with --init {run_dir} instead"
        )
    done = max((runs.epochs_done(d) for d in members), default=0)
    if epochs <= done:
        raise KtError(
            f"--epochs {epochs}: {run_dir} has trained {done} epochs already; pass more to extend it"
        )
    cfg.epochs = epochs
    runs.save_config(run_dir, cfg)


def resumed_run(
    run_dir: str | Path,
    *,
    data_dir: str | None = None,
    competition: str | None = None,
    epochs: int | None = None,
) -> RunPlan:
    """The plan of an interrupted run or run group, from what its folder recorded. `data_dir` replaces
    the recorded data folder (the data moved); it is recorded again when training restarts. `epochs`
    extends it (a finished run too) to that many epochs."""
    distributed.setup()
    run_dir = Path(run_dir)
    cfg = runs.load_config(run_dir, what="a run folder made by kt train (--resume)")
    if (
        competition
        and competition != "custom"
        and competitions.get(competition).name != cfg.competition
    ):
        raise KtError(f"--resume {run_dir} is a {cfg.competition} run, not {competition}")
    request = run_dir / runs.GROUP_REQUEST
    if distributed.is_main() and not distributed.active() and runs.run_state(run_dir) == "running":
        raise KtError(
            f"--resume {run_dir}: another kt is training it now (kt runs {cfg.competition} shows it "
            "running); wait for it to end, or stop it first"
        )
    if epochs is not None:
        members = [p.parent for p in run_dir.glob(f"*/{runs.HISTORY}")] if request.is_file() else []
        _extend(cfg, run_dir, epochs, members or [run_dir])
    group = request.is_file()
    info = (
        runs.read_json(request, what="run group's request")
        if group
        else runs.read_run_info(run_dir)
    )
    keys = ("folds", "seeds", "own_split") if group else ()  # how a group was asked to train
    shape = {k: info.get(k, False) if k == "own_split" else info[k] for k in keys}
    plan = RunPlan(
        cfg,
        run_dir,
        Path(info["data_dir"]),
        info["external_dirs"],
        info["skip_bad_images"],
        resume=True,
        **shape,
    )
    if data_dir:
        plan.data_dir = competitions.find_data_dir(competitions.for_config(cfg), data_dir).resolve()
        if plan.is_group:
            write_json(request, {**info, "data_dir": str(plan.data_dir)})
    elif not plan.data_dir.is_dir():
        raise KtError(
            f"--resume: the recorded data folder {plan.data_dir} is gone; pass --data-dir DIR"
        )
    return plan


def train(plan: RunPlan, *, progress: bool = True) -> dict[str, Any]:
    """Train the plan: one run (its metrics.json) or a group (its group.json summary).

    A new run that fails before it produced anything (no checkpoint, no metrics) leaves no folder."""
    try:
        return _train(plan, progress=progress)
    except BaseException:
        # its MLflow run ends FAILED, not RUNNING forever
        for record in plan.run_dir.rglob(runs.TRACKING):
            tracking.fail(record.parent)
        produced = any(plan.run_dir.rglob(runs.LAST)) or any(plan.run_dir.rglob(runs.METRICS))
        if not plan.resume and not produced and distributed.is_main():
            shutil.rmtree(plan.run_dir, ignore_errors=True)
        raise


def _train(plan: RunPlan, *, progress: bool) -> dict[str, Any]:
    if plan.is_group:
        return fit_group(
            plan.cfg,
            plan.run_dir,
            plan.data_dir,
            None if plan.own_split else plan.folds,
            seeds=plan.seeds,
            external_dirs=plan.external_dirs,
            skip_bad_images=plan.skip_bad_images,
            progress=progress,
        )
    from .loop import fit

    result = fit(
        plan.cfg,
        plan.run_dir,
        plan.data_dir,
        external_dirs=plan.external_dirs,
        resume=plan.resume,
        skip_bad_images=plan.skip_bad_images,
        progress=progress,
        train_table=plan.train_table,
    )
    distributed.cleanup()
    return result
