"""The notebook's predictor (kt's `predict_models`, what `kt predict` and the bundle's notebook run) vs the
plain loop a notebook author writes (PIL decode → resize → onnxruntime `run`, one batch at a time), on
APTOS-size PNGs with a tiny model, so decoding is most of the time. Whole processes, alternating rounds;
wall and CPU time (user + system of the process and its threads). It also runs kt with a K-member
ensemble (K sessions of the model, as K members load), the case of a code competition's notebook: each
image is decoded once for every member, so on PNGs this size an ensemble costs little more than one model.

    python benchmarks/notebook_predictor.py [--images 96] [--rounds 2] [--size 128] [--k 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from prepare_vs_pil import photos

PLAIN = """
import sys, json
import numpy as np, onnxruntime as ort
from PIL import Image
paths, model, size, batch = json.load(open(sys.argv[1]))
session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
name = session.get_inputs()[0].name
out = []
for start in range(0, len(paths), batch):
    x = np.stack([np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.BILINEAR))
                  for p in paths[start:start + batch]]).transpose(0, 3, 1, 2)
    out.append(session.run(None, {name: np.ascontiguousarray(x)})[0])
print(np.concatenate(out).shape)
"""

KT = """
import sys, json
from kaggle_transfer.inference.predict import RunOptions, predict_models
from kaggle_transfer.inference.session import load_model
paths, model, size, batch = json.load(open(sys.argv[1]))
k = int(sys.argv[2]) if len(sys.argv) > 2 else 1
raw = predict_models([load_model(model, provider="cpu") for _ in range(k)], [[p] for p in paths],
                     RunOptions(batch_size=batch, progress=False))
print(raw.shape)
"""


def child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def whole_process(code: str, args: Path, *extra: str) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), child_cpu()
    subprocess.run([sys.executable, "-c", code, str(args), *extra], check=True, capture_output=True)
    return time.perf_counter() - wall, child_cpu() - cpu


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=96)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--size", type=int, default=128, help="the model's input side")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--k", type=int, default=3, help="members of the ensemble row")
    a = p.parse_args()
    from predict_speed import tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = [p for (p,) in photos(tmp / "png", a.images, ".png", (2136, 3216))]
        model = tiny_model(tmp, a.size)
        (tmp / "args.json").write_text(json.dumps([paths, str(model), a.size, a.batch]))
        ensemble = f"kt, {a.k} models"
        runs: dict[str, list[tuple[float, float]]] = {"plain loop": [], "kt": [], ensemble: []}
        for _ in range(a.rounds):  # alternate: a shared VM drifts over a minute
            runs["plain loop"].append(whole_process(PLAIN, tmp / "args.json"))
            runs["kt"].append(whole_process(KT, tmp / "args.json"))
            runs[ensemble].append(whole_process(KT, tmp / "args.json", str(a.k)))
    best = {k: (min(w for w, _ in v), min(c for _, c in v)) for k, v in runs.items()}
    print(f"\n{a.images} PNGs 3216x2136 → resnet18 @ {a.size}, batch {a.batch}, CPU, whole processes, "
          f"best of {a.rounds} alternating rounds")
    for k, (w, c) in best.items():
        print(f"  {k:>12}: {w:6.2f} s wall  {c:6.2f} s CPU  ({a.images / w:.1f} images/s)")
    (pw, pc), (kw, kc) = best["plain loop"], best["kt"]
    print(f"kt notebook predictor vs plain loop: {pw / kw:.2f}x wall, {pc / kc:.2f}x CPU")
    ew, ec = best[ensemble]
    print(f"{a.k}-model ensemble vs one model (kt, decoding shared): {ew / kw:.2f}x wall, {ec / kc:.2f}x CPU")


if __name__ == "__main__":
    main()
