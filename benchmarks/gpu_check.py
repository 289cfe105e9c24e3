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
    from kaggle_transfer.competitions import synthetic
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
        rows += _bounds(cfg, run, data, a, device=torch.device("cuda" if cuda else "cpu"))
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


# dense bf16/fp16 tensor-core peak TFLOP/s from NVIDIA's datasheets (H100/H200 SXM: 989; A100: 312;
# L4: 121; A10: 125; T4: 65; V100: 125), matched on the device name; unknown GPUs print "n/a"
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0, "T4": 65.0, "V100": 125.0}


def _bounds(cfg, run, data, a, *, device) -> list[tuple[str, str]]:
    """Loader-bound vs compute-bound images/s, and the share of the GPU's peak FLOP/s the training
    step reaches: the loader alone (kt's training loader, heavy preset, `workers` processes), the
    step alone (AMP forward + backward + AdamW on one batch kept on the device), and the FLOPs of a
    step counted by torch.utils.flop_counter."""
    from timing import calls_per_s
    from torch.utils.flop_counter import FlopCounterMode

    from kaggle_transfer import competitions
    from kaggle_transfer.training.augment import build_train_transform
    from kaggle_transfer.training.builders import amp_dtype
    from kaggle_transfer.training.dataset import ImageDataset, make_loader
    from kaggle_transfer.training.export import load_run_model

    comp = competitions.for_config(cfg)
    table = comp.read_train(data)
    dataset = ImageDataset(table, a.size, targets=comp.task.targets(table["target"]),
                           transform=build_train_transform("heavy", a.size))
    loader = make_loader(dataset, a.batch, a.workers, True, generator=torch.Generator().manual_seed(0),
                         pin=device.type == "cuda")
    batches = max(2, min(len(loader), 20))
    it = iter(loader)
    next(it)  # workers started
    t0 = time.perf_counter()
    for _ in range(batches - 1):
        next(it)
    loader_rate = (batches - 1) * a.batch / (time.perf_counter() - t0)
    del it

    model, _ = load_run_model(run)
    model = model.to(device).train().to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    dtype = amp_dtype("auto", device)
    x = torch.randint(0, 256, (a.batch, 3, a.size, a.size), dtype=torch.uint8, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.zeros(a.batch, device=device)

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = torch.nn.functional.smooth_l1_loss(model(x).float().squeeze(1), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    steps_per_s = calls_per_s(step, 3 if a.smoke else 20, cuda=device.type == "cuda", warmup=2)
    achieved = flops * steps_per_s / 1e12
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    rows = [("loader-bound images/s (heavy preset, originals)", f"{loader_rate:.1f} with {a.workers} workers"),
            ("compute-bound images/s (AMP step, batch on device)", f"{steps_per_s * a.batch:.1f}"),
            ("bound by", "loader" if loader_rate < steps_per_s * a.batch else "compute"),
            ("GFLOP per training image (forward + backward)", f"{flops / a.batch / 1e9:.3g}"),
            ("achieved TFLOP/s in the step", f"{achieved:.3g}"),
            ("share of peak (dense bf16/fp16 datasheet)", f"{achieved / peak:.1%} of {peak:.0f}" if peak else "n/a")]
    return rows


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
