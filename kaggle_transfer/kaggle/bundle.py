"""`kt bundle`: everything a code competition's notebook needs to predict with the internet off.

    DIR/bundle.json            competition, models (sha256), blend, TTA, thresholds, precision, the
                               notebook's Pythons and accelerator, a fresh bundle_id, the runtime dataset
    DIR/*.onnx                 the ensemble (members of weight 0 left out)
    DIR/*.whl                  kaggle_transfer, and (kt bundle) onnxruntime for each notebook Python
    DIR/kt_predict.py          constant code plus one JSON literal (kaggle/notebook.py)
    DIR/kernel-metadata.json   the notebook (private, internet OFF, pinned image) }  written at push time
    DIR/dataset-metadata.json  the private dataset that carries this folder      }  with the real owner

`kt submit` keeps the pinned onnxruntime wheels out of the bundle, in a runtime dataset of their own
(`runtime_folder`) named after what it holds, so a new bundle version does not upload 250 MB again.
The folder is flat: Kaggle's dataset upload skips sub-folders unless they are zipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import competitions
from ..config import ACCELERATORS, NOTEBOOK_PYTHON
from ..errors import KtError
from ..files import read_json, sha256, write_json, write_text
from ..inference.ensemble import load_blend
from ..inference.predictor import Choice
from ..inference.session import int8_copy, read_metadata
from ..inference.tta import recorded_tta
from ..runs import slug
from . import notebook, runtime


@dataclass(frozen=True)
class NotebookTarget:
    """Where the bundle runs: the notebook image's Python(s), its accelerator, and what it may fall back to."""

    python: str = NOTEBOOK_PYTHON  # one version or a comma list: a wheel for each is carried
    accelerator: str = "gpu"
    precision: str = "fp32"
    cpu_fallback: bool = False  # a GPU bundle without a CUDA provider predicts on the CPU
    image_has_onnxruntime: bool = False  # carry no onnxruntime wheel

    @property
    def pythons(self) -> tuple[str, ...]:
        return runtime.parse_pythons(self.python)

    def check(self) -> None:
        if self.accelerator not in ACCELERATORS:
            raise KtError(
                f"--accelerator {self.accelerator!r} is not valid; choose one of: {', '.join(ACCELERATORS)}"
            )
        self.pythons  # noqa: B018 - validates --python


@dataclass(frozen=True)
class Wheels:
    """Where the bundle's wheels come from: the pinned runtime fetched (into the bundle, or into a runtime
    folder of its own), and any the user brings."""

    fetch: bool = False
    wheels_from: str | Path | None = None
    runtime_dir: Path | None = None  # kt submit: the runtime dataset's folder (runtime_folder)


def kaggle_slug(text: str, *, low: int, high: int, what: str) -> str:
    """A Kaggle dataset/notebook slug: lower case, digits and dashes, within the client's length limits."""
    out = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]", "-", text.lower())).strip("-")
    if not low <= len(out) <= high:
        raise KtError(
            f"the {what} slug {out!r} (from {text!r}) must have {low}-{high} characters; "
            "choose a shorter competition name"
        )
    return out


def names(competition: str) -> dict[str, str]:
    """The bundle dataset's and the notebook's slugs (6-50 and 5-50 characters in the client)."""
    return {
        "dataset": kaggle_slug(f"kt-bundle-{competition}", low=6, high=50, what="dataset"),
        "kernel": kaggle_slug(f"kt-{competition}-predict", low=5, high=50, what="notebook"),
    }


# what a wheel of kaggle_transfer is built from (setup.cfg reads README.md as its long description)
WHEEL_SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "kaggle_transfer")


def _source_files(source: Path) -> list[Path]:
    files = []
    for name in WHEEL_SOURCES:
        top = source / name
        found = sorted(top.rglob("*")) if top.is_dir() else [top]
        files += [
            f for f in found if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc"
        ]
    return files


def source_digest(source: Path, files: list[Path] | None = None) -> str:
    """What the wheel is built from, as one hash: each source file's path and sha256 (`files`: the
    source's files, listed already)."""
    import hashlib

    digest = hashlib.sha256()
    for f in _source_files(source) if files is None else files:
        digest.update(f"{f.relative_to(source).as_posix()}\0{sha256(f)}\0".encode())
    return digest.hexdigest()[:16]


