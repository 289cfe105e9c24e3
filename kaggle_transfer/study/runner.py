"""`kt study`: every (arch × grid point) as a normal fit() run, scheduled by Optuna's GridSampler over a
shared storage (SQLite by default, any SQLAlchemy URL for several machines).

Guards, because Optuna's documentation warns that GridSampler can hand one point to two concurrent
workers: before training, a worker claims its point by *creating* a study named after it; names are
unique in the storage, so exactly one worker wins and the other prunes its trial. A killed worker's
trial is failed by Optuna's heartbeat and re-queued (its retry callback); the retry claims under
a new attempt number. A finished point is never trained again: its run folder already has metrics.json.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import competitions, config, runs
from ..errors import KtError
from ..runs import slug
from .ablate import Ablation, AblationDesign
from .grid import load_grid, point_config, point_key, search_space, trial_flags
from .stats import secondary_accuracy
from .storage import HEARTBEAT_S, default_storage, open_storage, retry_callback


def study_name(competition: str, grid_name: str, archs: list[str]) -> str:
    import hashlib

    return f"{competition}-{grid_name}-{hashlib.sha1(','.join(archs).encode()).hexdigest()[:8]}"


def _points(grid: dict[str, Any], archs: list[str]) -> list[dict[str, Any]]:
    space = search_space(grid, archs)
    points = [
        dict(zip(space, values, strict=True)) for values in itertools.product(*space.values())
    ]
    return [p for p in points if point_config(grid, p) is not None]


def run_dir_for(root: Path, competition: str, name: str, p: dict[str, Any]) -> Path:
    return (
        Path(root)
        / competition
        / "study"
        / name
        / slug(p["arch"])
        / slug(point_key(p).split("|", 1)[1])
    )


@dataclass(frozen=True)
class StudyJob:
    """What every worker of a study trains: the grid over the archs (or an ablation's levels over
    paired seeds), on one dataset and storage. Plain values only, so it crosses to spawned workers."""

    competition: str
    archs: tuple[str, ...]
    grid_spec: str  # paper, small or a YAML file
    data_dir: str
    root: str  # the runs root
    storage_url: str | None = None  # None: SQLite beside the runs
    sets: tuple[str, ...] = ()  # --set for every trial
    external_dirs: dict[str, str] = field(default_factory=dict)
    ablation: Ablation | None = None  # kt study ablate: its levels × seeds in place of the grid


class GridDesign:
    """The grid over the archs as the runner schedules it (kt study run)."""

    kind = "grid"

    def __init__(self, job: StudyJob):
        self.job, self.archs = job, list(job.archs)
        self.grid_name, self.grid = load_grid(job.grid_spec)
        self.name = study_name(job.competition, self.grid_name, self.archs)
        self.space = search_space(self.grid, self.archs)
        self.comp = competitions.get(job.competition)

    def points(self) -> list[dict[str, Any]]:
        return _points(self.grid, self.archs)

    key = staticmethod(point_key)

    def config(self, p: dict[str, Any]):
        flags = trial_flags(self.grid, p, self.comp, self.job.sets)
        return None if flags is None else config.resolve(flags=flags, sets=self.job.sets)

    def run_dir(self, root: Path, p: dict[str, Any]) -> Path:
        return run_dir_for(root, self.job.competition, self.name, p)

    def facts(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "competition": self.job.competition,
            "grid": self.grid_name,
            "archs": self.archs,
            "points": len(self.points()),
            "lr": self.grid["lr"],
        }


def design_of(job: StudyJob):
    return (
        AblationDesign(job.competition, job.ablation, job.sets) if job.ablation else GridDesign(job)
    )


def worker(job: StudyJob, *, progress: bool = False) -> int:
    """One worker: train points until every point has a finished trial. Returns runs trained."""
    import optuna

    design = design_of(job)
    name, space = design.name, design.space
    storage = open_storage(job.storage_url)
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        load_if_exists=True,
        direction="maximize",
        sampler=optuna.samplers.GridSampler(space, seed=int(os.getpid())),
    )
    points = {design.key(p): p for p in design.points()}
    _describe(study, **design.facts())
    trained = 0

    def objective(trial: optuna.Trial) -> float:
        nonlocal trained
        p = {k: (trial.suggest_categorical(k, v)) for k, v in space.items()}
        if design.key(p) not in points:
            raise optuna.TrialPruned("lr index past this optimizer's list")
        # a live Trial has no system attrs; its frozen record in the storage does (retry history)
        attempt = len(retry_callback().retry_history(storage.get_trial(trial._trial_id)))
        claim = f"{name}:claim:{design.key(p)}:{attempt}"
        try:  # the atomic claim: study names are unique in the storage
            optuna.create_study(study_name=claim, storage=storage)
        except optuna.exceptions.DuplicatedStudyError:
            raise optuna.TrialPruned("another worker holds this grid point") from None
        run_dir = design.run_dir(Path(job.root), p)
        try:
            result, fresh = _train_point(
                trial,
                design.config(p),
                run_dir,
                Path(job.data_dir),
                progress=progress,
                external_dirs=job.external_dirs,
            )
        except KtError:
            # a user's mistake (offline weights, a bad value): the point is released for the next
            # run, and a trial folder that holds nothing is removed
            optuna.delete_study(study_name=claim, storage=storage)
            if run_dir.is_dir() and not any(run_dir.rglob(runs.LAST)):
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
        trained += fresh
        return result["score"]

    while True:
        done = {
            design.key(t.params)
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        }
        todo = [k for k in points if k not in done]
        if not todo:
            return trained
        running = {
            design.key(t.params)
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
            if set(space) <= set(t.params)
        }
        if all(k in running for k in todo):
            # others hold the rest; a dead one is failed after the grace period
            time.sleep(HEARTBEAT_S)
            optuna.storages.fail_stale_trials(study)
            continue
        # Optuna would log a failed trial's traceback; a KtError reaches the CLI as its one line,
        # and any other exception propagates with its traceback
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        study.optimize(objective, n_trials=1, catch=())


def _train_point(
    trial,
    cfg,
    run_dir: Path,
    data_dir: Path,
    *,
    progress: bool,
    external_dirs: dict[str, str] | None = None,
) -> tuple[dict[str, Any], int]:
    """Train a claimed grid point (or read its finished run) and record it in the storage. Returns the run's
    metrics and 1 when it trained here. This machine's last.pt resumes the point; a point re-queued from a
    machine whose folders are out of reach starts from scratch here."""
    from ..training.loop import fit

    trial.set_user_attr("run_dir", str(run_dir))
    trial.set_user_attr("host", socket.gethostname())
    result, trained = runs.read_metrics(run_dir), 0
    if result is None:
        resume = (run_dir / runs.LAST).is_file()
        trial.set_user_attr("trained_from", "resumed" if resume else "scratch")
        point = ", ".join(f"{k}={v}" for k, v in trial.params.items() if k != "arch")
        print(
            f"trial {trial.number}: {cfg.arch} at {point} "
            f"({'resuming' if resume else 'training'} → {run_dir})",
            flush=True,
        )
        run_dir.mkdir(parents=True, exist_ok=True)
        result, trained = (
            fit(
                cfg,
                run_dir,
                data_dir,
                resume=resume,
                progress=progress,
                external_dirs=external_dirs,
            ),
            1,
        )
    _record(trial, run_dir, cfg, result, data_dir)
    return result, trained


def _describe(study, **facts: Any) -> None:
    """What `kt study status` and the report read from the storage, on any machine."""
    for key, value in facts.items():
        if study.user_attrs.get(key) != value:
            study.set_user_attr(key, value)


def _record(trial, run_dir: Path, cfg, result: dict[str, Any], data_dir: Path) -> None:
    """Everything the report needs, in the storage: it is read from machines without this run folder.
    Competitions with labelled held-out splits (CCT-20) score them with the selected epoch's weights."""
    from ..training.heldout import score_splits

    trial.set_user_attr("accuracy", secondary_accuracy(run_dir, competitions.for_config(cfg)))
    trial.set_user_attr("best_epoch", result.get("best_epoch"))
    trial.set_user_attr("seconds", result.get("time_s"))
    trial.set_user_attr("parameters", result.get("parameters"))
    trial.set_user_attr("size", cfg.size)
    trial.set_user_attr("external", list(cfg.external))
    trial.set_user_attr("heldout", score_splits(run_dir, data_dir))


def run_study(job: StudyJob, *, workers: int = 1, progress: bool = True) -> dict[str, Any]:
    """Start `workers` processes on this machine (more machines: run the same command elsewhere)."""
    from ..training.models import check_arch

    for arch in job.archs:  # a typo fails here, not in the first trial
        check_arch(arch.split(".")[0])
    url = job.storage_url or default_storage(Path(job.root), job.competition)
    job = dataclasses.replace(job, storage_url=url)
    design = design_of(job)
    points = design.points()
    if not points:
        raise KtError("the grid is empty")
    if workers <= 1:
        trained = worker(job, progress=progress)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            trained = sum(f.result() for f in [pool.submit(worker, job) for _ in range(workers)])
    return {"study": design.name, "storage": url, "points": len(points), "trained_here": trained}
