"""Run an ensemble of ONNX models over a table of images, blend, decode. Torch-free.

Each image is decoded once per batch and resized once per distinct input size and resize mode; every model and
TTA view reuses it. Outputs are streamed batch by batch, so memory stays flat over the test set.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..config import BLENDS  # the one list the CLI offers too
from ..data import images
from ..errors import KtError
from ..tasks import Task
from . import tta as tta_mod
from .session import OnnxModel, usable_cpus

# batches decoding ahead of the one the models run: two keep every decoding thread busy at a batch's end
AHEAD = 2


@dataclass(frozen=True)
class RunOptions:
    """How the models run: none of these changes an answer beyond float rounding."""

    tta: str | None = None  # test-time views; None: the views the models recorded at training
    provider: str = "auto"  # auto | cuda | tensorrt | cpu
    precision: str = "fp32"  # fp16: models converted in memory at load time
    io_binding: str = "auto"  # one host-to-device copy per batch view (on GPUs)
    batch_size: int = 32
    threads: int | None = None  # image-decoding threads; None: one per CPU this process may use
    progress: bool = True


def _inputs(img: np.ndarray, keys) -> dict[tuple, np.ndarray]:
    """One decoded image as every distinct model input takes it: resized once per (size, resize
    mode), its channels picked, CHW. Runs on a decoding thread (OpenCV's resize releases the GIL)."""
    out: dict[tuple, np.ndarray] = {}
    resized: dict[tuple, np.ndarray] = {}
    for key in keys:
        size, channels, resize = key
        if (size, resize) not in resized:
            resized[size, resize] = images.to_chw(images.fit_to(img, size, resize))
        x = resized[size, resize]
        out[key] = x if len(channels) == x.shape[0] else x[list(channels)]
    return out


def _batch(
    decoded: list[np.ndarray], size: int, channels: tuple[int, ...], resize: str = "squash"
) -> np.ndarray:
    """Decoded images as one model input batch (what predict_models feeds; int8 calibration too)."""
    key = (size, channels, resize)
    return np.stack([_inputs(img, [key])[key] for img in decoded])


def _channel_indices(model: OnnxModel, all_channels: Sequence[str] | None) -> tuple[int, ...]:
    names = model.meta.get("channels") or []
    if not all_channels:
        return tuple(range(len(names)))
    missing = [n for n in names if n not in all_channels]
    if missing:
        raise KtError(
            f"{model.path} wants channel(s) {', '.join(missing)}; the data has {', '.join(all_channels)}"
        )
    return tuple(all_channels.index(n) for n in names)


def predict_models(
    models: Sequence[OnnxModel],
    paths: Sequence[Sequence[str]],
    options: RunOptions | None = None,
    *,
    all_channels: Sequence[str] | None = None,
    crop: Sequence[bool] | None = None,
    pad_last: bool | None = None,
    meta_rows=None,
    failures: list[tuple[int, str]] | None = None,
) -> np.ndarray:
    """Raw outputs of every model, shape (n_models, n_images, n_outputs); TTA views averaged.

    `all_channels` names the channels the decoded images hold (the competition's); each model takes
    the ones its metadata lists, so an RGB and an RGBY model of HPA share one decode. `crop` marks the
    rows whose black fundus border is trimmed after decoding (models trained with fundus_crop).
    `pad_last` (default: when a model runs on a GPU) pads the last batch to `batch_size`, so the run
    has one input shape: no cuDNN re-tuning or TensorRT engine rebuild for the tail. `meta_rows`: the
    images' table (the test CSV's columns), encoded for each model that takes metadata.
    `failures`: where given, an image that cannot be decoded is appended to it as (row, reason) and its
    outputs are NaN (the caller answers it otherwise); without it, the first one stops the run."""
    options = options or RunOptions()
    tta, batch_size, workers, progress = (
        options.tta or "none",
        options.batch_size,
        options.threads or usable_cpus(),
        options.progress,
    )
    if pad_last is None:
        pad_last = any(m.device == "cuda" for m in models)
    crop = list(crop) if crop is not None else [False] * len(paths)
    size_hint = max(m.size for m in models) if models else None
    keys = [(m.size, _channel_indices(m, all_channels), m.resize) for m in models]
    views = _Views(
        models,
        keys,
        tta_mod.views(tta),
        features=[metadata_features(m, meta_rows, len(paths)) for m in models],
        pad_to=batch_size if pad_last else 0,
    )
    distinct = list(dict.fromkeys(keys))

    def prepare(i: int) -> dict[tuple, np.ndarray] | str:
        try:
            img = images.read_image(paths[i], reduce_to=size_hint)
        except images.BadImage as e:
            if failures is None:
                raise
            return e.problem  # the reason; the row gets a blank input and NaN outputs
        return _inputs(images.fundus_crop(img) if crop[i] else img, distinct)

    def blank(key: tuple) -> np.ndarray:
        size, channels, _ = key
        return np.zeros((len(channels) or 3, size, size), np.uint8)

    starts = list(range(0, len(paths), batch_size))
    # decoding threads (imagecodecs, OpenCV and PIL's JPEG draft release the GIL) decode and resize the
    # next batches while onnxruntime runs this one; AHEAD batches in flight keep every thread busy
    # across a batch boundary, and only resized inputs are held, never the decoded originals
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending = deque(
            [pool.submit(prepare, i) for i in range(s, min(s + batch_size, len(paths)))]
            for s in starts[:AHEAD]
        )
        for i in tqdm(
            range(len(starts)), desc="predict", unit="batch", disable=None if progress else True
        ):
            ready = [f.result() for f in pending.popleft()]
            for k, r in enumerate(ready):
                if isinstance(r, str):
                    failures.append((starts[i] + k, r))
                    ready[k] = {key: blank(key) for key in distinct}
            if i + AHEAD < len(starts):
                s = starts[i + AHEAD]
                pending.append(
                    [pool.submit(prepare, k) for k in range(s, min(s + batch_size, len(paths)))]
                )
            for key in distinct:
                views.run(key, np.stack([r[key] for r in ready]), start=starts[i])
    out = np.stack([np.concatenate(o) for o in views.outputs]).astype(np.float64)
    out[:, [row for row, _ in failures or []]] = np.nan
    return out


def metadata_features(model: OnnxModel, rows, n: int) -> np.ndarray | None:
    """The model's encoded metadata for every row (None for an image-only model)."""
    if model.meta_spec is None:
        return None
    if rows is None or len(rows) != n:
        raise KtError(
            f"{model.path} takes metadata beside the image; predict through kt predict/evaluate, which "
            "read the test CSV's columns"
        )
    from ..data import tabular

    return tabular.encode(model.meta_spec, rows)[0]


@dataclass
class _Views:
    """Runs each decoded batch through every model and test-time view, accumulating per model."""

    models: Sequence[OnnxModel]
    keys: list  # per model: (size, channel indices, resize), the input it takes
    views: list  # the TTA views, as functions of a batch
    features: list  # per model: its encoded metadata rows, or None
    pad_to: int = 0  # pad the last batch to this many rows (one input shape on a GPU)
    outputs: list = None  # per model: the view-averaged outputs of each batch

    def __post_init__(self):
        self.outputs = [[] for _ in self.models]

    def run(self, key: tuple, x: np.ndarray, *, start: int) -> None:
        """Every model that takes input `key` sees every view of `x`; each view crosses to a device
        once (IO binding) however many models share it."""
        members = [j for j, k in enumerate(self.keys) if k == key]
        n = len(x)
        # blank rows; every op is per image at inference, so the real rows are unchanged
        pad = max(self.pad_to - n, 0)
        if pad:
            x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
        rows = {
            j: np.pad(self.features[j][start : start + n], ((0, pad), (0, 0)))
            for j in members
            if self.features[j] is not None
        }
        sums: dict[int, np.ndarray] = {}
        for view in self.views:
            xv = view(x)
            placed: dict[tuple, object] = {}  # (device, bound) -> this view as that model takes it
            for j in members:
                model = self.models[j]
                where = (model.device, model.io_binding)
                if where not in placed:
                    placed[where] = model.upload(xv)
                args = (placed[where], rows[j]) if j in rows else (placed[where],)
                y = model.run(*args).astype(np.float64)
                sums[j] = sums[j] + y if j in sums else y
        for j in members:
            self.outputs[j].append(sums[j][:n] / len(self.views))


def blend(
    raws: np.ndarray,
    weights: Sequence[float] | None = None,
    method: str = "mean",
    task: Task | None = None,
) -> np.ndarray:
    """Weighted mean of the models' raw outputs (equal weights by default).

    `rank` (binary tasks): each model's scores become ranks scaled to (0, 1), their weighted mean is
    returned as a logit, so decoding yields the blended rank as the probability. AUC only sees the
    order, so models with differently calibrated outputs blend fairly."""
    w = np.ones(len(raws)) if weights is None else np.asarray(weights, dtype=float)
    if len(w) != len(raws) or w.sum() <= 0 or (w < 0).any():
        raise KtError(
            f"need {len(raws)} non-negative weights with a positive sum, got {[float(v) for v in w]}"
        )
    if method == "mean":
        return np.tensordot(w / w.sum(), raws, axes=1)
    if method != "rank":
        raise KtError(f"--blend {method!r} is not valid; choose one of: {', '.join(BLENDS)}")
    if task is not None and task.kind != "binary":
        raise KtError(
            f"--blend rank suits rank-based metrics (binary, ROC AUC); {task.kind} tasks use --blend mean"
        )
    from scipy.stats import rankdata

    ranks = rankdata(raws, axis=1) / (raws.shape[1] + 1)  # per model and output column, in (0, 1)
    mean = np.tensordot(w / w.sum(), ranks, axes=1)
    return np.log(mean / (1 - mean))


def combine_fitted(models: Sequence[OnnxModel], task: Task) -> dict[str, Any]:
    """Decoding parameters for the blend: the mean of the members' fitted cut points / thresholds."""
    fitted = [m.meta.get("fitted") or {} for m in models]
    out: dict[str, Any] = {}
    for key in ("cutpoints", "thresholds"):
        values = [f[key] for f in fitted if f.get(key)]
        if values:
            out[key] = np.mean(np.asarray(values, dtype=float), axis=0).tolist()
    return out
