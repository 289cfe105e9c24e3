"""The `kt` metadata of an ONNX file, checked before anything trusts it.

A model file may come from anywhere (a shared Kaggle dataset, a teammate): its metadata decides
folder names, image sizes and how outputs are decoded. Every field kt uses is checked for type and
range here, so a broken or hostile file is one error line naming the file and the key, never a
"valid" submission or a 30 GB allocation.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from ..errors import KtError
from ..protocol import PROTOCOLS, RESIZES
from .tta import VIEWS

MAX_SIZE = 4096  # input side: well above any competition model (the largest runs use 1024)
MAX_CLASSES = 100_000
KINDS = ("ordinal", "multilabel", "binary", "multiclass")


def _fail(path: Path, key: str, why: str) -> KtError:
    return KtError(
        f"{path}: metadata {key!r} {why}; the file is damaged or not from kt export (export it again)"
    )


def _finite_list(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value
    )


def num_outputs(kind: str, num_classes: int) -> int:
    return 1 if kind in ("ordinal", "binary") else num_classes


INT8_SCORES = {"calibration_rows", "validation_rows", "max_abs_diff", "score_fp32", "score_int8"}
INT8_KEYS = INT8_SCORES | {"source_sha256"}  # the model.onnx it was quantised from


def _check_int8(record: Any, path: Path) -> None:
    """The `int8` record of a quantised file (kt export --int8): the numbers it was accepted on and
    the sha256 of the fp32 file it was made from."""
    if not (
        isinstance(record, dict)
        and set(record) == INT8_KEYS
        and _finite_list([record[k] for k in INT8_SCORES])
        and isinstance(record["source_sha256"], str)
        and re.fullmatch(r"[0-9a-f]{64}", record["source_sha256"])
    ):
        raise _fail(path, "int8", "is not the record kt export --int8 writes")


def check(meta: Any, path: Path) -> dict[str, Any]:
    """The metadata, or a KtError naming the first key that is missing, mistyped or out of range."""
    from ..competitions.custom import NAME

    if not isinstance(meta, dict):
        raise _fail(path, "kt", "is not a JSON object")
    name = meta.get("competition")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise _fail(
            path,
            "competition",
            f"is {name!r}, not a competition name (lower-case letters, digits, _ -)",
        )
    if meta.get("task") not in KINDS:
        raise _fail(path, "task", f"is {meta.get('task')!r}, not one of {', '.join(KINDS)}")
    n = meta.get("num_classes")
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_CLASSES:
        raise _fail(path, "num_classes", f"is {n!r}, not a class count")
    size = meta.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or not 8 <= size <= MAX_SIZE:
        raise _fail(path, "size", f"is {size!r}, not an input side in 8..{MAX_SIZE}")
    channels = meta.get("channels")
    if (
        not isinstance(channels, list)
        or not 1 <= len(channels) <= 16
        or not all(isinstance(c, str) for c in channels)
    ):
        raise _fail(path, "channels", f"is {channels!r}, not a list of channel names")
    names = meta.get("class_names")
    if not isinstance(names, list) or len(names) != n:
        raise _fail(
            path,
            "class_names",
            f"has {len(names) if isinstance(names, list) else names!r} entries for num_classes {n}",
        )
    if not isinstance(meta.get("arch"), str):
        raise _fail(path, "arch", "is missing")
    if meta.get("tta") not in (None, *VIEWS):
        raise _fail(path, "tta", f"is {meta.get('tta')!r}, not one of {', '.join(VIEWS)}")
    check_fitted(meta.get("fitted") or {}, n, path)
    _check_preprocess(meta.get("preprocess"), path)
    for key in ("recipe", "competition_spec"):
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            raise _fail(path, key, "is not a mapping")
    recipe = meta.get("recipe") or {}
    if recipe.get("competition", name) != name:
        raise _fail(
            path,
            "recipe.competition",
            f"is {recipe.get('competition')!r} but the file is for {name!r}",
        )
    if meta.get("meta") is not None:
        from ..data import tabular

        try:
            tabular.check_spec(meta["meta"], str(path))
        except KtError:
            raise _fail(
                path, "meta", "is not a metadata encoding (columns, kinds, levels, mean/std)"
            ) from None
    if "int8" in meta:
        _check_int8(meta["int8"], path)
    return meta


def _check_preprocess(pre: Any, path: Path) -> None:
    """The protocol record (absent in files from before protocols: kt's squash resize)."""
    if pre is None:
        return
    if not isinstance(pre, dict):
        raise _fail(path, "preprocess", "is not a mapping")
    if pre.get("protocol") not in PROTOCOLS:
        raise _fail(
            path,
            "preprocess.protocol",
            f"is {pre.get('protocol')!r}, not one of {', '.join(PROTOCOLS)}",
        )
    if pre.get("resize") not in RESIZES:
        raise _fail(
            path, "preprocess.resize", f"is {pre.get('resize')!r}, not one of {', '.join(RESIZES)}"
        )


def check_fitted(fitted: Any, n: int, path: Path | str, fail=None) -> None:
    """Fitted parameters as every file that carries them must hold them (ONNX metadata, ensemble specs):
    n - 1 finite increasing cut points, n thresholds in [0, 1]."""
    fail = fail or _fail
    if not isinstance(fitted, dict):
        raise fail(path, "fitted", "is not a mapping")
    cuts = fitted.get("cutpoints")
    if cuts is not None:
        if (
            not _finite_list(cuts)
            or len(cuts) != n - 1
            or any(b <= a for a, b in zip(cuts, cuts[1:], strict=False))
        ):
            raise fail(
                path, "fitted.cutpoints", f"must be {n - 1} finite increasing numbers, got {cuts!r}"
            )
    thresholds = fitted.get("thresholds")
    if thresholds is not None:
        if (
            not _finite_list(thresholds)
            or len(thresholds) != n
            or not all(0 <= t <= 1 for t in thresholds)
        ):
            raise fail(
                path, "fitted.thresholds", f"must be {n} numbers in [0, 1], got {thresholds!r}"
            )


def check_graph(meta: dict[str, Any], session, path: Path) -> None:
    """The graph must agree with its metadata: input channels and side, the metadata input, output width."""
    inputs = session.get_inputs()
    spec = meta.get("meta")
    if [i.name for i in inputs[1:]] != (["meta"] if spec else []):
        raise _fail(
            path,
            "meta",
            f"says the graph takes {'image and meta' if spec else 'an image only'}, but its "
            f"inputs are {', '.join(i.name for i in inputs)}",
        )
    if spec and isinstance(inputs[1].shape[1], int) and inputs[1].shape[1] != spec["width"]:
        raise _fail(
            path,
            "meta.width",
            f"is {spec['width']} but the graph's meta input takes {inputs[1].shape[1]}",
        )
    shape = inputs[0].shape
    if len(shape) != 4:
        raise _fail(path, "graph input", f"has shape {shape}, not NCHW")
    sides = [s for s in shape[2:] if isinstance(s, int)]
    if sides and sides != [meta["size"]] * len(sides):
        raise _fail(
            path, "size", f"is {meta['size']} but the graph takes {shape[2]}x{shape[3]} images"
        )
    if len(session.get_outputs()) != 1:
        raise _fail(
            path, "graph output", f"is {len(session.get_outputs())} outputs; a kt model has one"
        )
    if isinstance(shape[1], int) and shape[1] != len(meta["channels"]):
        raise _fail(
            path,
            "channels",
            f"lists {len(meta['channels'])} channel(s) but the graph takes {shape[1]}",
        )
    out = session.get_outputs()[0].shape
    want = num_outputs(meta["task"], meta["num_classes"])
    # an ordinal task trained with ce has one logit per grade (tasks.py)
    allowed = {want, meta["num_classes"]} if meta["task"] == "ordinal" else {want}
    if len(out) == 2 and isinstance(out[1], int) and out[1] not in allowed:
        raise _fail(
            path,
            "num_classes",
            f"({meta['num_classes']}, task {meta['task']}) wants {want} output(s) "
            f"but the graph gives {out[1]}",
        )
