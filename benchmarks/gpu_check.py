"""The GPU check behind gpu_check.sh: AMP training steps, ONNX export, onnxruntime on CUDA, one table.

    python benchmarks/gpu_check.py [--arch inception_resnet_v2] [--size 512] [--steps 300] [--smoke]

--smoke runs the same code with a tiny model on the CPU, so the script is tested where no GPU is.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--arch", default="inception_resnet_v2")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--workers", type=int, default=12)
    p.add_argument("--smoke", action="store_true", help="tiny CPU run of the same code")
    a = p.parse_args()
    if a.smoke:
        a.arch, a.size, a.batch, a.steps, a.images, a.workers = "test_resnet", 32, 8, 6, 48, 0
    rows: list[tuple[str, str]] = []
    try:
        _check(a, rows)
    finally:  # whatever ran is reported, even when a later step fails
        print("\n| check | value |\n|---|---|")
        for key, value in rows:
            print(f"| {key} | {value} |")
        print(json.dumps(dict(rows)))


def _check(a, rows: list[tuple[str, str]]) -> None:
    import onnxruntime as ort

    from kaggle_transfer import config
    from kaggle_transfer.data import synthetic
    from kaggle_transfer.inference.session import load_model
    from kaggle_transfer.training.export import export, load_run_model
    from kaggle_transfer.training.loop import fit

    cuda = torch.cuda.is_available()
    rows.append(("device", torch.cuda.get_device_name(0) if cuda else "cpu"))
    rows.append(("torch", torch.__version__))
    rows.append(("onnxruntime", f"{ort.__version__} {','.join(ort.get_available_providers())}"))
    with tempfile.TemporaryDirectory() as tmp:
        data = synthetic.make("aptos", Path(tmp) / "data", n_train=a.images, n_test=64,
                              image_size=max(64, a.size))
        steps_per_epoch = max(1, int(a.images * 0.8) // a.batch)
        epochs = max(2, -(-a.steps // steps_per_epoch))
        cfg = config.resolve(flags={"arch": a.arch, "pretrained": False, "size": a.size, "batch_size": a.batch,
                                    "epochs": epochs, "workers": a.workers, "pool": "gem", "loss": "smooth_l1",
                                    "amp": "auto", "device": "auto", "augment": "heavy", "lr": 3e-4})
        run = Path(tmp) / "run"
        run.mkdir()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.time()
        result = fit(cfg, run, data, progress=False)
        history = pd.read_csv(run / "history.csv")
        rows += [("train steps", str(epochs * steps_per_epoch)), ("amp", result["amp"]),
                 ("train images/s (best epoch after the first)", f"{history['train_images_per_s'].iloc[1:].max():.1f}"),
                 ("train steps/s", f"{history['train_images_per_s'].iloc[1:].max() / a.batch:.2f}"),
                 ("fit wall s", f"{time.time() - t0:.1f}"), ("val qwk", f"{result['score']:.4f}")]
        if cuda:
            rows.append(("peak GPU memory GiB", f"{torch.cuda.max_memory_allocated() / 2**30:.2f}"))
        exported = export(run)
        rows.append(("onnx max|diff| vs torch (cpu, fp32)", f"{exported['max_abs_diff']:.2e}"))
        # the device image may carry a CPU-only onnxruntime: then ONNX runs on the CPU, torch on the GPU
        provider = "cuda" if cuda and "CUDAExecutionProvider" in ort.get_available_providers() else "cpu"
        sessions = {"fp32": load_model(exported["path"], provider=provider, io_binding="off"),
                    "fp32 + IO binding": load_model(exported["path"], provider=provider, io_binding="on"),
                    "fp16 + IO binding": load_model(exported["path"], provider=provider, precision="fp16",
                                                    io_binding="on")}
        rows.append(("onnxruntime provider", sessions["fp32"].provider))
        # a CPU onnxruntime beside a GPU gets a small parity batch and no speed rows (minutes at 512 px)
        n = a.batch if provider == "cuda" or not cuda else min(a.batch, 4)
        x = np.random.default_rng(0).integers(0, 256, (n, 3, a.size, a.size), dtype=np.uint8)
        model, _ = load_run_model(run)
        device = torch.device("cuda" if cuda else "cpu")
        model = model.to(device)
        with torch.inference_mode():
            ref = model(torch.from_numpy(x).to(device)).float().cpu().numpy()
        for name, onnx in sessions.items():
            rows.append((f"onnx {name} vs torch fp32, max|diff|", f"{np.abs(onnx.run(x) - ref).max():.2e}"))
        if provider == "cuda" or not cuda:
            rows += _speed(model, sessions, x, device)
        else:
            rows.append(("onnx speed", "skipped: this onnxruntime has no CUDA provider"))


def _speed(model, sessions, x, device, iters: int = 10) -> list[tuple[str, str]]:
    from timing import calls_per_s

    def timed(fn) -> float:
        return len(x) * calls_per_s(fn, iters, cuda=device.type == "cuda")

    xt = torch.from_numpy(x).to(device)
    with torch.inference_mode():
        torch_rate = timed(lambda: model(xt))
        with torch.autocast(device.type, enabled=device.type == "cuda"):
            amp_rate = timed(lambda: model(xt))
    rows = [("torch eager images/s (fp32)", f"{torch_rate:.1f}"), ("torch eager images/s (AMP)", f"{amp_rate:.1f}")]
    for name, onnx in sessions.items():  # from host memory each time, as kt predict does (upload + run)
        rate = timed(lambda onnx=onnx: onnx.run(onnx.upload(x)))
        rows += [(f"onnxruntime {name} images/s", f"{rate:.1f}"),
                 (f"onnx {name} / torch fp32", f"{rate / torch_rate:.2f}x")]
    return rows


if __name__ == "__main__":
    main()
