"""Export a run's best checkpoint to a self-describing ONNX file and check it against torch.

The file's metadata (key `kt`, JSON) carries everything prediction needs: competition, task,
arch, input size and channels, mean/std (already applied inside the graph), class names,
fitted thresholds/cut points, CV score and the full recipe. An ONNX file alone is enough.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import __version__, competitions, protocol, runs
from .. import config as config_mod
from ..data import tabular
from ..errors import KtError
from ..files import atomic_path
from . import checkpoints
from .models import build_model, head_of

FORMAT_VERSION = 1
PARITY_TOL = 1e-4  # fp32 ONNX vs torch, max abs difference on raw outputs


def build_metadata(run_dir: Path, cfg: config_mod.RunConfig) -> dict[str, Any]:
    comp = competitions.for_config(cfg)
    channels = [comp.channels[i] for i in comp.select_channels(protocol.channels(cfg, comp))]
    run_metrics = runs.read_metrics(run_dir) or {}
    if "fitted" not in run_metrics or not isinstance(run_metrics["fitted"], dict):
        raise KtError(
            f"{run_dir / runs.METRICS} lacks the fitted cut points or thresholds; the run's metrics "
            f"are damaged: resume or train the run again (kt train --resume {run_dir})"
        )
    # an ONNX file kt predict would refuse is not written
    comp.task.check_fitted(run_metrics["fitted"])
    run_info = runs.read_run_info(run_dir) if (run_dir / runs.RUN_INFO).is_file() else {}
    return {
        "format_version": FORMAT_VERSION,
        "kt_version": __version__,
        "created": runs.timestamp(),
        "competition": comp.name,
        "task": comp.task.kind,
        "num_classes": comp.task.num_classes,
        "metric": comp.task.metric,
        "arch": cfg.arch,
        "size": cfg.size,
        "channels": channels,
        "input": {
            "name": "image",
            "dtype": "uint8",
            "layout": "NCHW",
            "colour": "+".join(channels),
            "range": "0-255, normalised inside the graph",
        },
        "class_names": comp.class_names,
        "fitted": run_metrics.get("fitted", {}),
        "score": run_metrics.get("score"),
        "best_epoch": run_metrics.get("best_epoch"),
        "tta": cfg.tta,
        "preprocess": protocol.for_run(cfg, comp).describe(),
        "recipe": cfg.to_dict(),
        "run": run_dir.name,
        "git_sha": run_info.get("git_sha"),
        # a YAML-described competition travels inside the model: the ONNX file alone still predicts
        "competition_spec": comp.spec,
        # image + metadata: the graph's second input `meta` takes these columns encoded this way (data/tabular.py)
        "meta": tabular.load(run_dir),
    }


def load_run_model(run_dir: Path) -> tuple[torch.nn.Module, config_mod.RunConfig]:
    """The run's network with its best weights, in eval mode on the CPU."""
    run_dir = Path(run_dir)
    cfg = runs.load_config(run_dir)
    if not (run_dir / runs.BEST).is_file():
        raise KtError(
            f"{run_dir / runs.BEST} not found; the run has not finished an epoch (kt train --resume {run_dir})"
        )
    comp = competitions.for_config(cfg)
    in_chans = len(comp.select_channels(protocol.channels(cfg, comp)))
    outputs = comp.task.trained_with(cfg.loss).num_outputs
    proto = protocol.for_run(cfg, comp)
    spec = tabular.load(run_dir)
    model = build_model(
        cfg.arch,
        outputs,
        head=head_of(cfg, comp.task, spec["width"] if spec else 0),
        in_chans=in_chans,
        size=cfg.size,
        proto=proto,
    )
    try:
        model.load_state_dict(checkpoints.load(run_dir / runs.BEST))
    except RuntimeError as e:
        raise KtError(
            f"{run_dir / runs.BEST} does not fit the run's network ({str(e).splitlines()[0][:80]}); "
            "it was damaged or copied from another run"
        ) from None
    return model.eval(), cfg