def _kt_wheel(dest: Path) -> Path:
    """A wheel of this kaggle_transfer in `dest`. Built once per source (its files' sha256 names it in
    the wheel cache; kt submit builds a bundle for every push), from a private copy of the source:
    setuptools builds in the source folder (build/, *.egg-info), so two kt bundle commands at once
    would build in one folder and one of them fail."""
    source = Path(__file__).resolve().parents[2]
    if not (source / "setup.cfg").is_file():
        raise KtError(
            "kt bundle builds a wheel of kaggle_transfer from its source checkout; run it from a clone"
        )
    files = _source_files(source)
    cached = runtime.cache_dir() / "kaggle_transfer" / source_digest(source, files)
    found = sorted(cached.glob("kaggle_transfer-*.whl"))
    if not found:
        cached.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="kt-wheel-", dir=cached) as tmp:
            copy = Path(tmp) / "source"
            for f in files:
                (copy / f.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, copy / f.relative_to(source))
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "wheel",
                    "--quiet",
                    "--no-deps",
                    "--no-build-isolation",
                ]
                + ["-w", str(Path(tmp) / "wheel"), str(copy)],
                capture_output=True,
                text=True,
            )
            if out.returncode != 0:
                lines = [
                    line for line in out.stderr.strip().splitlines() if "error" in line.lower()
                ]
                raise KtError(
                    "building the kaggle_transfer wheel failed: "
                    f"{(lines or ['pip gave no reason'])[0]}"
                )
            built = next((Path(tmp) / "wheel").glob("kaggle_transfer-*.whl"))
            os.replace(built, cached / built.name)  # whole or absent: another kt never sees half
        found = sorted(cached.glob("kaggle_transfer-*.whl"))
    shutil.copy(found[-1], dest / found[-1].name)
    return dest / found[-1].name


def check_wheels(folder: Path, target: NotebookTarget) -> None:
    """Every wheel installs on one of the notebook's Pythons; every Python has an onnxruntime (unless the
    image brings one); a GPU runtime links the image's CUDA."""
    wheels = sorted(folder.glob("*.whl"))
    pythons = target.pythons
    for wheel in wheels:
        if not any(runtime.wheel_fits(wheel, p) for p in pythons):
            raise KtError(
                f"{wheel.name} does not install on the notebook's Python {target.python} (Linux x86_64); "
                f"fetch it for that target (kt bundle --python {target.python}) or pass another "
                "--wheels-from"
            )
    runtimes = [w for w in wheels if w.name.startswith("onnxruntime")]
    for python in [] if target.image_has_onnxruntime else pythons:
        if not any(runtime.wheel_fits(w, python) for w in runtimes):
            raise KtError(
                f"the bundle has no onnxruntime wheel for Python {python}, and Kaggle's image has none: "
                "drop --no-fetch-wheels, pass --wheels-from DIR holding one, or "
                "--image-has-onnxruntime if it has"
            )
    if target.accelerator == "gpu":
        for wheel in [w for w in runtimes if w.name.startswith("onnxruntime_gpu")]:
            runtime.check_cuda(wheel)


def runtime_folder(target: NotebookTarget, root: Path | None = None) -> Path:
    """The runtime dataset's folder: the pinned onnxruntime for each notebook Python and kt_runtime.json.
    Its name says what it holds, so the dataset is created once and never needs a new version."""
    pinned, decoder = runtime.RUNTIMES[target.accelerator], runtime.DECODER
    tags = "-".join(runtime.cp_tag(p) for p in target.pythons)
    name = kaggle_slug(
        f"kt-runtime-{target.accelerator}-{pinned.version}-ic{decoder.version}-{tags}",
        low=6,
        high=50,
        what="dataset",
    )
    folder = (root or runtime.cache_dir().parent / "runtime") / name
    marker = folder / "kt_runtime.json"
    if marker.is_file() and all(
        (folder / w["file"]).is_file() for w in read_json(marker, what="runtime")["wheels"]
    ):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    wheels = []
    for python in target.pythons:
        for wheel in (runtime.fetch(pinned, python), *runtime.fetch_decoder(python)):
            shutil.copy(wheel, folder / wheel.name)
            wheels.append(
                {"file": wheel.name, "python": python, "sha256": sha256(folder / wheel.name)}
            )
    check_wheels(folder, target)
    write_json(
        marker,
        {
            "dataset": name,
            "package": pinned.package,
            "version": pinned.version,
            "cuda": pinned.cuda,
            "decoder": decoder.requirement,
            "wheels": wheels,
        },
    )
    return folder


