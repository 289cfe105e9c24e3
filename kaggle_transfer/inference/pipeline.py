"""`kt predict`: ONNX ensemble → blended raw outputs → decoded answers → validated submission folder.
Torch-free."""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import competitions, runs, submission
from ..data.cache import use_cache
from ..errors import KtError
from ..fsutil import write_json
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
    comp = competitions.for_config(models[0].meta.get("recipe") or {"competition": models[0].meta["competition"]})
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

    `tta` None: the views the models recorded at training (RunConfig.tta, in their metadata).
    With `ensemble` (a spec from kt ensemble) the models, weights, blend and fitted thresholds are the
    spec's: test predictions use exactly the blend that was scored on OOF. `skip_bad_images`: a test
    image that is missing, corrupt or over the pixel budget gets the test set's mean output (its
    prior) instead of stopping the run; the manifest lists them. Every id is still answered."""
    spec, given = None, fitted is not None  # thresholds handed in (bundle) rather than fitted here
    if ensemble:
        from ..ensemble import load_blend

        spec = load_blend(ensemble)
        model_paths, weights, blend_method, fitted = spec.paths, spec.weights, spec.method, spec.fitted
        label = label or spec.label
    comp, models = _load(competition, model_paths, provider, precision, io_binding=io_binding)
    data_dir = competitions.find_data_dir(comp, data_dir)
    label = label or f"{len(models)}x_" + "+".join(sorted({f"{m.meta['arch']}@{m.size}" for m in models}))
    tta = tta or recorded_tta([m.meta for m in models])
    root = runs.submissions_root(out_root)
    folder = f"{runs.stamp()}_{runs.slug(label)}"
    existed = (root / comp.name / folder).exists()
    out_dir = runs.new_output_dir(root, comp.name, folder, overwrite=overwrite)  # reserved before the work
    try:
        crop = _fundus_crop(models)
        test = use_cache(comp.read_test(data_dir, skip_bad_images), runs.cache_root(cache), comp.name,
                         max(m.size for m in models), crop=crop)
        started = time.time()
        raws = predict_models(models, list(test["paths"]), tta=tta, batch_size=batch_size, workers=workers,
                              progress=progress, all_channels=comp.channels,
                              crop=[crop and not c for c in test["cached"]])
        broken = [m.path for m, r in zip(models, raws, strict=True) if not np.isfinite(r).all()]
        if broken:
            raise KtError(f"{broken[0]} gives non-finite outputs (NaN or inf) on the test images; the model is "
                          "broken: retrain it (a lower --lr) and export again")
        raw = blend(raws, weights, method=blend_method, task=comp.task)
        oof_score = spec.oof_score if spec else None
        if spec or given:
            pass  # thresholds were refitted on the blended OOF when the ensemble was built
        elif refit:
            fitted, oof_score = refit_from_oof(models, comp.task)
        else:
            fitted = combine_fitted(models, comp.task)
        ids, raw, bad = _fill_skipped(comp, data_dir, list(test["id"]), raw, test.attrs.get("bad_images", []))
        answers = comp.task.decode(raw, fitted)
        csv = submission.write(comp, ids, answers, out_dir / "submission.csv")
        check = submission.validate(comp, csv, data_dir)
        manifest = {
            "competition": comp.name, "created": runs.timestamp(), "label": label,
            "models": [describe(m) for m in models], "blend": blend_method, "tta": tta, "fitted": fitted,
            "fitted_from": "ensemble spec" if spec or given else "blended OOF" if refit else "mean of members",
            "oof_score": oof_score, "ensemble": str(ensemble) if ensemble else None,
            "weights": weights,
            "rows": check["rows"], "cached_rows": int(test["cached"].sum()), "seconds": round(time.time() - started, 2),
            "images_per_s": round(len(test) / max(time.time() - started, 1e-9), 1), "git_sha": runs.git_sha(),
            "data_dir": str(data_dir), "submission": str(csv), "bad_images": bad,
        }
        write_json(out_dir / "manifest.json", manifest)
    except BaseException:
        if not existed:  # a failed command leaves no half-written submission folder behind
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    return manifest



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
