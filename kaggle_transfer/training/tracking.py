"""`kt train --track mlflow`: the run's config, per-epoch metrics and files logged to MLflow, where many
users already look. Optional (pip install 'kaggle_transfer[mlflow]'); the run folder stays the source
of truth and MLflow gets a copy.

The store: `--set track_uri=URI` (any MLflow tracking URI: a server, databricks, a database), else
$MLFLOW_TRACKING_URI, else a SQLite file `mlruns/mlflow.db` under the runs root with artifacts beside
it. (MLflow 3 refuses a plain-folder store unless told to, and names a database as its replacement:
mlflow/store/tracking/file_store.py, FileStore.__init__.) Logging goes through MlflowClient with an
explicit run id, so nothing depends on MLflow's process-global "active run", and a resumed kt run
continues its MLflow run (the id is kept in the run folder's tracking.json).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from .. import runs
from ..errors import KtError
from ..files import read_json, write_json

MODES = ("none", "mlflow")
# files of a run folder copied to MLflow at the end (the checkpoints stay in the run folder)
ARTEFACTS = (runs.CONFIG, runs.RUN_INFO, runs.METRICS, runs.HISTORY, runs.HELDOUT)


def _mlflow():
    try:
        import mlflow  # noqa: F401
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise KtError(
            "--track mlflow needs MLflow: pip install 'kaggle_transfer[mlflow]' (or pass --track none)"
        ) from None
    return MlflowClient


def check(cfg) -> None:
    """Fail before a run folder exists when tracking is asked for and MLflow is missing."""
    if cfg.track == "mlflow":
        _mlflow()


def default_uri(runs_root: Path) -> str:
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    store = Path(runs_root).resolve() / "mlruns"
    return f"sqlite:///{store / 'mlflow.db'}"


def _client(uri: str):
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return _mlflow()(tracking_uri=uri)


def _experiment(client, name: str, uri: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    artifacts = None
    if uri.startswith("sqlite:///"):  # artefacts beside the database, not in the working folder
        artifacts = (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").as_uri()
    return client.create_experiment(name, artifact_location=artifacts)


class Tracker:
    """Logs to one MLflow run; a no-op when tracking is off or on ranks other than the first."""

    def __init__(self, client=None, run_id: str | None = None):
        self.client, self.run_id = client, run_id

    def epoch(self, row: dict[str, Any], step: int) -> None:
        if self.client is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(k, float(v), now, step)
            for k, v in row.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch"
        ]
        self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self, run_dir: Path, result: dict[str, Any]) -> None:
        if self.client is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        final = {
            f"best_{k}": result[k]
            for k in ("score", "best_epoch", "time_s")
            if isinstance(result.get(k), (int, float))
        }
        self.client.log_batch(
            self.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in final.items()]
        )
        for name in ARTEFACTS:
            if (run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(run_dir / name))
        for png in sorted((run_dir / runs.PLOTS).glob("*.png")):
            self.client.log_artifact(self.run_id, str(png), runs.PLOTS)
        self.client.set_terminated(self.run_id, "FINISHED")


def start(cfg, run_dir: Path, *, resume: bool, main: bool) -> Tracker:
    """The run's tracker: a new MLflow run with the config as parameters, or the recorded one on --resume."""
    if cfg.track != "mlflow" or not main:
        return Tracker()
    uri = cfg.track_uri or default_uri(run_dir.parent.parent)
    client = _client(uri)
    record = run_dir / runs.TRACKING
    if resume and record.is_file():
        run_id = read_json(record, what="tracking record")["run_id"]
        client.update_run(run_id, status="RUNNING")
        return Tracker(client, run_id)
    from mlflow.entities import Param

    run = client.create_run(
        _experiment(client, f"kt-{cfg.competition}", uri),
        run_name=run_dir.name,
        tags={
            "kt.run_dir": str(run_dir.resolve()),
            "kt.competition": cfg.competition,
            "kt.arch": cfg.arch,
        },
    )
    params = [
        Param(k, str(v)[:500]) for k, v in sorted(cfg.to_dict().items()) if v not in (None, [], "")
    ]
    client.log_batch(run.info.run_id, params=params)
    write_json(record, {"run_id": run.info.run_id, "tracking_uri": uri})
    return Tracker(client, run.info.run_id)


def fail(run_dir: Path) -> None:
    """Mark the run's MLflow run FAILED (a killed or failed kt run); silent when it has none."""
    record = Path(run_dir) / runs.TRACKING
    if not record.is_file():
        return
    try:
        info = read_json(record, what="tracking record")
        _client(info["tracking_uri"]).set_terminated(info["run_id"], "FAILED")
    except Exception:  # noqa: BLE001 - the training error is the one to report
        pass
