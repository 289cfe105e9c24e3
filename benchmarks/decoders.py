"""Image decoders per CPU-second, one thread, on APTOS-like PNGs and Cassava/SIIM-like JPEGs: full decode
and decode at reduced scale (what kt does when it only needs a smaller side), against PIL.

    python benchmarks/decoders.py [--pngs 6] [--jpegs 12]

Decoders that are not installed are listed as such: PIL and OpenCV always run (kt's own dependencies);
pyspng (libspng), pyvips (libvips: libspng built with zlib-ng), simplejpeg (libjpeg-turbo) and
imagecodecs are optional (`pip install pyspng pyvips pyvips-binary simplejpeg imagecodecs`). Every
decoder's pixels are checked against OpenCV's (PNG: equal; JPEG: within the rounding of IDCT
implementations).
"""

from __future__ import annotations

import argparse
import os
import struct
import tempfile
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from prepare_vs_pil import photos

os.environ.setdefault("OMP_NUM_THREADS", "1")
cv2.setNumThreads(1)


def _optional(name: str):
    try:
        return __import__(name)
    except ImportError:
        return None


def decoders(kind: str) -> dict:
    """name → function(path) returning an RGB uint8 array (None: not installed)."""
    spng, sj, ic = _optional("pyspng"), _optional("simplejpeg"), _optional("imagecodecs")
    read = lambda p: Path(p).read_bytes()  # noqa: E731
    out = {
        "PIL": lambda p: np.asarray(Image.open(p).convert("RGB")),
        "OpenCV": lambda p: cv2.cvtColor(cv2.imread(p, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB),
    }
    if kind == "png":
        out["pyspng"] = (lambda p: spng.load(read(p))) if spng else None
        out["imagecodecs"] = (lambda p: ic.png_decode(read(p))) if ic else None
        out["pyvips"] = _vips()
    else:
        out["simplejpeg"] = (lambda p: sj.decode_jpeg(read(p), colorspace="RGB")) if sj else None
        out["imagecodecs"] = (lambda p: ic.jpeg8_decode(read(p))) if ic else None
    return out


def _vips():
    try:
        import pyvips
    except (ImportError, OSError):
        return None
    pyvips.cache_set_max(0)
    return lambda p: pyvips.Image.new_from_file(p, access="sequential").numpy()


def idat(data: bytes) -> bytes:
    """A PNG's zlib stream: its IDAT chunks' payloads, joined."""
    pos, parts = 8, []
    while pos + 12 <= len(data):
        n, kind = struct.unpack_from(">I4s", data, pos)
        if kind == b"IDAT":
            parts.append(data[pos + 8 : pos + 8 + n])
        pos += 12 + n
    return b"".join(parts)


def inflate_share(paths) -> None:
    """Where a PNG decode's time goes: inflating the zlib stream (zlib, and libdeflate where imagecodecs
    is installed) against the whole decode (inflate, unfilter, copy out)."""
    ic = _optional("imagecodecs")
    streams = [idat(Path(p).read_bytes()) for p in paths]
    sizes = [len(zlib.decompress(z)) for z in streams]
    whole = 1 / per_cpu_second(lambda p: cv2.imread(p, cv2.IMREAD_UNCHANGED), paths)
    rows = {"zlib inflate": lambda i: zlib.decompress(streams[i])}
    if ic:
        rows["libdeflate inflate"] = lambda i: ic.deflate_decode(streams[i], out=sizes[i])
    print(f"\nwhere a PNG decode goes (OpenCV, whole decode: {whole * 1000:.0f} ms CPU per image)")
    for name, fn in rows.items():
        t = 1 / per_cpu_second(fn, range(len(paths)))
        print(f"  {name:<20}{t * 1000:6.0f} ms   {t / whole:5.0%} of the whole decode")


def reduced(kind: str) -> dict:
    """Decoders that decode at 1/2 scale themselves (JPEG's DCT scaling; PNG has none)."""
    if kind != "jpg":
        return {}
    sj = _optional("simplejpeg")
    out = {
        "PIL draft 1/2": lambda p: np.asarray(_draft(p)),
        "OpenCV REDUCED_2": lambda p: cv2.imread(p, cv2.IMREAD_REDUCED_COLOR_2),
    }
    if sj:
        out["simplejpeg 1/2"] = lambda p: sj.decode_jpeg(
            Path(p).read_bytes(), colorspace="RGB", min_height=1, min_width=1, min_factor=2
        )
    return out


def _draft(p):
    img = Image.open(p)
    img.draft("RGB", (img.width // 2, img.height // 2))
    return img.convert("RGB")


def per_cpu_second(fn, paths, rounds: int = 3) -> float:
    """Images per CPU second, best of `rounds` passes (after a warm-up pass)."""
    for p in paths:
        fn(p)
    best = 0.0
    for _ in range(rounds):
        c0 = time.process_time()
        for p in paths:
            fn(p)
        best = max(best, len(paths) / (time.process_time() - c0))
    return best


def main() -> None:
    a = argparse.ArgumentParser()
    a.add_argument("--pngs", type=int, default=6)
    a.add_argument("--jpegs", type=int, default=12)
    args = a.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sets = {
            "png": [p for (p,) in photos(Path(tmp) / "png", args.pngs, ".png", (2136, 3216))],
            "jpg": [p for (p,) in photos(Path(tmp) / "jpg", args.jpegs, ".jpg", (600, 800))],
        }
        print("decode, one thread, images per CPU-second (best of 3), ratio to PIL")
        print(f"{'images':<34}{'decoder':<20}{'img/CPU-s':>10}{'vs PIL':>9}")
        for kind, paths in sets.items():
            label = {"png": "APTOS-like PNG 3216x2136", "jpg": "Cassava-like JPEG 800x600"}[kind]
            ref = cv2.cvtColor(cv2.imread(paths[0], cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB).astype(int)
            base = None
            for name, fn in {**decoders(kind), **reduced(kind)}.items():
                if fn is None:
                    print(f"{label:<34}{name:<20}{'not installed':>19}")
                    continue
                if "1/2" not in name and "REDUCED" not in name:
                    diff = np.abs(np.asarray(fn(paths[0])).astype(int) - ref).max()
                    assert diff <= (0 if kind == "png" else 8), (name, diff)
                rate = per_cpu_second(fn, paths)
                base = base or rate
                print(f"{label:<34}{name:<20}{rate:>10.1f}{rate / base:>8.2f}x")
        inflate_share(sets["png"])


if __name__ == "__main__":
    main()