def build(
    competition: str,
    choice: Choice,
    out: str | Path,
    *,
    target: NotebookTarget = NotebookTarget(),
    wheels: Wheels = Wheels(),
    tta: str | None = None,
    user: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the bundle folder. Metadata naming an owner is written only for a given `user` (kt bundle
    --user); kt submit always writes it at push time, with the owner the client authenticated."""
    comp = competitions.get(competition)
    comp.kaggle_slug()  # a local dataset has nothing to bundle for
    target.check()
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise KtError(
                f"bundle folder {out} already exists; pass --overwrite or choose another -o"
            )
        shutil.rmtree(out)
    try:
        entries, spec = _copy_models(comp, choice.models, choice.ensemble, out, choice.int8)
        runtime_info = _add_wheels(out, target, wheels)
        info = {
            "competition": comp.name,
            "slug": comp.kaggle.slug,
            "title": comp.title,
            **names(comp.name),
            "python": target.python,
            "pythons": list(target.pythons),
            "accelerator": target.accelerator,
            "precision": target.precision,
            "cpu_fallback": target.cpu_fallback,
            "models": entries,
            **spec,
            "tta": tta or spec["tta"],
            "bundle_id": uuid.uuid4().hex,
            "runtime": runtime_info,
        }
        write_json(out / "bundle.json", info)
        write_script(out, info)
        result = {
            "dir": str(out),
            "models": len(entries),
            "wheels": sorted(p.name for p in out.glob("*.whl")),
            "runtime": runtime_info,
        }
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # a refused bundle leaves no half-built folder
        raise
    return {**result, **(write_metadata(out, user) if user else {})}


def write_script(out: Path, info: dict[str, Any]) -> None:
    """kt_predict.py for this build of the bundle: it looks for the bundle.json carrying this bundle_id,
    so an older build attached beside it is never run in its place."""
    settings = {
        "dataset": info["dataset"],
        "bundle_id": info["bundle_id"],
        "cpu_fallback": bool(info.get("cpu_fallback")),
        "runtime": (info.get("runtime") or {}).get("dataset"),
    }
    write_text(out / "kt_predict.py", notebook.render(settings))


def _add_wheels(out: Path, target: NotebookTarget, wheels: Wheels) -> dict[str, Any] | None:
    """kaggle_transfer's wheel, the user's and the fetched runtime (here, or in the runtime folder)."""
    for wheel in sorted(Path(wheels.wheels_from).glob("*.whl")) if wheels.wheels_from else []:
        shutil.copy(wheel, out / wheel.name)
    _kt_wheel(out)
    if wheels.runtime_dir is not None:
        check_wheels(out, NotebookTarget(**{**target.__dict__, "image_has_onnxruntime": True}))
        return {
            k: v
            for k, v in read_json(wheels.runtime_dir / "kt_runtime.json", what="runtime").items()
        }
    if wheels.fetch:
        pinned = [] if target.image_has_onnxruntime else [runtime.RUNTIMES[target.accelerator]]
        for python in target.pythons:
            for fetched in [
                *(runtime.fetch(p, python) for p in pinned),
                *runtime.fetch_decoder(python),
            ]:
                shutil.copy(fetched, out / fetched.name)
    check_wheels(out, target)
    return None


def _copy_models(
    comp, models, ensemble, out: Path, int8=False
) -> tuple[list[dict], dict[str, Any]]:
    spec: dict[str, Any] = {"weights": None, "blend": "mean", "fitted": None, "tta": None}
    if ensemble:
        blend = load_blend(ensemble)  # members of weight 0 are already left out
        blend.require(comp.name, ensemble)
        models = blend.paths
        spec.update(weights=blend.weights, fitted=blend.fitted, blend=blend.method)
    if not models:
        raise KtError("name the models to bundle (model.onnx files) or pass --ensemble SPEC.json")
    models = [int8_copy(p) for p in models] if int8 else models
    out.mkdir(parents=True, exist_ok=True)
    entries, metas = [], []
    for i, path in enumerate(map(Path, models)):
        meta = read_metadata(path)
        if meta["competition"] != comp.name:
            raise KtError(f"{path} was trained for {meta['competition']!r}, not {comp.name!r}")
        metas.append(meta)
        # tv:NAME: no ':' in a dataset file
        name = f"{i:02d}_{slug(meta['arch'])}_{meta['size']}.onnx"
        shutil.copy(path, out / name)
        entries.append({"file": name, "sha256": sha256(out / name), "source": str(path.resolve())})
    spec["tta"] = recorded_tta(metas)  # the views the models were trained for; build() may override
    return entries, spec


def write_metadata(bundle: Path, owner: str) -> dict[str, str]:
    """kernel-metadata.json and dataset-metadata.json for `owner` (the authenticated Kaggle user); the
    runtime dataset, when the bundle has one, is a second source of the notebook."""
    info = read_json(Path(bundle) / "bundle.json", what="bundle description")
    dataset, kernel = f"{owner}/{info['dataset']}", f"{owner}/{info['kernel']}"
    runtime_ref = f"{owner}/{info['runtime']['dataset']}" if info.get("runtime") else None
    write_json(
        bundle / "kernel-metadata.json",
        {
            "id": kernel,
            "title": f"kt {info['competition']} predict",
            "code_file": "kt_predict.py",
            "language": "python",
            "kernel_type": "script",
            "is_private": True,
            "enable_gpu": info["accelerator"] == "gpu",
            "enable_internet": False,  # the client defaults internet ON; code competitions forbid it
            "docker_image_pinning_type": "original",  # keep the image the bundle's wheels were built for
            "dataset_sources": [dataset] + ([runtime_ref] if runtime_ref else []),
            "competition_sources": [info["slug"]],
            "kernel_sources": [],
        },
    )
    write_json(
        bundle / "dataset-metadata.json",
        {
            "title": f"kt bundle {info['competition']}"[:50],
            "id": dataset,
            "licenses": [{"name": "CC0-1.0"}],
        },
    )
    return {"dataset": dataset, "kernel": kernel, "runtime": runtime_ref}


def write_runtime_metadata(folder: Path, owner: str) -> str:
    """dataset-metadata.json of the runtime dataset for `owner`; returns its ref."""
    info = read_json(folder / "kt_runtime.json", what="runtime description")
    ref = f"{owner}/{info['dataset']}"
    write_json(
        folder / "dataset-metadata.json",
        {
            "title": f"kt runtime {info['package']} {info['version']}"[:50],
            "id": ref,
            "licenses": [{"name": "other"}],
        },
    )
    return ref


def for_submission(comp, csv: Path, *, target: NotebookTarget, fetch: bool) -> Path:
    """The bundle of the models that made this submission (from its manifest), built beside it, with the
    pinned runtime in a runtime folder of its own when it is fetched. Built anew for every push (seconds:
    the wheels are cached), so a changed target, runtime choice or kt source never ships a stale bundle."""
    manifest = csv.parent / "manifest.json"
    if not manifest.is_file():
        raise KtError(
            f"{csv.parent} has no manifest.json naming the models; pass --bundle DIR (kt bundle)"
        )
    data = read_json(manifest, what="submission manifest")
    out = csv.parent / "bundle"
    # int8 models are files (kt export --int8), not a conversion: the notebook loads them as they are
    precision = data["models"][0].get("precision", "fp32")
    int8 = precision == "int8"
    target = NotebookTarget(**{**target.__dict__, "precision": "fp32" if int8 else precision})
    use_runtime = fetch and not target.image_has_onnxruntime
    wheels = Wheels(runtime_dir=runtime_folder(target) if use_runtime else None)
    # an ensemble's members come from its spec (fp32 model.onnx files): int8 swaps each for its copy
    choice = Choice(
        models=[m["file"] for m in data["models"]], ensemble=data.get("ensemble"), int8=int8
    )
    build(
        comp.name,
        choice,
        out,
        target=target,
        wheels=wheels,
        tta=data.get("tta", "none"),
        overwrite=True,
    )
    return out
