"""`kt bundle`: everything a code competition's notebook needs to predict with the internet off.

    DIR/bundle.json            competition, models (sha256), blend, TTA, thresholds, precision, the notebook's
                               Python and accelerator
    DIR/*.onnx                 the ensemble
    DIR/*.whl                  kaggle_transfer, and onnxruntime(-gpu) built for the notebook's Python
    DIR/kt_predict.py          installs the wheels one by one outside /kaggle/working, finds the bundle,
                               predicts without torch, writes /kaggle/working/submission.csv
    DIR/kernel-metadata.json   the notebook (private, internet OFF, pinned image) }  written at push time
    DIR/dataset-metadata.json  the private dataset that carries this folder      }  with the real owner

The folder is flat: Kaggle's dataset upload skips sub-folders unless they are zipped.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import competitions
from .config import ACCELERATORS, NOTEBOOK_PYTHON  # noqa: F401 - part of this module's API
from .errors import KtError
from .fsutil import read_json, sha256, write_json, write_text
from .runs import slug

RUNTIME_WHEEL = {"gpu": "onnxruntime-gpu", "none": "onnxruntime"}
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")

SCRIPT = '''"""kt offline prediction for {title}, made by `kt bundle` for Python {python}: internet off, no torch."""
import glob, os, shutil, subprocess, sys, tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CANDIDATES = [os.environ.get("KT_BUNDLE_DIR"), str(HERE), "/kaggle/input/{dataset}",
              *glob.glob("/kaggle/input/*/{dataset}")]
BUNDLE = next((Path(p) for p in CANDIDATES if p and (Path(p) / "bundle.json").is_file()), None)
if BUNDLE is None:
    sys.exit("kt: the bundle dataset is not attached (no bundle.json in /kaggle/input/{dataset}): add the dataset "
             "{dataset} to the notebook's inputs, or push it again with kt submit")
# wheels go to a temp folder, not /kaggle/working: they must not become the notebook's output
SITE = Path(os.environ.get("KT_SITE") or tempfile.mkdtemp(prefix="kt-site-"))
OUT = Path(os.environ.get("KT_BUNDLE_OUT") or "/kaggle/working")
for wheel in sorted(glob.glob(str(BUNDLE / "*.whl"))):
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                           "--target", str(SITE), wheel], capture_output=True, text=True)
    if done.returncode:
        reason = (done.stderr.strip().splitlines() or ["pip failed"])[-1]
        sys.exit(f"kt: cannot install {{Path(wheel).name}} on Python {{sys.version_info[0]}}.{{sys.version_info[1]}}"
                 f" ({{reason}}); rebuild the bundle with kt bundle --python "
                 f"{{sys.version_info[0]}}.{{sys.version_info[1]}}")
sys.path.insert(0, str(SITE))

import kaggle_transfer  # noqa: E402
from kaggle_transfer.inference.bundle_run import run  # noqa: E402

print("kaggle_transfer", kaggle_transfer.__version__, "from", Path(kaggle_transfer.__file__).parent)

csv = run(BUNDLE, os.environ.get("KT_BUNDLE_DATA"), Path(tempfile.mkdtemp(prefix="kt-submissions-")))
shutil.copy(csv, OUT / "submission.csv")
shutil.copy(csv.parent / "manifest.json", OUT / "kt_manifest.json")  # what ran: models, provider, timings
print("wrote", OUT / "submission.csv")
'''


def kaggle_slug(text: str, *, low: int, high: int, what: str) -> str:
    """A Kaggle dataset/notebook slug: lower case, digits and dashes, within the client's length limits."""
    slug = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]", "-", text.lower())).strip("-")
    if not low <= len(slug) <= high:
        raise KtError(f"the {what} slug {slug!r} (from {text!r}) must have {low}-{high} characters; "
                      "choose a shorter competition name")
    return slug


def names(competition: str) -> dict[str, str]:
    """The bundle dataset's and the notebook's slugs (6-50 and 5-50 characters in the client)."""
    return {"dataset": kaggle_slug(f"kt-bundle-{competition}", low=6, high=50, what="dataset"),
            "kernel": kaggle_slug(f"kt-{competition}-predict", low=5, high=50, what="notebook")}


