"""`kt study`: every (arch × grid point) as a normal fit() run, scheduled by Optuna's GridSampler over a
shared storage (SQLite by default, any SQLAlchemy URL for several machines).

Guards, because Optuna's documentation warns that GridSampler can hand one point to two concurrent
workers: before training, a worker claims its point by *creating* a study named after it; names are
unique in the storage, so exactly one worker wins and the other prunes its trial. A killed worker's
trial is failed by Optuna's heartbeat and re-queued (RetryFailedTrialCallback); the retry claims under
a new attempt number. A finished point is never trained again: its run folder already has metrics.json.
"""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path
from typing import Any

from ..errors import KtError
from ..runs import slug
from .grid import load_grid, point_config, search_space

# a killed worker's trial is failed and re-queued once its heartbeat is GRACE_S old (tests shorten these)
HEARTBEAT_S = int(os.environ.get("KT_STUDY_HEARTBEAT", 5))
GRACE_S = int(os.environ.get("KT_STUDY_GRACE", 20))


def default_storage(root: Path, competition: str) -> str:
    path = (Path(root) / competition / "study.db").resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _storage(url: str):
    import warnings

    import optuna
    from optuna.storages import RDBStorage, RetryFailedTrialCallback

    kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

    def make():
        return RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                          failed_trial_callback=RetryFailedTrialCallback(max_retry=3))

    # Workers started together would each create the schema of a new storage and all but one would fail:
    # on SQLite a file lock serialises that first contact; on a server database a short retry does.
    if url.startswith("sqlite:///"):
        import fcntl

        with open(url.removeprefix("sqlite:///") + ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return make()
    for attempt in range(5):
        try:
            return make()
        except Exception:  # noqa: BLE001 - sqlalchemy's IntegrityError/OperationalError while another initialises
            if attempt == 4:
                raise
            time.sleep(1 + attempt)


def study_name(competition: str, grid_name: str, archs: list[str]) -> str:
    import hashlib

    return f"{competition}-{grid_name}-{hashlib.sha1(','.join(archs).encode()).hexdigest()[:8]}"


def _points(grid: dict[str, Any], archs: list[str]) -> list[dict[str, Any]]:
    space = search_space(grid, archs)
    points = [dict(zip(space, values, strict=True)) for values in itertools.product(*space.values())]
    return [p for p in points if point_config(grid, p) is not None]


def _key(p: dict[str, Any]) -> str:
    return f"{p['arch']}|{p['optimizer']}|{p['lr_index']}|{p['weight_decay']}|{p['schedule']}"


def run_dir_for(root: Path, competition: str, name: str, p: dict[str, Any]) -> Path:
    return Path(root) / competition / "study" / name / slug(p["arch"]) / slug(_key(p).split("|", 1)[1])


def worker(competition: str, archs: list[str], grid_spec: str, data_dir: str, *, root: str, storage_url: str,
           sets: list[str], progress: bool = False) -> int:
    """One worker: train points until every grid point has a finished trial. Returns runs trained."""
    import optuna
    from optuna.storages import RetryFailedTrialCallback

    from .. import config
    from ..training.loop import fit

    grid_name, grid = load_grid(grid_spec)
    name = study_name(competition, grid_name, archs)
    storage = _storage(storage_url)
    space = search_space(grid, archs)
    study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True, direction="maximize",
                                sampler=optuna.samplers.GridSampler(space, seed=int(os.getpid())))
    points = {_key(p): p for p in _points(grid, archs)}
    trained = 0

    def objective(trial: optuna.Trial) -> float:
        nonlocal trained
        p = {k: (trial.suggest_categorical(k, v)) for k, v in space.items()}
        if point_config(grid, p) is None:
            raise optuna.TrialPruned("lr index past this optimizer's list")
        # a live Trial has no system attrs; its frozen record in the storage does (retry history)
        attempt = len(RetryFailedTrialCallback.retry_history(storage.get_trial(trial._trial_id)))
        try:  # the atomic claim: study names are unique in the storage
            optuna.create_study(study_name=f"{name}:claim:{_key(p)}:{attempt}", storage=storage)
        except optuna.exceptions.DuplicatedStudyError:
            raise optuna.TrialPruned("another worker holds this grid point") from None
        run_dir = run_dir_for(Path(root), competition, name, p)
        trial.set_user_attr("run_dir", str(run_dir))
        if (run_dir / "metrics.json").is_file():
            import json

            return json.loads((run_dir / "metrics.json").read_text())["score"]
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg = config.resolve(flags={"competition": competition, **point_config(grid, p)}, sets=sets)
        result = fit(cfg, run_dir, Path(data_dir), resume=(run_dir / "last.pt").is_file(), progress=progress)
        trained += 1
        return result["score"]

    while True:
        done = {_key(t.params) for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))}
        todo = [k for k in points if k not in done]
        if not todo:
            return trained
        running = {_key(t.params) for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
                   if set(space) <= set(t.params)}
        if all(k in running for k in todo):
            time.sleep(HEARTBEAT_S)  # others hold the rest; a dead one is failed after the grace period
            optuna.storages.fail_stale_trials(study)
            continue
        study.optimize(objective, n_trials=1, catch=())


def run_study(competition: str, archs: list[str], grid_spec: str, data_dir: Path, *, root: Path,
              storage_url: str | None = None, workers: int = 1, sets: list[str] | tuple = (),
              progress: bool = True) -> dict[str, Any]:
    """Start `workers` processes on this machine (more machines: run the same command elsewhere)."""
    from ..training.models import check_arch

    for arch in archs:  # a typo fails here, not in the first trial
        check_arch(arch.split(".")[0])
    grid_name, grid = load_grid(grid_spec)
    url = storage_url or default_storage(root, competition)
    points = _points(grid, archs)
    if not points:
        raise KtError("the grid is empty")
    args = (competition, archs, grid_spec, str(data_dir))
    kwargs = {"root": str(root), "storage_url": url, "sets": list(sets)}
    if workers <= 1:
        trained = worker(*args, **kwargs, progress=progress)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            trained = sum(f.result() for f in [pool.submit(worker, *args, **kwargs) for _ in range(workers)])
    return {"study": study_name(competition, grid_name, archs), "storage": url, "points": len(points),
            "trained_here": trained}
