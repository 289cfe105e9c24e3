"""The Python API for notebooks: the functions the CLI calls, keyword arguments named like the flags,
plain results (paths, scores, dicts). docs/python.md has a worked example (tests run it).

    import kaggle_transfer as kt
    run = kt.train("aptos", arch="resnet50", size=512, pool="gem", loss="l1")
    kt.export(run["run_dir"])
    sub = kt.predict("aptos", run["run_dir"], tta="flip")
    kt.validate("aptos", sub["submission"])

`train`, `export` and `ensemble` need torch; `predict` and `validate` run on onnxruntime alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import competitions
from .competitions import submission
from .inference.ensemble import build
from .inference.pipeline import predict_submission
from .inference.predictor import Choice, RunOptions, load_predictor
from .inference.session import expand
from .training import plan


def train(
    competition: str,
    *,
    recipe: str | None = None,
    data_dir: str | Path | None = None,
    external_dir: dict[str, str] | None = None,
    runs_root: str | Path | None = None,
    name: str | None = None,
    folds: str | None = None,
    seeds: int = 1,
    progress: bool = False,
    **config: Any,
) -> dict[str, Any]:
    """`kt train COMPETITION`: `recipe` is `-c` (a shipped name or a YAML), every other keyword a config
    key (`kt train --list-keys`; `set` is not needed: `lr=3e-4, swa_epochs=3`). Returns metrics.json
    (a group: group.json) with `run_dir` added."""
    run = plan.new_run(
        plan.TrainRequest(
            competition,
            recipe=recipe,
            data_dir=None if data_dir is None else str(data_dir),
            external_dirs={k: str(v) for k, v in (external_dir or {}).items()},
            runs_root=None if runs_root is None else str(runs_root),
            label=name,
            flags=config,
            folds=folds,
            seeds=seeds,
        )
    )
    return {**plan.train(run, progress=progress), "run_dir": str(run.run_dir)}


def export(run_dir: str | Path, *, out: str | Path | None = None, opset: int = 18) -> list[str]:
    """`kt export RUN_DIR`: the ONNX file of a run, or of every member of a group; their paths."""
    from .training.export import export_runs

    return [r["path"] for r in export_runs(run_dir, out, opset=opset)]


def ensemble(
    competition: str,
    runs: list[str | Path],
    *,
    method: str = "greedy",
    out: str | Path | None = None,
) -> dict[str, Any]:
    """`kt ensemble COMPETITION RUN...`: blend on the out-of-fold outputs; the spec, with its `path`."""
    return build(competition, [Path(r) for r in runs], method, out)


def predict(
    competition: str,
    *models: str | Path,
    ensemble: str | Path | None = None,
    data_dir: str | Path | None = None,
    out: str | Path | None = None,
    name: str | None = None,
    tta: str | None = None,
    blend: str = "mean",
    refit: bool = False,
    provider: str = "auto",
    progress: bool = False,
) -> dict[str, Any]:
    """`kt predict COMPETITION MODEL...` (ONNX files, run folders or groups) or `ensemble=SPEC`: the
    submission folder's manifest (`submission` is the CSV's path, already validated)."""
    choice = Choice(
        models=expand([str(m) for m in models]),
        ensemble=None if ensemble is None else str(ensemble),
        blend=blend,
        refit=refit,
    )
    options = RunOptions(tta=tta, provider=provider, progress=progress)
    predictor = load_predictor(competition, choice, options)
    return predict_submission(predictor, data_dir, out_root=out, label=name)


def validate(
    competition: str, csv: str | Path, *, data_dir: str | Path | None = None
) -> dict[str, Any]:
    """`kt validate COMPETITION CSV`: rows and columns of a valid submission; a KtError naming the
    problem otherwise."""
    comp = competitions.get(competition)
    return submission.validate(comp, Path(csv), competitions.find_data_dir(comp, data_dir))