def _kt_wheel(dest: Path) -> Path:
    source = Path(__file__).resolve().parent.parent
    if not (source / "setup.cfg").is_file():
        raise KtError("kt bundle builds a wheel of kaggle_transfer from its source checkout; run it from a clone")
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                          "-w", str(dest), str(source)], capture_output=True, text=True)
    if out.returncode != 0:
        raise KtError(f"building the kaggle_transfer wheel failed: {out.stderr.strip().splitlines()[-1:]}")
    return next(dest.glob("kaggle_transfer-*.whl"))


def fetch_wheels(dest: Path, packages: Sequence[str], python: str = NOTEBOOK_PYTHON) -> None:
    """pip download of binary wheels for the notebook's Python on Linux x86_64 (needs the internet here)."""
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
           "--python-version", python, "--implementation", "cp", *platforms, "-d", str(dest), *packages]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise KtError(f"could not download {', '.join(packages)} for Python {python} ({out.stderr.strip()[-200:]}); "
                      "pass --no-fetch-wheels with --wheels-from DIR holding them")


def check_wheel(wheel: Path, python: str) -> None:
    """Refuse a wheel pip would refuse in the notebook: another Python or another platform."""
    from packaging.utils import parse_wheel_filename

    major, minor = (int(v) for v in python.split("."))
    try:
        tags = parse_wheel_filename(wheel.name)[3]
    except Exception:  # noqa: BLE001 - packaging's InvalidWheelFilename
        raise KtError(f"{wheel.name} is not a wheel file name; remove it from --wheels-from") from None

    def fits(tag) -> bool:
        cp = re.fullmatch(r"cp(\d)(\d+)", tag.interpreter)
        python_ok = tag.interpreter in ("py3", f"py{major}{minor}") or (
            cp is not None and int(cp[1]) == major and (int(cp[2]) == minor or (tag.abi == "abi3" and
                                                                                 int(cp[2]) <= minor)))
        return python_ok and (tag.platform == "any" or tag.platform.endswith("x86_64") and "linux" in tag.platform)

    if not any(fits(t) for t in tags):
        raise KtError(f"{wheel.name} does not install on the notebook's Python {python} (Linux x86_64); "
                      f"fetch it for that target (kt bundle --python {python}) or pass another --wheels-from")


