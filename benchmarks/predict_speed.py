"""kt predict's inference path: a K-model ensemble (K sessions, as K members load) vs one model and vs K
separate single-model runs (each image decoded once and shared); the same ensemble with onnxruntime's
intra-op threads spinning, its default, which kt turns off; and peak memory over 1,000 vs 10,000 test
images (streamed, not held). With decoding shared, a K-model ensemble still runs K models: its CPU time
cannot fall below (decode + K x inference) / (decode + inference) of one model's, and the script prints
that floor from the inference time measured alone.

    python benchmarks/predict_speed.py [--k 3] [--images 200] [--memory-images 10000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

# VmHWM, not getrusage's ru_maxrss: Linux carries the parent's peak RSS across fork + exec into
# ru_maxrss, so a child started by this (torch-heavy) process would report the parent's peak.
MEMORY_PROBE = """
import sys, json
from kaggle_transfer.inference.predict import RunOptions, predict_models
from kaggle_transfer.inference.session import load_model
def hwm():
    return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
paths = json.load(open(sys.argv[1]))
model = load_model(sys.argv[2])
before = hwm()
predict_models([model], paths, RunOptions(batch_size=64, threads=2, progress=False))
print(before, hwm())
"""


def tiny_model(tmp: Path, size: int) -> Path:
    from kaggle_transfer import config
    from kaggle_transfer.competitions import synthetic
    from kaggle_transfer.training.export import export
    from kaggle_transfer.training.loop import fit

    data = synthetic.make("aptos", tmp / f"d{size}", n_train=40, n_test=4, image_size=64)
    cfg = config.resolve(flags={"arch": "resnet18", "pretrained": False, "size": size, "epochs": 1, "workers": 0,
                                "max_steps": 1})
    fit(cfg, tmp / f"r{size}", data, progress=False)
    return Path(export(tmp / f"r{size}")["path"])


def sessions(path: Path, k: int, *, spinning: bool = False) -> list:
    """K sessions of one file, as an ensemble of K members has; `spinning`: onnxruntime's default."""
    import onnxruntime as ort

    from kaggle_transfer.inference import session

    ort.set_default_logger_severity(3)  # setting the key kt set again is a warning, once per session
    original = session.session_options

    def with_spinning(threads: int = 0):
        options = original(threads)
        options.add_session_config_entry("session.intra_op.allow_spinning", "1")
        return options

    session.session_options = with_spinning if spinning else original
    try:
        return [session.load_model(path) for _ in range(k)]
    finally:
        session.session_options = original


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--source-size", type=int, default=1024)
    p.add_argument("--memory-images", type=int, default=10000)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    from kaggle_transfer.inference.predict import RunOptions, predict_models
    from kaggle_transfer.inference.session import load_model

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = load_model(tiny_model(tmp, 64))
        rng = np.random.default_rng(0)
        (tmp / "big").mkdir()
        base = cv2.resize(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), (a.source_size,) * 2)
        paths = []
        for i in range(a.images):
            cv2.imwrite(str(tmp / "big" / f"{i}.jpg"), base)
            paths.append((str(tmp / "big" / f"{i}.jpg"),))
        members, spinning = sessions(model.path, a.k), sessions(model.path, a.k, spinning=True)
        runs = {
            "single": lambda: predict_models([model], paths, RunOptions(progress=False)),
            "shared": lambda: predict_models(members, paths, RunOptions(progress=False)),
            "spun": lambda: predict_models(spinning, paths, RunOptions(progress=False)),
            "separate": lambda: [predict_models([model], paths, RunOptions(progress=False)) for _ in range(a.k)],
        }
        for members_ in (members, spinning):  # warm: the first runs allocate
            predict_models(members_, paths[:32], RunOptions(progress=False))
        runs["inference alone"] = lambda: [model.run(batch) for _ in range(0, a.images, 32)]
        batch = np.zeros((32, 3, 64, 64), np.uint8)
        best, cpu = dict.fromkeys(runs, float("inf")), dict.fromkeys(runs, float("inf"))
        for _ in range(a.rounds):  # alternating rounds, best of each
            for name, run in runs.items():
                t0, c0 = time.perf_counter(), time.process_time()
                run()
                best[name] = min(best[name], time.perf_counter() - t0)
                cpu[name] = min(cpu[name], time.process_time() - c0)
        single, shared, spun, separate = (best[n] for n in ("single", "shared", "spun", "separate"))
        floor = (cpu["single"] + (a.k - 1) * cpu["inference alone"]) / cpu["single"]
        print(f"\n{a.images} JPEGs {a.source_size}px, resnet18 @ 64px, CPU")
        print(f"one model: {single:.2f}s; {a.k} models as one ensemble: {shared:.2f}s "
              f"({shared / single:.2f}x one model); {a.k} separate runs: {separate:.2f}s; "
              f"ensemble / separate: {shared / separate:.2f}x")
        print(f"CPU: one model {cpu['single']:.2f}s, of which inference alone {cpu['inference alone']:.2f}s; "
              f"the ensemble {cpu['shared']:.2f}s ({cpu['shared'] / cpu['single']:.2f}x one model's CPU; "
              f"floor with decoding shared and {a.k}x the inference: {floor:.2f}x)")
        print(f"the ensemble with onnxruntime's threads spinning (its default): {spun:.2f}s, "
              f"{spun / shared:.2f}x kt's ({spun / single:.2f}x one model)")

        (tmp / "small").mkdir()
        small = rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)
        all_paths = []
        for i in range(a.memory_images):
            cv2.imwrite(str(tmp / "small" / f"{i}.png"), small)
            all_paths.append([str(tmp / "small" / f"{i}.png")])
        peaks, loaded = {}, {}
        for n in (a.memory_images // 10, a.memory_images):
            (tmp / f"p{n}.json").write_text(json.dumps(all_paths[:n]))
            out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(tmp / f"p{n}.json"), str(model.path)],
                                 capture_output=True, text=True, check=True)
            before, after = (int(v) / 1024 for v in out.stdout.strip().splitlines()[-1].split())
            loaded[n], peaks[n] = before, after
        print(pd.DataFrame({"images": list(peaks), "peak RSS MiB, model loaded": [round(v, 1) for v in loaded.values()],
                            "peak RSS MiB, after predict": [round(v, 1) for v in peaks.values()]})
              .to_string(index=False))
        small_n, big_n = sorted(peaks)
        print(f"peak memory {big_n} / {small_n} images: {peaks[big_n] / peaks[small_n]:.2f}x "
              f"for {big_n // small_n}x the images")


if __name__ == "__main__":
    main()
