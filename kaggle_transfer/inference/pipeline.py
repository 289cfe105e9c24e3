"""`kt predict`: ONNX ensemble → blended raw outputs → decoded answers → validated submission folder.
Torch-free."""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import competitions, runs
from ..competitions import submission
from ..data import tabular
from ..data.cache import use_cache
from ..errors import KtError
from ..files import write_json
from .ensemble import load_blend
from .predict import blend, combine_fitted, predict_models, refit_from_oof
from .session import OnnxModel, describe, load_ensemble
from .tta import recorded_tta


def _load(competition: str, model_paths: Sequence[str | Path], provider: str, precision: str,
          *, io_binding: str) -> tuple[Any, list[OnnxModel]]:
    """The competition and its models. `custom`: the competition comes from the models' metadata (a
    YAML-described contest travels inside; loading registers it)."""
    name = None if competition == "custom" else (
        competitions.get(competition).name if competitions.is_yaml(competition) else competition)
    models = load_ensemble(list(model_paths), name, provider=provider, precision=precision, io_binding=io_binding)
    comp = competitions.for_model(models[0].meta)
    for m in models:  # the metadata must describe the competition it claims, or decoding would be wrong
        for key, want in (("task", comp.task.kind), ("num_classes", comp.task.num_classes)):
            if m.meta[key] != want:
                raise KtError(f"{m.path}: metadata {key!r} is {m.meta[key]!r} but {comp.name} has {want!r}; the file "
                              "is damaged or not from kt export (export it again)")
    return comp, models


def _fundus_crop(models: Sequence[OnnxModel]) -> bool:
    crops = {bool((m.meta.get("recipe") or {}).get("fundus_crop")) for m in models}
    if len(crops) > 1:
        raise KtError("the models disagree on fundus_crop; ensemble models trained with the same preprocessing")
    return crops.pop()


def predict_submission(competition: str, model_paths: Sequence[str | Path], data_dir: str | Path | None,
                       *, out_root: str | Path | None = None, label: str | None = None, tta: str | None = None,
                       overwrite: bool = False, refit: bool = False, provider: str = "auto",
                       batch_size: int = 32, workers: int = 4, progress: bool = True,
                       blend_method: str = "mean", ensemble: str | Path | None = None,
                       cache: str | Path | None = None, weights: list[float] | None = None,
                       fitted: dict[str, Any] | None = None, precision: str = "fp32",
                       io_binding: str = "auto", skip_bad_images: bool = False) -> dict[str, Any]:
    """Write submissions/<competition>/<stamp>_<label>/{submission.csv, manifest.json}; returns the manifest.

    `tta` None: the views the models recorded (RunConfig.tta). `ensemble`: a kt ensemble spec's models,
    weights, blend and thresholds, exactly as scored on OOF. `skip_bad_images`: see _fill_skipped."""
    given = fitted is not None  # thresholds handed in (bundle) rather than fitted here
    spec = load_blend(ensemble) if ensemble else None
    if spec:
        model_paths, weights, blend_method, fitted, label = spec.paths, spec.weights, spec.method, spec.fitted, \
            label or spec.label
    comp, models = _load(competition, model_paths, provider, precision, io_binding=io_binding)
    if spec:
        spec.require(comp.name, ensemble)
    data_dir = competitions.find_data_dir(comp, data_dir)
    label = label or f"{len(models)}x_" + "+".join(sorted({f"{m.meta['arch']}@{m.size}" for m in models}))
    tta = tta or recorded_tta([m.meta for m in models])
    root, folder = runs.submissions_root(out_root), f"{runs.stamp()}_{runs.slug(label)}"
    existed = (root / comp.name / folder).exists()
    out_dir = runs.new_output_dir(root, comp.name, folder, overwrite=overwrite)  # reserved before the work
    try:
        started = time.time()
        test, raw = _test_outputs(comp, models, data_dir, tta=tta, cache=cache, skip_bad_images=skip_bad_images,
                                  batch_size=batch_size, workers=workers, progress=progress,
                                  weights=weights, blend_method=blend_method)
        oof_score = spec.oof_score if spec else None
        if not (spec or given):  # an ensemble spec or a bundle brings thresholds refitted on the blended OOF
            fitted, oof_score = (refit_from_oof(models, comp.task) if refit
                                 else (combine_fitted(models, comp.task), None))
        ids, raw, bad = _fill_skipped(comp, data_dir, list(test["id"]), raw, test.attrs.get("bad_images", []))
        csv = submission.write(comp, ids, comp.task.decode(raw, fitted), out_dir / "submission.csv")
        check = submission.validate(comp, csv, data_dir)
        seconds = time.time() - started
        manifest = {
            "competition": comp.name, "created": runs.timestamp(), "label": label,
            "models": [describe(m) for m in models], "blend": blend_method, "tta": tta, "fitted": fitted,
            "fitted_from": "ensemble spec" if spec or given else "blended OOF" if refit else "mean of members",
            "oof_score": oof_score, "ensemble": str(ensemble) if ensemble else None, "weights": weights,
            "rows": check["rows"], "cached_rows": int(test["cached"].sum()), "seconds": round(seconds, 2),
            "images_per_s": round(len(test) / max(seconds, 1e-9), 1), "git_sha": runs.git_sha(),
            "data_dir": str(data_dir), "submission": str(csv), "bad_images": bad,
            "meta_missing": _meta_missing(models, test), "meta_clipped": _meta_clipped(models, test)}
        write_json(out_dir / "manifest.json", manifest)
    except BaseException:
        if not existed:  # a failed command leaves no half-written submission folder behind
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    return manifest


