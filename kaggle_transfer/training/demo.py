"""`kt demo`: the whole path on synthetic competition-shaped data, in a few minutes on a CPU.

synthetic data → train two small models at two input sizes → export ONNX → ensemble with TTA →
validated submission → scores against the hidden test labels that only synthetic data has.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from .. import competitions, config, runs
from ..data.digits import make_digits
from ..errors import KtError
from ..inference.pipeline import predict_submission
from ..inference.predictor import Choice, RunOptions, load_predictor
from ..metrics import get_metric
from .export import export
from .loop import fit

# Two input sizes of one tiny timm model: the study's multi-size ensemble, at CPU scale.
DEMO_MODELS = (("test_resnet", 32), ("test_resnet", 48))


def hidden_label_score(comp, data_dir: Path, csv: Path) -> float:
    """Score a submission against the hidden labels that only synthetic data has."""
    pred = pd.read_csv(csv, dtype=str, keep_default_na=False).set_index(comp.id_column)[
        comp.target_column
    ]
    if (data_dir / "test_labels.csv").is_file():
        truth = pd.read_csv(data_dir / "test_labels.csv", dtype=str, keep_default_na=False)
        ids, y = truth[comp.id_column], comp.parse_answers(list(truth[comp.target_column]))
    else:  # local datasets (CCT-20) carry labels in their test split
        table = comp.read_test(data_dir)
        ids, y = table["id"], table["target"].to_numpy()
    return get_metric(comp.task.metric)(y, comp.parse_answers(list(pred.loc[ids])))


def _data(name: str, workdir: Path, n_train: int, n_test: int, *, echo: Callable[[str], None]):
    """(adapter, data folder, extra config): synthetic data, or the real digits described by a YAML."""
    if name == "digits":
        data_dir = workdir / "data" / "digits"
        if not (data_dir / "digits.yaml").is_file():
            make_digits(data_dir)
        comp = competitions.get(str(data_dir / "digits.yaml"))
        echo(
            f"real data: scikit-learn digits as a Kaggle-shaped folder, described by {data_dir / 'digits.yaml'}"
        )
        return (
            comp,
            data_dir,
            {"competition_file": comp.spec_file, "augment": "none", "pool": "avg"},
        )
    if name not in competitions.COMPETITIONS:  # kt demo takes a built-in name or digits, not a YAML
        raise KtError(
            f"kt demo {name}: choose one of {', '.join([*competitions.COMPETITIONS, 'digits'])} (digits: "
            "scikit-learn's real handwritten digits)"
        )
    comp = competitions.get(name)
    if not comp.synthetic:
        raise KtError(
            f"{comp.name} has no synthetic layout for kt demo; try kt demo digits or a built-in name"
        )
    data_dir = workdir / "data" / comp.name
    if not data_dir.is_dir() or not any(data_dir.iterdir()):
        comp.synthetic(data_dir, n_train=n_train, n_test=n_test)
    echo(f"synthetic {comp.name} data: {data_dir}")
    return comp, data_dir, {}


def run_demo(
    name: str,
    workdir: Path,
    *,
    epochs: int = 8,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    n_train: int = 400,
    n_test: int = 100,
    seed: int = 414,
) -> dict:
    started = time.time()
    comp, data_dir, extra = _data(name, workdir, n_train, n_test, echo=echo)
    rows, onnx_paths = [], []
    tta = "none" if name == "digits" else "flip"  # a mirrored digit is another digit (or none)
    options, subs = RunOptions(tta=tta, progress=False), workdir / "submissions"
    for arch, size in DEMO_MODELS:
        cfg = config.resolve(
            flags={
                "competition": comp.name,
                "arch": arch,
                "size": size,
                "pretrained": False,
                "epochs": epochs,
                "batch_size": 32,
                "lr": 3e-3,
                "pool": "gem",
                "workers": 0,
                "augment": "paper",
                "seed": seed,
                **extra,
            }
        )
        run_dir = runs.new_run_dir(workdir / "runs", comp.name, f"{arch}_{size}")
        echo(f"training {arch} at {size}px → {run_dir}")
        result = fit(cfg, run_dir, data_dir, progress=progress)
        onnx = export(run_dir)["path"]
        onnx_paths.append(onnx)
        one = load_predictor(comp.name, Choice(models=[onnx]), options)
        single = predict_submission(
            one, data_dir, out_root=subs, label=f"{arch}_{size}", overwrite=True
        )
        rows.append(
            (
                f"{arch}@{size}",
                result["score"],
                hidden_label_score(comp, data_dir, Path(single["submission"])),
            )
        )
    every = load_predictor(comp.name, Choice(models=onnx_paths, refit=True), options)
    manifest = predict_submission(every, data_dir, out_root=subs, label="ensemble", overwrite=True)
    csv = Path(manifest["submission"])
    rows.append(
        (
            f"ensemble (mean, {tta} TTA)",
            manifest["oof_score"],
            hidden_label_score(comp, data_dir, csv),
        )
    )
    metric = comp.task.metric
    echo("")
    echo(f"{'model':<28} {'CV ' + metric:>10} {'test ' + metric:>10}")
    for label, cv, test in rows:
        echo(f"{label:<28} {cv:>10.4f} {test:>10.4f}")
    echo("")
    echo(f"submission (validated): {csv}")
    echo(f"models: {', '.join(onnx_paths)}")
    echo(f"demo took {time.time() - started:.0f}s")
    return {"rows": rows, "submission": str(csv), "models": onnx_paths}
