"""`kt bundle`: everything a code competition's notebook needs to predict with the internet off.

    DIR/bundle.json            competition, models (sha256), blend weights, TTA, fitted thresholds, precision
    DIR/*.onnx                 the ensemble
    DIR/*.whl                  a wheel of kaggle_transfer (+ any --wheels-from, e.g. onnxruntime-gpu)
    DIR/kt_predict.py          installs the wheels with no index, finds /kaggle/input/<slug>, predicts,
                               writes /kaggle/working/submission.csv — no torch needed
    DIR/kernel-metadata.json   the notebook (private, GPU on, internet OFF, competition + bundle dataset)
    DIR/dataset-metadata.json  the private dataset that carries this folder

The folder is flat: Kaggle's dataset upload skips sub-folders unless they are zipped.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import competitions
from .errors import KtError
from .fsutil import sha256, write_json, write_text

SCRIPT = '''"""kt offline prediction for {title}, made by `kt bundle`: runs with the internet off, no torch."""
import glob, os, shutil, subprocess, sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CANDIDATES = [os.environ.get("KT_BUNDLE_DIR"), str(HERE), "/kaggle/input/{dataset}"]
BUNDLE = next(Path(p) for p in CANDIDATES if p and (Path(p) / "bundle.json").is_file())
SITE = Path(os.environ.get("KT_SITE") or "/kaggle/working/kt-site")
OUT = Path(os.environ.get("KT_BUNDLE_OUT") or "/kaggle/working")
subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--target",
                str(SITE), *glob.glob(str(BUNDLE / "*.whl"))], check=True)
sys.path.insert(0, str(SITE))

import kaggle_transfer  # noqa: E402
from kaggle_transfer.inference.bundle_run import run  # noqa: E402

print("kaggle_transfer", kaggle_transfer.__version__, "from", Path(kaggle_transfer.__file__).parent)

csv = run(BUNDLE, os.environ.get("KT_BUNDLE_DATA"), OUT / "kt-submissions")
shutil.copy(csv, OUT / "submission.csv")
print("wrote", OUT / "submission.csv")
'''


def _kt_wheel(dest: Path) -> Path:
    source = Path(__file__).resolve().parent.parent
    if not (source / "setup.cfg").is_file():
        raise KtError("kt bundle builds a wheel of kaggle_transfer from its source checkout; run it from a clone")
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                          "-w", str(dest), str(source)], capture_output=True, text=True)
    if out.returncode != 0:
        raise KtError(f"building the kaggle_transfer wheel failed: {out.stderr.strip().splitlines()[-1:]}")
    return next(dest.glob("kaggle_transfer-*.whl"))


# What torch-free inference needs that a Kaggle notebook image may lack, fetched for its platform.
NOTEBOOK_WHEELS = ("onnxruntime-gpu",)
NOTEBOOK_PYTHON = "3.11"


def fetch_wheels(dest: Path, packages: Sequence[str] = NOTEBOOK_WHEELS, python: str = NOTEBOOK_PYTHON) -> None:
    """pip download of binary wheels for Kaggle's Linux x86_64 image (needs the internet, here not there)."""
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
           "--python-version", python, "--implementation", "cp", "--platform", "manylinux_2_28_x86_64",
           "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64", "-d", str(dest), *packages]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise KtError(f"could not download {', '.join(packages)} for the notebook ({out.stderr.strip()[-200:]}); "
                      "pass --no-fetch-wheels with --wheels-from DIR holding them")


def build(competition: str, models: Sequence[str | Path], out: str | Path, *, tta: str | None = None,
          ensemble: str | Path | None = None, wheels_from: str | Path | None = None, user: str | None = None,
          overwrite: bool = False, fetch: bool = False, precision: str = "fp32") -> dict[str, Any]:
    import os

    from .inference.session import read_metadata
    from .inference.tta import recorded_tta

    comp = competitions.get(competition)
    comp.kaggle_slug()  # a local dataset has nothing to bundle for
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise KtError(f"bundle folder {out} already exists; pass --overwrite or choose another -o")
        shutil.rmtree(out)
    weights, fitted, method = None, None, "mean"
    if ensemble:
        from .ensemble import load_blend

        spec = load_blend(ensemble)
        models, weights, fitted, method = spec.paths, spec.weights, spec.fitted, spec.method
    if not models:
        raise KtError("name the models to bundle (model.onnx files) or pass --ensemble SPEC.json")
    out.mkdir(parents=True, exist_ok=True)
    entries, metas = [], []
    for i, path in enumerate(map(Path, models)):
        meta = read_metadata(path)
        metas.append(meta)
        if meta["competition"] != comp.name:
            raise KtError(f"{path} was trained for {meta['competition']!r}, not {comp.name!r}")
        name = f"{i:02d}_{meta['arch']}_{meta['size']}.onnx"
        shutil.copy(path, out / name)
        entries.append({"file": name, "sha256": sha256(out / name), "source": str(path)})
    tta = tta or recorded_tta(metas)  # the views the models were trained for, unless --tta says otherwise
    _kt_wheel(out)
    for wheel in sorted(Path(wheels_from).glob("*.whl")) if wheels_from else []:
        shutil.copy(wheel, out / wheel.name)
    if fetch:
        fetch_wheels(out)
    user = user or os.environ.get("KAGGLE_USERNAME") or "YOUR_KAGGLE_USERNAME"
    dataset = f"kt-bundle-{comp.name.replace('_', '-')}"
    write_json(out / "bundle.json", {"competition": comp.name, "slug": comp.slug, "models": entries,
                                     "weights": weights, "blend": method, "fitted": fitted, "tta": tta,
                                     "precision": precision})
    write_text(out / "kt_predict.py", SCRIPT.format(title=comp.title, dataset=dataset))
    write_json(out / "kernel-metadata.json", {
        "id": f"{user}/kt-{comp.name.replace('_', '-')}-predict", "title": f"kt {comp.name} predict",
        "code_file": "kt_predict.py", "language": "python", "kernel_type": "script", "is_private": True,
        "enable_gpu": True, "enable_internet": False,  # the client defaults internet ON: code competitions forbid it
        "dataset_sources": [f"{user}/{dataset}"], "competition_sources": [comp.slug], "kernel_sources": []})
    write_json(out / "dataset-metadata.json", {"title": f"kt bundle {comp.name}"[:50], "id": f"{user}/{dataset}",
                                               "licenses": [{"name": "CC0-1.0"}]})
    return {"dir": str(out), "models": len(entries), "wheels": sorted(p.name for p in out.glob("*.whl")),
            "kernel": f"{user}/kt-{comp.name.replace('_', '-')}-predict", "dataset": f"{user}/{dataset}"}


def for_submission(comp, csv: Path, *, fetch: bool) -> Path:
    """The bundle of the models that made this submission (from its manifest), built beside it once."""
    import json

    manifest = csv.parent / "manifest.json"
    if not manifest.is_file():
        raise KtError(f"{csv.parent} has no manifest.json naming the models; pass --bundle DIR (kt bundle)")
    data = json.loads(manifest.read_text())
    out = csv.parent / "bundle"
    if not (out / "bundle.json").is_file():
        build(comp.name, [m["file"] for m in data["models"]], out, tta=data.get("tta", "none"),
              ensemble=data.get("ensemble"), fetch=fetch,
              precision=data["models"][0].get("precision", "fp32"))  # as validated here
    return out
