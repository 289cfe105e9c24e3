"""One predictor for every command that answers images with models: `kt predict`, `kt pseudo`,
`kt evaluate`, the Kaggle notebook and `--refit` all build a `Predictor` here and call it, so they
agree on the models, the blend weights, the fitted thresholds, the test-time views and the crop.
Torch-free.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import competitions, runs
from ..errors import KtError
from ..tasks import Task
from .ensemble import load_blend
from .predict import RunOptions, blend, combine_fitted, predict_models
from .session import OnnxModel, int8_copy, load_ensemble
from .tta import recorded_tta


@dataclass(frozen=True)
class Choice:
    """Which answer: the models, and how their outputs become one (defaults: every model equally,
    thresholds the mean of the members')."""

    models: Sequence[str | Path] = ()
    # a kt ensemble spec: its models, weights, blend and thresholds
    ensemble: str | Path | None = None
    weights: Sequence[float] | None = None
    blend: str = "mean"  # mean | rank
    fitted: dict[str, Any] | None = None  # thresholds handed in (a notebook bundle carries them)
    refit: bool = False  # refit thresholds on the members' blended OOF
    int8: bool = False  # each run's model.int8.onnx (kt export --int8) in place of model.onnx


@dataclass
class Predictor:
    """A competition's models, ready to answer: `outputs(table)` gives the blended raw outputs,
    `answers(raw)` the decoded answers."""

    comp: Any
    models: list[OnnxModel]
    tta: str
    crop: bool  # models trained on fundus-cropped images
    fitted: dict[str, Any]
    fitted_from: str  # ensemble spec | blended OOF | mean of members
    weights: list[float] | None = None
    blend: str = "mean"
    oof_score: float | None = None
    ensemble: str | None = None
    label: str | None = None
    options: RunOptions = field(default_factory=RunOptions)

    def outputs(
        self,
        table,
        *,
        cached: Sequence[bool] | None = None,
        failures: list[tuple[int, str]] | None = None,
    ) -> np.ndarray:
        """Blended raw outputs for a table's images (the standard table; its other columns feed
        models that take metadata). `cached`: rows read from the resize cache, already cropped.
        `failures`: collects the rows whose image could not be decoded (their outputs are NaN)."""
        crop = [self.crop and not c for c in cached] if cached else [self.crop] * len(table)
        options = dataclasses.replace(self.options, tta=self.tta)
        raws = predict_models(
            self.models,
            list(table["paths"]),
            options,
            all_channels=self.comp.channels,
            crop=crop,
            meta_rows=table,
            failures=failures,
        )
        decoded = np.ones(len(table), bool)
        decoded[[row for row, _ in failures or []]] = False
        broken = [
            m.path
            for m, r in zip(self.models, raws, strict=True)
            if not np.isfinite(r[decoded]).all()
        ]
        if broken:
            raise KtError(
                f"{broken[0]} gives non-finite outputs (NaN or inf) on these images; the model is "
                "broken: retrain it (a lower --lr) and export again"
            )
        return blend(raws, self.weights, method=self.blend, task=self.comp.task)

    def answers(self, raw: np.ndarray) -> np.ndarray:
        return self.comp.task.decode(raw, self.fitted)

    @property
    def max_size(self) -> int:
        return max(m.size for m in self.models)


def load_predictor(
    competition: str, choice: Choice, options: RunOptions | None = None
) -> Predictor:
    """The models of `choice` loaded for `competition` ("custom": the competition the models carry),
    checked to agree with it and with each other."""
    options = options or RunOptions()
    spec = load_blend(choice.ensemble) if choice.ensemble else None
    paths = spec.paths if spec else list(choice.models)
    paths = [int8_copy(p) for p in paths] if choice.int8 else paths
    if not paths:
        raise KtError(
            "name the models (model.onnx files, run folders or groups) or pass --ensemble SPEC.json"
        )
    comp, models = _load(competition, paths, options)
    if spec:
        spec.require(comp.name, choice.ensemble)
        weights, method, fitted, source = spec.weights, spec.method, spec.fitted, "ensemble spec"
        oof_score = spec.oof_score
    else:
        weights, method, fitted, oof_score = choice.weights, choice.blend, choice.fitted, None
        source = "ensemble spec"  # thresholds handed in were fitted on a blended OOF already
        if fitted is None and choice.refit:
            fitted, oof_score = refit_from_oof(models, comp.task, weights)
            source = "blended OOF"
        elif fitted is None:
            fitted, source = combine_fitted(models, comp.task), "mean of members"
    return Predictor(
        comp=comp,
        models=models,
        tta=options.tta or recorded_tta([m.meta for m in models]),
        crop=_fundus_crop(models),
        fitted=fitted,
        fitted_from=source,
        weights=list(weights) if weights is not None else None,
        blend=method,
        oof_score=oof_score,
        # absolute: the manifest is read back from other folders (kt submit)
        ensemble=str(Path(choice.ensemble).resolve()) if choice.ensemble else None,
        label=spec.label if spec else None,
        options=options,
    )


def _load(
    competition: str, paths: Sequence[str | Path], options: RunOptions
) -> tuple[Any, list[OnnxModel]]:
    """The competition and its models. `custom`: the competition comes from the models' metadata (a
    YAML-described contest travels inside; loading registers it)."""
    name = (
        None
        if competition == "custom"
        else (
            competitions.get(competition).name if competitions.is_yaml(competition) else competition
        )
    )
    models = load_ensemble(
        list(paths),
        name,
        provider=options.provider,
        precision=options.precision,
        io_binding=options.io_binding,
    )
    comp = competitions.for_model(models[0].meta)
    # the metadata must describe the competition it claims, or decoding would be wrong
    for m in models:
        for key, want in (("task", comp.task.kind), ("num_classes", comp.task.num_classes)):
            if m.meta[key] != want:
                raise KtError(
                    f"{m.path}: metadata {key!r} is {m.meta[key]!r} but {comp.name} has {want!r}; "
                    "the file is damaged or not from kt export (export it again)"
                )
    return comp, models


def _fundus_crop(models: Sequence[OnnxModel]) -> bool:
    crops = {bool((m.meta.get("recipe") or {}).get("fundus_crop")) for m in models}
    if len(crops) > 1:
        raise KtError(
            "the models disagree on fundus_crop; ensemble models trained with the same preprocessing"
        )
    return crops.pop()


def refit_from_oof(
    models: Sequence[OnnxModel], task: Task, weights: Sequence[float] | None = None
) -> tuple[dict[str, Any], float]:
    """Cut points / thresholds refitted on the members' blended out-of-fold outputs, read by the same
    loader as kt ensemble: a run's own OOF, or a whole group's pooled OOF for its fold models."""
    weights = list(weights) if weights is not None else [1.0] * len(models)
    owners: dict[Path, float] = {}
    for m, w in zip(models, weights, strict=True):
        owner = runs.oof_owner(Path(m.path))
        if runs.load_oof(owner) is None:
            raise KtError(
                f"--refit needs {owner / runs.OOF} (the run folder's OOF) next to {m.path}"
            )
        owners[owner] = owners.get(owner, 0.0) + w
    given = {Path(m.path).resolve() for m in models}
    for owner in owners:
        if (owner / runs.GROUP).is_file():
            missing = [f for f in runs.onnx_files(owner) if f.resolve() not in given]
            if missing:
                raise KtError(
                    f"--refit: {owner} is a run group and {missing[0]} is not among the models; its "
                    f"pooled OOF scores all its folds: pass the whole group ({owner})"
                )
    _, raws, y, _ = runs.load_oofs(list(owners))
    raw = blend(raws, list(owners.values()))
    fitted = task.fit(raw, y)
    return fitted, task.score(y, raw, fitted)