def _test_outputs(comp, models: list[OnnxModel], data_dir: Path, *, tta: str, cache, skip_bad_images: bool,
                  batch_size: int, workers: int, progress: bool, weights, blend_method: str):
    """(test table, blended raw outputs): every image decoded once for every model and view."""
    crop = _fundus_crop(models)
    test = use_cache(comp.read_test(data_dir, skip_bad_images), runs.cache_root(cache), comp.name,
                     max(m.size for m in models), crop=crop)
    raws = predict_models(models, list(test["paths"]), tta=tta, batch_size=batch_size, workers=workers,
                          progress=progress, all_channels=comp.channels, crop=[crop and not c for c in test["cached"]],
                          meta_rows=test)
    broken = [m.path for m, r in zip(models, raws, strict=True) if not np.isfinite(r).all()]
    if broken:
        raise KtError(f"{broken[0]} gives non-finite outputs (NaN or inf) on the test images; the model is "
                      "broken: retrain it (a lower --lr) and export again")
    return test, blend(raws, weights, method=blend_method, task=comp.task)



def _meta_missing(models: list[OnnxModel], test) -> dict[str, int] | None:
    """Test rows with a missing (or unseen) value per metadata column, for models that take metadata."""
    spec = next((m.meta_spec for m in models if m.meta_spec), None)
    return tabular.encode(spec, test)[1] if spec else None


def _meta_clipped(models: list[OnnxModel], test) -> dict[str, int] | None:
    """Test rows per metadata column whose value lay outside the training range and was clipped."""
    spec = next((m.meta_spec for m in models if m.meta_spec), None)
    return tabular.out_of_range(spec, test) if spec else None


def _fill_skipped(comp, data_dir: Path, ids: list[str], raw, problems: list[str]):
    """Answer the test ids whose image was skipped with the mean raw output of the others (the test
    set's prior), so the submission stays complete. Returns (ids, raw, skipped ids with reasons)."""
    predicted = set(ids)
    skipped = [i for i in comp.test_ids(data_dir) if i not in predicted]
    if not skipped:
        return ids, raw, []
    if not ids:
        raise KtError("every test image was skipped as bad; check the data folder")
    prior = np.repeat(raw.mean(axis=0, keepdims=True), len(skipped), axis=0)
    return ids + skipped, np.concatenate([raw, prior]), {"ids": skipped[:100], "count": len(skipped),
                                                          "problems": problems}
