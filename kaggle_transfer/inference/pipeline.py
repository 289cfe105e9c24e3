"""`kt predict`: a Predictor's answers for the test set → validated submission folder. Torch-free."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import competitions, runs
from ..competitions import submission
from ..data import tabular
from ..data.cache import use_cache
from ..errors import KtError
from ..files import write_json
from .predictor import Predictor
from .session import OnnxModel, describe


def predict_submission(
    predictor: Predictor,
    data_dir: str | Path | None,
    *,
    out_root: str | Path | None = None,
    label: str | None = None,
    overwrite: bool = False,
    cache: str | Path | None = None,
    skip_bad_images: bool = False,
) -> dict[str, Any]:
    """Write submissions/<competition>/<stamp>_<label>/{submission.csv, manifest.json}; returns the
    manifest. `skip_bad_images`: see _fill_skipped."""
    comp, models = predictor.comp, predictor.models
    data_dir = competitions.find_data_dir(comp, data_dir)
    label = (
        label
        or predictor.label
        or f"{len(models)}x_" + "+".join(sorted({f"{m.meta['arch']}@{m.size}" for m in models}))
    )
    root, folder = runs.submissions_root(out_root), f"{runs.stamp()}_{runs.slug(label)}"
    existed = (root / comp.name / folder).exists()
    # reserved before the work
    out_dir = runs.new_output_dir(root, comp.name, folder, overwrite=overwrite)
    try:
        started = time.time()
        test = use_cache(
            comp.read_test(data_dir, skip_bad_images),
            runs.cache_root(cache),
            comp.name,
            predictor.max_size,
            crop=predictor.crop,
        )
        if test.empty:  # nothing to predict: no test rows, or every image skipped before decoding
            raise KtError(
                f"every test image in {data_dir} was skipped as bad; check the data folder"
                if test.attrs.get("skipped_images")
                else f"{data_dir} lists no test images; check --data-dir"
            )
        failures: list[tuple[int, str]] | None = [] if skip_bad_images else None
        raw = predictor.outputs(test, cached=list(test["cached"]), failures=failures)
        # images whose header read but whose pixels did not (a truncated file) are skipped alike
        keep = np.ones(len(test), bool)
        keep[[row for row, _ in failures or []]] = False
        problems = test.attrs.get("bad_images", []) + [why for _, why in failures or []]
        ids, raw, bad = _fill_skipped(
            comp,
            data_dir,
            list(test["id"][keep]),
            raw[keep],
            problems[:20],
            failed=list(test["id"][~keep]),
        )
        csv = submission.write(comp, ids, predictor.answers(raw), out_dir / "submission.csv")
        check = submission.validate(comp, csv, data_dir)
        seconds = time.time() - started
        manifest = {
            "competition": comp.name,
            "created": runs.timestamp(),
            "label": label,
            "models": [describe(m) for m in models],
            "blend": predictor.blend,
            "tta": predictor.tta,
            "fitted": predictor.fitted,
            "fitted_from": predictor.fitted_from,
            "oof_score": predictor.oof_score,
            "ensemble": predictor.ensemble,
            "weights": predictor.weights,
            "rows": check["rows"],
            "cached_rows": int(test["cached"].sum()),
            "seconds": round(seconds, 2),
            "images_per_s": round(len(test) / max(seconds, 1e-9), 1),
            "git_sha": runs.git_sha(),
            "data_dir": str(data_dir),
            "submission": str(csv),
            "bad_images": bad,
            "meta_missing": _meta_missing(models, test),
            "meta_clipped": _meta_clipped(models, test),
        }
        write_json(out_dir / "manifest.json", manifest)
    except BaseException:
        if not existed:  # a failed command leaves no half-written submission folder behind
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    return manifest


def _meta_missing(models: list[OnnxModel], test) -> dict[str, int] | None:
    """Test rows with a missing (or unseen) value per metadata column, for models that take metadata."""
    spec = next((m.meta_spec for m in models if m.meta_spec), None)
    return tabular.encode(spec, test)[1] if spec else None


def _meta_clipped(models: list[OnnxModel], test) -> dict[str, int] | None:
    """Test rows per metadata column whose value lay outside the training range and was clipped."""
    spec = next((m.meta_spec for m in models if m.meta_spec), None)
    return tabular.out_of_range(spec, test) if spec else None


def _fill_skipped(
    comp, data_dir: Path, ids: list[str], raw, problems: list[str], failed: list[str] = ()
):
    """Answer the test ids whose image was skipped (or `failed` to decode) with the mean raw output of
    the others (the test set's prior), so the submission stays complete. Returns (ids, raw, skipped
    ids with reasons)."""
    predicted = set(ids)
    skipped = [i for i in comp.test_ids(data_dir) if i not in predicted]
    skipped += [i for i in failed if i not in set(skipped)]
    if not skipped:
        return ids, raw, []
    if not ids:
        raise KtError(f"every test image in {data_dir} was skipped as bad; check the data folder")
    prior = np.repeat(raw.mean(axis=0, keepdims=True), len(skipped), axis=0)
    return (
        ids + skipped,
        np.concatenate([raw, prior]),
        {"ids": skipped[:100], "count": len(skipped), "problems": problems},
    )
