"""float16 versions of kt's ONNX models, made in memory at load time (`kt predict --fp16`).

onnxruntime's converter (onnxruntime.transformers.float16) does the conversion: weights and
activations in fp16, the uint8 input and float32 output kept, FP32_OPS kept in fp32. It wraps each
kept op on its own, so a chain of them (GeM: Pow -> ReduceMean -> Pow) still passes through fp16
between links, where x**p overflows. `_drop_round_trips` removes those fp32 -> fp16 -> fp32 Cast
pairs (the post-pass onnxconverter-common#271 describes; that package's own converter mistypes
the Cast that follows our uint8 input, so it is not used).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from ..errors import KtError

# Kept in fp32, as torch autocast keeps them: GeM's x**p overflows fp16 (max 65504) once a feature
# exceeds 40 at p=3, and reductions over a feature map lose digits in fp16.
FP32_OPS = ["Pow", "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2", "Exp", "Log"]


def _cast_to(node) -> int | None:
    if node.op_type != "Cast":
        return None
    return next(a.i for a in node.attribute if a.name == "to")


def _drop_round_trips(model, kept_fp32: list[str]) -> int:
    """Rewire consumers of fp32 -> Cast(fp16) -> Cast(fp32) to the fp32 source; returns the Casts removed.

    A source is fp32 when an op kept in fp32 (`kept_fp32`) or a Cast to float made it; the converter's
    value_info is not consistent enough to ask."""
    import onnx
    from onnx import TensorProto

    graph = model.graph
    consumers: dict[str, list] = defaultdict(list)
    producer = {}
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
        for name in node.output:
            producer[name] = node
    outputs = {o.name for o in graph.output}
    removed: set[int] = set()
    for down in [n for n in graph.node if _cast_to(n) == TensorProto.FLOAT16]:
        source = down.input[0]
        made_by = producer.get(source)
        if made_by is None or not (
            made_by.op_type in kept_fp32 or _cast_to(made_by) == TensorProto.FLOAT
        ):
            continue
        for up in [n for n in consumers[down.output[0]] if _cast_to(n) == TensorProto.FLOAT]:
            if up.output[0] in outputs:
                continue
            for user in consumers[up.output[0]]:
                for k, name in enumerate(user.input):
                    if name == up.output[0]:
                        user.input[k] = source
            consumers[source] += consumers[up.output[0]]
            removed.add(id(up))
        if down.output[0] not in outputs and all(
            id(u) in removed for u in consumers[down.output[0]]
        ):
            removed.add(id(down))
    kept = [
        onnx.NodeProto.FromString(n.SerializeToString()) for n in graph.node if id(n) not in removed
    ]
    del graph.node[:]
    graph.node.extend(kept)
    return len(removed)


def to_fp16(path: str | Path) -> bytes:
    """The model at `path` in float16 (uint8 input, float32 output, FP32_OPS in fp32), serialised."""
    try:
        import onnx
        from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    except ImportError as e:
        raise KtError(
            f"--fp16 converts the models with the onnx package, which this Python lacks ({e}); "
            "install onnx, or predict in fp32"
        ) from None

    blocked = DEFAULT_OP_BLOCK_LIST + FP32_OPS
    half = convert_float_to_float16(onnx.load(str(path)), keep_io_types=True, op_block_list=blocked)
    _drop_round_trips(half, blocked)
    return half.SerializeToString()