def build(competition: str, models: Sequence[str | Path], out: str | Path, *, tta: str | None = None,
          ensemble: str | Path | None = None, wheels_from: str | Path | None = None, user: str | None = None,
          overwrite: bool = False, fetch: bool = False, precision: str = "fp32", python: str = NOTEBOOK_PYTHON,
          accelerator: str = "gpu", image_has_onnxruntime: bool = False) -> dict[str, Any]:
    """Write the bundle folder. Metadata naming an owner is written only for a given `user` (kt bundle
    --user); kt submit always writes it at push time, with the owner the client authenticated."""
    comp = competitions.get(competition)
    comp.kaggle_slug()  # a local dataset has nothing to bundle for
    if accelerator not in ACCELERATORS:
        raise KtError(f"--accelerator {accelerator!r} is not valid; choose one of: {', '.join(ACCELERATORS)}")
    if not re.fullmatch(r"3\.\d{1,2}", python):
        raise KtError(f"--python {python!r} is not a Python version like {NOTEBOOK_PYTHON}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise KtError(f"bundle folder {out} already exists; pass --overwrite or choose another -o")
        shutil.rmtree(out)
    try:
        entries, spec = _copy_models(comp, models, ensemble, out)
        _add_wheels(out, wheels_from=wheels_from, fetch=fetch, runtime=RUNTIME_WHEEL[accelerator], python=python,
                    image_has_onnxruntime=image_has_onnxruntime)
        info = {"competition": comp.name, "slug": comp.slug, "title": comp.title, **names(comp.name),
                "python": python, "accelerator": accelerator, "precision": precision, "models": entries,
                **spec, "tta": tta or spec["tta"]}
        write_json(out / "bundle.json", info)
        write_text(out / "kt_predict.py", SCRIPT.format(title=comp.title, dataset=info["dataset"], python=python))
        result = {"dir": str(out), "models": len(entries), "wheels": sorted(p.name for p in out.glob("*.whl"))}
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # a refused bundle leaves no half-built folder
        raise
    return {**result, **(write_metadata(out, user) if user else {})}


def _add_wheels(out: Path, *, wheels_from, fetch: bool, runtime: str, python: str,
                image_has_onnxruntime: bool) -> None:
    """kaggle_transfer's wheel, the user's and the fetched ones; each must install on `python`."""
    for wheel in sorted(Path(wheels_from).glob("*.whl")) if wheels_from else []:
        shutil.copy(wheel, out / wheel.name)
    if fetch:
        fetch_wheels(out, [runtime], python)
    _kt_wheel(out)
    for wheel in out.glob("*.whl"):
        check_wheel(wheel, python)
    if not image_has_onnxruntime and not list(out.glob("onnxruntime*.whl")):
        raise KtError(f"the bundle has no onnxruntime wheel for Python {python}, and Kaggle's image has none: drop "
                      "--no-fetch-wheels, pass --wheels-from DIR holding one, or --image-has-onnxruntime if it has")


def _copy_models(comp, models, ensemble, out: Path) -> tuple[list[dict], dict[str, Any]]:
    from .inference.session import read_metadata
    from .inference.tta import recorded_tta

    spec: dict[str, Any] = {"weights": None, "blend": "mean", "fitted": None, "tta": None}
    if ensemble:
        from .ensemble import load_blend

        blend = load_blend(ensemble)
        models = blend.paths
        spec.update(weights=blend.weights, fitted=blend.fitted, blend=blend.method)
    if not models:
        raise KtError("name the models to bundle (model.onnx files) or pass --ensemble SPEC.json")
    out.mkdir(parents=True, exist_ok=True)
    entries, metas = [], []
    for i, path in enumerate(map(Path, models)):
        meta = read_metadata(path)
        if meta["competition"] != comp.name:
            raise KtError(f"{path} was trained for {meta['competition']!r}, not {comp.name!r}")
        metas.append(meta)
        name = f"{i:02d}_{slug(meta['arch'])}_{meta['size']}.onnx"  # tv:NAME: no ':' in a dataset file
        shutil.copy(path, out / name)
        entries.append({"file": name, "sha256": sha256(out / name), "source": str(path)})
    spec["tta"] = recorded_tta(metas)  # the views the models were trained for; build() may override
    return entries, spec


def write_metadata(bundle: Path, owner: str) -> dict[str, str]:
    """kernel-metadata.json and dataset-metadata.json for `owner` (the authenticated Kaggle user)."""
    info = read_json(Path(bundle) / "bundle.json", what="bundle description")
    dataset, kernel = f"{owner}/{info['dataset']}", f"{owner}/{info['kernel']}"
    write_json(bundle / "kernel-metadata.json", {
        "id": kernel, "title": f"kt {info['competition']} predict", "code_file": "kt_predict.py",
        "language": "python", "kernel_type": "script", "is_private": True,
        "enable_gpu": info["accelerator"] == "gpu",
        "enable_internet": False,  # the client defaults internet ON; code competitions forbid it
        "docker_image_pinning_type": "original",  # keep the image the bundle's wheels were built for
        "dataset_sources": [dataset], "competition_sources": [info["slug"]], "kernel_sources": []})
    write_json(bundle / "dataset-metadata.json", {"title": f"kt bundle {info['competition']}"[:50], "id": dataset,
                                                  "licenses": [{"name": "CC0-1.0"}]})
    return {"dataset": dataset, "kernel": kernel}


def for_submission(comp, csv: Path, *, fetch: bool, accelerator: str | None = None,
                   python: str = NOTEBOOK_PYTHON, image_has_onnxruntime: bool = False) -> Path:
    """The bundle of the models that made this submission (from its manifest), built beside it. Rebuilt
    when the notebook target (Python, accelerator) changed since it was built."""
    manifest = csv.parent / "manifest.json"
    if not manifest.is_file():
        raise KtError(f"{csv.parent} has no manifest.json naming the models; pass --bundle DIR (kt bundle)")
    data = read_json(manifest, what="submission manifest")
    out, accelerator = csv.parent / "bundle", accelerator or comp.accelerator
    current = read_json(out / "bundle.json", what="bundle") if (out / "bundle.json").is_file() else {}
    if (current.get("python"), current.get("accelerator")) != (python, accelerator):
        build(comp.name, [m["file"] for m in data["models"]], out, tta=data.get("tta", "none"),
              ensemble=data.get("ensemble"), fetch=fetch, overwrite=True, python=python, accelerator=accelerator,
              image_has_onnxruntime=image_has_onnxruntime,
              precision=data["models"][0].get("precision", "fp32"))  # as validated here
    return out
