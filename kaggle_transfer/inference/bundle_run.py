"""What a bundle's kt_predict.py runs inside the notebook: torch-free prediction from bundle.json.

A GPU bundle must get onnxruntime's CUDA provider: a notebook that silently ran on the CPU would pass
its quick public run and then time out on the hidden test set, so the run stops before predicting
unless the bundle allows a CPU fallback. The manifest it leaves (kt_manifest.json in the notebook's
output) says what ran, so kt submit can check it before spending a submission.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from pathlib import Path

from .. import competitions
from ..config import BLENDS
from ..data import images
from ..errors import KtError
from ..files import read_json, sha256, write_json
from .pipeline import predict_submission
from .predictor import Choice, RunOptions, load_predictor
from .session import PRECISIONS, load_model, read_metadata
from .tta import VIEWS

CUDA = "CUDAExecutionProvider"


def check_bundle(spec, path: Path) -> dict:
    """bundle.json as kt bundle writes it: models named by plain file names inside the bundle with their
    sha256, weights finite and at least 0 with a positive sum, one per model, known blend, views and
    precision. (The fitted parameters are checked where answers are decoded.)"""
    import math

    def fail(why: str) -> KtError:
        return KtError(
            f"{path}: {why}; the bundle is damaged: build it again with kt bundle or kt submit"
        )

    if not isinstance(spec, dict) or not isinstance(spec.get("competition"), str):
        raise fail("not a bundle description")
    models = spec.get("models")
    if (
        not isinstance(models, list)
        or not models
        or not all(
            isinstance(m, dict)
            and isinstance(m.get("file"), str)
            and isinstance(m.get("sha256"), str)
            and m["file"] == Path(m["file"]).name
            and m["file"] not in ("", ".", "..")
            for m in models
        )
    ):
        raise fail("'models' must list the bundle's model files (plain names) with their sha256")
    weights = spec.get("weights")
    if weights is not None and not (
        isinstance(weights, list)
        and len(weights) == len(models)
        and all(
            isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0
            for w in weights
        )
        and 0 < sum(weights) < math.inf
    ):
        raise fail(
            f"'weights' must be {len(models)} finite numbers, at least 0, with a positive sum"
        )
    for key, allowed in (("blend", BLENDS), ("tta", VIEWS), ("precision", PRECISIONS)):
        value = spec.get(key, "fp32" if key == "precision" else None)
        if value not in allowed:
            raise fail(f"{key!r} is {value!r}, not one of {', '.join(allowed)}")
    if spec.get("fitted") is not None and not isinstance(spec["fitted"], dict):
        raise fail("'fitted' is not a mapping")
    return spec


def _models(bundle: Path, spec: dict) -> list[Path]:
    models = []
    for m in spec["models"]:
        path = Path(bundle) / m["file"]
        if not path.is_file() or sha256(path) != m["sha256"]:
            raise KtError(
                f"{path} is missing or does not match the sha256 recorded in bundle.json; push the "
                "bundle again with kt submit"
            )
        models.append(path)
    return models


def _check_provider(
    model: Path, spec: dict, cpu_fallback: bool, echo: Callable[[str], None]
) -> str:
    """The provider this notebook gets; a GPU bundle without CUDA stops here (or warns, with fallback)."""
    import onnxruntime as ort

    if spec.get("accelerator") != "gpu":
        return "cpu"
    try:  # asked for by name, CUDA either starts or is a KtError saying why (session.py)
        if load_model(model, provider="cuda").provider == CUDA:
            return "cuda"
        said = ""
    except KtError as e:
        said = f" ({e})"
    why = (
        f"onnxruntime {ort.__version__} ({', '.join(ort.get_available_providers())}) could not create its "
        "CUDA provider: the notebook has no GPU, or its CUDA libraries are not the ones this build links"
        + said
    )
    if not cpu_fallback:
        raise KtError(
            f"this GPU bundle got no CUDA provider: {why}; stopping so that no CPU-only run times out "
            "on the hidden test set (enable the GPU, or rebuild with --cpu-fallback)"
        )
    echo(f"warning: {why}; predicting on the CPU (--cpu-fallback)")
    return "cpu"


def run(
    bundle: Path,
    data_dir: str | None,
    out_root: Path,
    *,
    echo: Callable[[str], None] = print,
    cpu_fallback: bool = False,
) -> Path:
    """Predict the mounted test set with the bundle's models; returns the submission CSV's path."""
    spec = check_bundle(
        read_json(Path(bundle) / "bundle.json", what="bundle description"),
        Path(bundle) / "bundle.json",
    )
    models = _models(bundle, spec)
    meta = read_metadata(models[0])  # a YAML-described competition travels in its models' metadata
    if meta.get("competition_spec"):
        competitions.register(meta["competition_spec"])
    comp = competitions.get(spec["competition"])
    data = competitions.find_data_dir(comp, data_dir)
    echo(f"data: {data}")
    provider = _check_provider(models[0], spec, cpu_fallback, echo)
    echo(
        f"predicting with {len(models)} model(s) on {provider}; PNGs decoded by {images.png_decoder()}"
    )
    started = time.time()
    choice = Choice(
        models=models, weights=spec["weights"], blend=spec["blend"], fitted=spec["fitted"]
    )
    options = RunOptions(
        tta=spec["tta"], provider=provider, precision=spec.get("precision", "fp32"), progress=False
    )
    predictor = load_predictor(spec["competition"], choice, options)
    # a hidden test image that cannot be read is answered with the others' mean and listed in the
    # manifest: one bad file must not cost the whole submission its score
    manifest = predict_submission(
        predictor, data, out_root=out_root, label="bundle", overwrite=True, skip_bad_images=True
    )
    if manifest["bad_images"]:
        echo(
            f"skipped {manifest['bad_images']['count']} unreadable image(s), answered with the mean"
        )
    seconds = time.time() - started
    import onnxruntime as ort

    manifest.update(
        bundle_id=spec.get("bundle_id"),
        python=platform.python_version(),
        onnxruntime=ort.__version__,
        png_decoder=images.png_decoder(),
        providers=sorted({m["provider"] for m in manifest["models"]}),
        seconds_per_image=round(seconds / max(manifest["rows"], 1), 4),
    )
    write_json(Path(manifest["submission"]).parent / "manifest.json", manifest)
    return Path(manifest["submission"])