def _export_graph(
    model: torch.nn.Module, example: tuple[torch.Tensor, ...], path: Path, opset: int
) -> None:
    names = ["image", "meta"][: len(example)]
    try:
        batch = torch.export.Dim("batch", min=1, max=4096)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                example,
                str(path),
                input_names=names,
                output_names=["raw"],
                dynamic_shapes=tuple({0: batch} for _ in example),
                opset_version=opset,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
    except Exception as e:  # noqa: BLE001 - some timm models do not trace with torch.export yet
        warnings.warn(
            f"dynamo ONNX export failed ({type(e).__name__}); using the TorchScript exporter",
            stacklevel=2,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                example,
                str(path),
                input_names=names,
                output_names=["raw"],
                dynamic_axes={**{n: {0: "batch"} for n in names}, "raw": {0: "batch"}},
                opset_version=opset,
                dynamo=False,
            )


def parity(
    model: torch.nn.Module,
    onnx_path: Path,
    in_chans: int,
    size: int,
    *,
    batch: int = 3,
    seed: int = 0,
    meta_dim: int = 0,
) -> float:
    """Max abs difference between torch and onnxruntime (CPU) on random uint8 images (and metadata)."""
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (batch, in_chans, size, size), dtype=np.uint8)
    feeds = {"image": x}
    if meta_dim:
        feeds["meta"] = rng.normal(size=(batch, meta_dim)).astype(np.float32)
    with torch.no_grad():
        expected = model(*(torch.from_numpy(v) for v in feeds.values())).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, feeds)[0]
    return float(np.abs(expected - got).max())


def export(
    run_dir: str | Path, out: str | Path | None = None, *, opset: int = 18, check: bool = True
) -> dict[str, Any]:
    """Write `model.onnx` (or `out`) with metadata; fail if ONNX and torch disagree above 1e-4."""
    import onnx

    run_dir = Path(run_dir)
    model, cfg = load_run_model(run_dir)
    runs.require_finished(run_dir)  # an unfinished run's fitted cut points are not yet written
    comp = competitions.for_config(cfg)
    in_chans = len(comp.select_channels(protocol.channels(cfg, comp)))
    out = Path(out) if out else run_dir / runs.MODEL
    meta = build_metadata(run_dir, cfg)
    meta_dim = model.meta_dim
    example = (
        torch.randint(0, 256, (2, in_chans, cfg.size, cfg.size), dtype=torch.uint8),
        *((torch.zeros(2, meta_dim),) if meta_dim else ()),
    )
    with atomic_path(out) as tmp:
        _export_graph(model, example, tmp, opset)
        proto = onnx.load(str(tmp))
        del proto.metadata_props[:]
        proto.metadata_props.add(key="kt", value=json.dumps(meta))
        for key in ("competition", "task", "arch", "size"):
            proto.metadata_props.add(key=f"kt.{key}", value=str(meta[key]))
        onnx.save(proto, str(tmp))
        diff = parity(model, tmp, in_chans, cfg.size, meta_dim=meta_dim) if check else None
        if diff is not None and not diff <= PARITY_TOL:  # NaN compares false: it must fail too
            raise KtError(
                f"ONNX output differs from torch by {diff:.2e} (> {PARITY_TOL:g}); the file was not written"
            )
    return {"path": str(out), "max_abs_diff": diff, "metadata": meta}


def export_runs(
    run_dir: str | Path, out: str | Path | None = None, *, opset: int = 18, progress: bool = False
) -> Iterator[dict[str, Any]]:
    """Export a run, or every member of a --folds run group into its own folder, one at a time (each
    result as soon as its file is written; with `progress`, a bar over a group's members)."""
    dirs = runs.member_dirs(Path(run_dir))
    if out and len(dirs) > 1:
        raise KtError(
            "-o/--out names one file; a run group exports model.onnx into each member folder"
        )
    bar = tqdm(
        dirs, desc="export", unit="model", disable=None if progress and len(dirs) > 1 else True
    )
    for d in bar:
        yield export(d, out, opset=opset)
