"""`kt export --int8`: an int8 copy of a run's model, calibrated and checked on the run's own data.

onnxruntime's static quantisation (onnxruntime.quantization.quantize_static) in the QDQ format, weights
int8 per output channel, activations uint8, calibrated (MinMax) on training images of the run decoded
exactly as prediction decodes them (the Predictor's decode, resize, crop and channels), after
onnxruntime's pre-processing pass (shape inference and graph optimisation). The int8 file is then
scored against the fp32 one on the run's validation rows: the largest output difference and both
scores (with the run's fitted cut points or thresholds) go into its metadata (`int8`), and a copy whose
score drops more than `tolerance` is refused unless forced. Torch-free.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .. import competitions, runs
from ..data import images
from ..errors import KtError
from ..files import atomic_path, sha256
from .predict import RunOptions, _batch, _channel_indices
from .predictor import Choice, load_predictor

TOLERANCE = 0.005  # the largest score drop on validation accepted without --force


def _rows(run_dir: Path, calibration: int, validation: int, data_dir: Path | None = None):
    """(competition, up to `calibration` training rows, up to `validation` validation rows in OOF
    order, the OOF), from one read of the training table."""
    cfg = runs.load_config(run_dir)
    comp = competitions.for_config(cfg)
    data = runs.recorded_data_dir(run_dir, data_dir)
    table = comp.read_train(data)
    oof = runs.load_oof(run_dir)
    if oof is None:
        raise KtError(f"{run_dir} has no OOF to check an int8 copy against; train it to the end")
    ids = [str(i) for i in oof["ids"]]
    keys = table["id"].astype(str)
    present = set(keys)
    val = table.set_index(keys).loc[[i for i in ids if i in present]].reset_index(drop=True)
    if val.empty:
        raise KtError(
            f"{run_dir}: none of its {len(ids)} validation ids (oof.npz) is in the training table of "
            f"{data}, and int8 is checked on them; pass --data-dir with the files it was trained on"
        )
    calib = table[~keys.isin(set(ids))].iloc[:calibration].reset_index(drop=True)
    return comp, calib, val.iloc[:validation], oof


class _Reader:
    """Calibration batches for onnxruntime: training images as prediction decodes them."""

    def __init__(self, model, comp, table, crop: bool, batch: int = 8):
        self.batches = []
        channels = _channel_indices(model, comp.channels)
        for start in range(0, len(table), batch):
            decoded = []
            for paths in table["paths"].iloc[start : start + batch]:
                img = images.read_image(paths, reduce_to=model.size)
                decoded.append(images.fundus_crop(img) if crop else img)
            name = model.session.get_inputs()[0].name
            self.batches.append({name: _batch(decoded, model.size, channels, model.resize)})
        self.it = iter(self.batches)

    def get_next(self):
        return next(self.it, None)


def quantize(
    run_dir: str | Path,
    *,
    calibration: int = 64,
    validation: int = 512,
    tolerance: float = TOLERANCE,
    force: bool = False,
    data_dir: str | Path | None = None,
    out: Path | None = None,
) -> dict[str, Any]:
    """Write `model.int8.onnx` beside the run's `model.onnx` (or to `out`); returns its record."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    run_dir = Path(run_dir)
    source = run_dir / runs.MODEL
    if not source.is_file():
        raise KtError(f"{run_dir} has no {runs.MODEL}; run kt export {run_dir} first")
    fp32 = load_predictor("custom", Choice(models=[source]), RunOptions(progress=False, tta="none"))
    if fp32.models[0].meta_spec is not None:
        raise KtError(f"{run_dir}: --int8 takes image-only models; this one takes metadata too")
    if not np.isfinite(tolerance):  # nan compares false: it would let any drop through
        raise KtError(f"--int8-tolerance {tolerance}: give a finite score drop, e.g. 0.005")
    comp, calib, val, oof = _rows(run_dir, calibration, validation, data_dir and Path(data_dir))
    if calib.empty:
        raise KtError(f"{run_dir}: no training rows to calibrate int8 on")
    out = out or run_dir / runs.MODEL_INT8
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(source), str(pre))
        reader = _Reader(fp32.models[0], comp, calib, fp32.crop)
        with atomic_path(out) as staged:
            quantize_static(
                str(pre),
                str(staged),
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                weight_type=QuantType.QInt8,
                activation_type=QuantType.QUInt8,
            )
            int8 = load_predictor(
                "custom", Choice(models=[staged]), RunOptions(progress=False, tta="none")
            )
            a, b = fp32.outputs(val), int8.outputs(val)
            task, fitted = comp.task, oof["fitted"]
            ids = [str(i) for i in oof["ids"]]
            order = {i: k for k, i in enumerate(ids)}
            y = np.asarray(oof["targets"])[[order[str(i)] for i in val["id"]]]
            record = {
                "calibration_rows": int(len(calib)),
                "validation_rows": int(len(val)),
                "max_abs_diff": float(np.abs(a - b).max()),
                "score_fp32": float(task.score(y, a, fitted)),
                "score_int8": float(task.score(y, b, fitted)),
                "source_sha256": sha256(source),
            }
            drop = record["score_fp32"] - record["score_int8"]
            if drop > tolerance and not force:
                raise KtError(
                    f"int8 scores {record['score_int8']:.4f} against fp32's {record['score_fp32']:.4f} on "
                    f"{len(val)} validation rows (a drop of {drop:.4f} > {tolerance:g}); nothing written "
                    "(--force keeps it, --int8-tolerance raises the bar)"
                )
            proto = onnx.load(str(staged))
            meta = json.loads(next(p.value for p in proto.metadata_props if p.key == "kt"))
            meta["int8"] = record
            for p in proto.metadata_props:
                if p.key == "kt":
                    p.value = json.dumps(meta)
            onnx.save(proto, str(staged))
    return {"path": str(out), **record}
