"""Inference images/s: onnxruntime (what kt predict runs) vs torch eager, same model, same batches, CPU.

    python benchmarks/onnx_vs_torch.py [--arch resnet18] [--size 128] [--batch 16] [--iters 20] [--rounds 3]

It also prints the model's FLOPs per image and each runtime's GFLOP/s beside the fastest fp32 rate this
machine reaches on a plain 2048x2048 matmul (torch's and onnxruntime's, same threads): the ONNX/torch
ratio cannot exceed that rate over torch's on the model, whichever runtime runs it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def rate(fn, batch: np.ndarray, iters: int) -> tuple[float, float]:
    """(images per wall second, images per CPU second of the process and its threads)."""
    fn(batch)  # warm-up: graph optimisation, allocator
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(iters):
        fn(batch)
    return iters * len(batch) / (time.perf_counter() - t0), iters * len(batch) / (time.process_time() - c0)


def model_flops(model, batch: np.ndarray) -> float:
    """FLOPs per image of one forward pass (torch's counter: 2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.from_numpy(batch))
    return counter.get_total_flops() / len(batch)


def matmul_ceiling(threads: int, n: int = 2048, rounds: int = 5) -> dict[str, float]:
    """GFLOP/s (wall, best of `rounds`) of an n x n fp32 matmul in torch and in onnxruntime (kt's session
    options, `threads` intra-op threads): what this CPU's fp32 units deliver to a dense kernel."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from kaggle_transfer.inference.session import session_options

    a, b = (np.random.default_rng(k).standard_normal((n, n), dtype=np.float32) for k in (1, 2))
    spec = [helper.make_tensor_value_info(k, TensorProto.FLOAT, [n, n]) for k in "ABC"]
    graph = helper.make_graph([helper.make_node("MatMul", ["A", "B"], ["C"])], "mm", spec[:2], spec[2:])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    onnx.checker.check_model(proto)
    session = ort.InferenceSession(proto.SerializeToString(), session_options(threads),
                                   providers=["CPUExecutionProvider"])
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    calls = {"torch": lambda: torch.mm(ta, tb), "onnxruntime": lambda: session.run(None, {"A": a, "B": b})}
    out = {}
    for name, fn in calls.items():
        fn()
        best = min(_seconds(fn) for _ in range(rounds))
        out[name] = 2 * n**3 / best / 1e9
    return out


def _seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best of each runtime counts")
    a = p.parse_args()

    from kaggle_transfer.inference.session import OnnxModel, load_model
    from kaggle_transfer.training.export import _export_graph
    from kaggle_transfer.training.models import Head, build_model

    model = build_model(a.arch, 5, head=Head("gem")).eval()
    batch = np.random.default_rng(0).integers(0, 256, (a.batch, 3, a.size, a.size), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        _export_graph(model, (torch.from_numpy(batch[:2]),), path, 18)
        import onnx

        proto = onnx.load(str(path))
        proto.metadata_props.add(key="kt", value=json.dumps({  # the fields the metadata schema requires
            "competition": "bench", "task": "multiclass", "num_classes": 5, "size": a.size, "arch": a.arch,
            "channels": ["red", "green", "blue"], "class_names": [str(k) for k in range(5)]}))
        onnx.save(proto, str(path))
        session: OnnxModel = load_model(path, provider="cpu")

        def eager(x):
            with torch.inference_mode():
                return model(torch.from_numpy(x)).numpy()

        # kt export --int8's quantisation (QDQ, per-channel int8 weights, uint8 activations), calibrated here
        # on random images: speed does not depend on the calibration, accuracy is tests/test_int8.py's
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process

        quant_pre_process(str(path), str(Path(tmp) / "pre.onnx"))
        calib = iter([{"image": batch[i : i + 4]} for i in range(0, len(batch), 4)])
        quantize_static(str(Path(tmp) / "pre.onnx"), str(Path(tmp) / "int8.onnx"),
                        type("Reader", (), {"get_next": lambda self: next(calib, None)})(),
                        quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8,
                        activation_type=QuantType.QUInt8)
        proto = onnx.load(str(Path(tmp) / "int8.onnx"))
        del proto.metadata_props[:]
        proto.metadata_props.add(key="kt", value=json.dumps({
            "competition": "bench", "task": "multiclass", "num_classes": 5, "size": a.size, "arch": a.arch,
            "channels": ["red", "green", "blue"], "class_names": [str(k) for k in range(5)]}))
        onnx.save(proto, str(Path(tmp) / "int8.onnx"))
        # the GPU options on this CPU, for the record: IO binding should cost nothing, fp16 is not for CPUs
        variants = {"int8 (kt export --int8)": load_model(Path(tmp) / "int8.onnx", provider="cpu"),
                    "IO binding": load_model(path, provider="cpu", io_binding="on"),
                    "fp16": load_model(path, provider="cpu", precision="fp16")}
        runs = {"torch": eager, "onnx": session.run,
                **{name: (lambda x, m=m: m.run(m.upload(x))) for name, m in variants.items()}}
        rates: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
        for _ in range(a.rounds):  # alternate: a shared VM drifts over a minute
            for name, fn in runs.items():
                rates[name].append(rate(fn, batch, a.iters))
        (torch_rate, torch_cpu), (onnx_rate, onnx_cpu) = max(rates["torch"]), max(rates["onnx"])
        variant_rates = {name: max(rates[name])[0] for name in variants}
        diff = np.abs(eager(batch) - session.run(batch)).max()
        flops, ceiling = model_flops(model, batch), matmul_ceiling(torch.get_num_threads())
    print(f"\ninference, {a.arch} @ {a.size}px, batch {a.batch}, CPU, {torch.get_num_threads()} threads")
    print(f"{'runtime':<28}{'images/s':>10}{'images/CPU-s':>14}")
    print(f"{'torch eager':<28}{torch_rate:>10.1f}{torch_cpu:>14.1f}")
    name = "onnxruntime (" + session.provider.replace("ExecutionProvider", "") + ")"
    print(f"{name:<28}{onnx_rate:>10.1f}{onnx_cpu:>14.1f}")
    per_round = ", ".join(f"{o[0] / t[0]:.2f}" for o, t in zip(rates["onnx"], rates["torch"], strict=True))
    print(f"ratio onnx / torch: {onnx_rate / torch_rate:.2f}x wall, {onnx_cpu / torch_cpu:.2f}x CPU (best of "
          f"{a.rounds} rounds each; wall per round: {per_round})   max |diff| {diff:.1e}")
    for name, r in variant_rates.items():
        print(f"onnxruntime {name:<24}{r:>10.1f}   vs plain onnxruntime: {r / onnx_rate:.2f}x")
    achieved = {"torch eager": torch_rate * flops / 1e9, "onnxruntime": onnx_rate * flops / 1e9}
    best = max(*ceiling.values(), *achieved.values())
    print(f"fp32 ceiling: {flops / 1e9:.2f} GFLOP per image; GFLOP/s on the model: "
          + ", ".join(f"{k} {v:.0f}" for k, v in achieved.items()) + "; 2048x2048 matmul: "
          + ", ".join(f"{k} {v:.0f}" for k, v in ceiling.items())
          + f"; onnx / torch can reach at most {best / achieved['torch eager']:.2f}x here "
          f"(onnxruntime runs the model at {achieved['onnxruntime'] / best:.0%} of the best rate)")


if __name__ == "__main__":
    main()
