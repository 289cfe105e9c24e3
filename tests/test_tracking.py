"""--track mlflow: the run's config, per-epoch metrics and files reach a real MLflow store (SQLite), the
run ends FINISHED, a failed run ends FAILED, and a missing MLflow is one line before any run folder."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from kaggle_transfer.cli import main

FLAGS = ["--arch", "test_resnet", "--no-pretrained", "--size", "32", "--epochs", "2", "--workers", "0",
         "--no-progress", "--set", "batch_size=16", "--set", "max_steps=2"]


def test_a_tracked_run_is_in_mlflow(aptos_dir, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    runs = tmp_path / "runs"
    result = CliRunner().invoke(main, ["train", "aptos", "--data-dir", str(aptos_dir), "--runs-root", str(runs),
                                       "--track", "mlflow", *FLAGS])
    assert result.exit_code == 0, result.output
    run_dir = next((runs / "aptos").iterdir())
    record = json.loads((run_dir / "tracking.json").read_text())
    assert record["tracking_uri"] == f"sqlite:///{(runs / 'mlruns' / 'mlflow.db').resolve()}"
    client = MlflowClient(record["tracking_uri"])
    run = client.get_run(record["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == run_dir.name
    assert run.data.params["arch"] == "test_resnet" and run.data.params["size"] == "32"
    history = pd.read_csv(run_dir / "history.csv")
    logged = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "score"), key=lambda m: m.step)]
    assert logged == pytest.approx(history["score"].tolist())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert run.data.metrics["best_score"] == pytest.approx(metrics["score"])
    files = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "metrics.json", "history.csv", "plots"} <= files
    assert [f.path for f in client.list_artifacts(run.info.run_id, "plots")] == ["plots/learning_curve.png"]


def test_a_failed_tracked_run_ends_failed(aptos_dir, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("kaggle_transfer.training.loop.finish", broken)
    result = CliRunner().invoke(main, ["train", "aptos", "--data-dir", str(aptos_dir), "--runs-root",
                                       str(tmp_path / "runs"), "--track", "mlflow", *FLAGS])
    assert result.exit_code != 0
    client = MlflowClient(uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == "kt-aptos"]
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FAILED"


def test_missing_mlflow_is_one_line_before_a_run_folder(aptos_dir, tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_mlflow(name, *args, **kwargs):
        if name.startswith("mlflow"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    result = CliRunner().invoke(main, ["train", "aptos", "--data-dir", str(aptos_dir), "--runs-root",
                                       str(tmp_path / "runs"), "--track", "mlflow", *FLAGS])
    assert result.exit_code == 2 and "pip install 'kaggle_transfer[mlflow]'" in result.output
    assert not (tmp_path / "runs" / "aptos").exists() or not any((tmp_path / "runs" / "aptos").iterdir())
