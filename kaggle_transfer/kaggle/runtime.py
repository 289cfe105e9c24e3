"""The onnxruntime a Kaggle notebook runs: pinned per accelerator, fetched once, checked against the image.

Kaggle's notebook image (Kaggle/docker-python at 78aaa43, 2026-08-12) builds on a Colab base whose GPU
variant carries CUDA 12.8 (`cuda-cudart-12-8`, `libcublas-12-8`, `libcudnn9-cuda-12`) and Python 3.12.
onnxruntime-gpu 1.27.0 and later link CUDA 13 (their CUDA provider NEEDs `libcublasLt.so.13`, and their
`[cuda]` extra resolves `nvidia-*-cu13`); 1.26.0 is the last release built for CUDA 12 (checked on
2026-12-01 by reading the wheels' `libonnxruntime_providers_cuda.so`). A CUDA-13 build on that image
cannot create its CUDA provider and silently runs on the CPU, so kt pins 1.26.0 and reads every GPU
wheel's NEEDED entries before it ships one.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import KtError

IMAGE_CUDA_MAJOR = 12  # Kaggle's GPU image: CUDA 12.8 (see above)
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
)


@dataclass(frozen=True)
class Runtime:
    package: str
    version: str
    cuda: int | None  # the CUDA major its GPU provider links; None for the CPU build

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


RUNTIMES = {
    "gpu": Runtime("onnxruntime-gpu", "1.26.0", IMAGE_CUDA_MAJOR),
    "none": Runtime("onnxruntime", "1.26.0", None),
}
# The fast PNG decoder (data/images.py; 1.80x PIL's PNGs per CPU-second, benchmarks/decoders.py) travels
# beside onnxruntime: Kaggle's image does not list it (kaggle_requirements.txt at 78aaa43 names no
# imagecodecs, pyspng or simplejpeg). Its wheel is abi3 (cp311 and later). Without it the notebook
# decodes with OpenCV, the image's own.
DECODER = Runtime("imagecodecs", "2026.3.6", None)


def parse_pythons(text: str) -> tuple[str, ...]:
    """'3.12' or '3.12,3.13': the notebook interpreters a bundle carries wheels for."""
    pythons = tuple(dict.fromkeys(p.strip() for p in str(text).split(",") if p.strip()))
    bad = [p for p in pythons if not re.fullmatch(r"3\.\d{1,2}", p)]
    if not pythons or bad:
        raise KtError(
            f"--python {text!r} is not a Python version like 3.12 (or a list like 3.12,3.13)"
        )
    return pythons


def cp_tag(python: str) -> str:
    return "cp" + python.replace(".", "")


def wheel_fits(wheel: Path, python: str) -> bool:
    """Would pip install this wheel on `python`, Linux x86_64?"""
    from packaging.utils import parse_wheel_filename

    major, minor = (int(v) for v in python.split("."))
    try:
        tags = parse_wheel_filename(wheel.name)[3]
    except Exception:  # noqa: BLE001 - packaging's InvalidWheelFilename
        raise KtError(
            f"{wheel.name} is not a wheel file name; remove it from --wheels-from"
        ) from None

    def fits(tag) -> bool:
        cp = re.fullmatch(r"cp(\d)(\d+)", tag.interpreter)
        python_ok = tag.interpreter in ("py3", f"py{major}{minor}") or (
            cp is not None
            and int(cp[1]) == major
            and (int(cp[2]) == minor or (tag.abi == "abi3" and int(cp[2]) <= minor))
        )
        linux = tag.platform == "any" or (
            tag.platform.endswith("x86_64") and "linux" in tag.platform
        )
        return python_ok and linux

    return any(fits(t) for t in tags)


def cache_dir() -> Path:
    """Where fetched wheels are kept between bundles: $KT_WHEEL_CACHE, else the user's cache folder."""
    base = (
        os.environ.get("KT_WHEEL_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        / "kaggle_transfer"
        / "wheels"
    )
    return Path(base)


def _cached(folder: Path, runtime: Runtime, python: str) -> list[Path]:
    """The cached wheels of `runtime` that install on `python` (its own cp tag, or an older abi3 one)."""
    name = runtime.package.replace("-", "_")
    return sorted(
        w for w in folder.glob(f"{name}-{runtime.version}-*.whl") if wheel_fits(w, python)
    )


def fetch(runtime: Runtime, python: str) -> Path:
    """The pinned wheel for `python` on Linux x86_64, downloaded into the cache on first use."""
    folder = cache_dir() / cp_tag(python)
    found = _cached(folder, runtime, python)
    if found:
        return found[-1]
    folder.mkdir(parents=True, exist_ok=True)
    # into a private folder, then renamed into the cache: another kt (or a parallel test) never sees
    # half a wheel
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=folder))
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        python,
        "--implementation",
        "cp",
        *platforms,
        "-d",
        str(staging),
        runtime.requirement,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True)
    for wheel in staging.glob("*.whl"):
        os.replace(wheel, folder / wheel.name)
    shutil.rmtree(staging, ignore_errors=True)
    found = _cached(folder, runtime, python)
    if out.returncode != 0 or not found:
        tail = " ".join(out.stderr.split())[-200:]
        raise KtError(
            f"could not download {runtime.requirement} for Python {python} ({tail or 'no wheel'}); "
            "pass --no-fetch-wheels with --wheels-from DIR holding it"
        )
    return found[-1]


def fetch_decoder(python: str) -> list[Path]:
    """The fast decoder's wheel for `python`, or none where it has no wheel for that Python (or cannot
    be fetched): the notebook then decodes with OpenCV, a little slower, with the same answers."""
    try:
        return [fetch(DECODER, python)]
    except KtError as e:
        print(
            f"note: the bundle carries no {DECODER.package} for Python {python} ({e})",
            file=sys.stderr,
        )
        return []


# -- what a wheel's CUDA provider links ------------------------------------------------------------------
def _stream_ranges(zf: zipfile.ZipFile, member: str, ranges: list[tuple[int, int]]) -> list[bytes]:
    """The byte ranges [start, end) of a (compressed) member, read in one pass that stops at the last."""
    out = [bytearray() for _ in ranges]
    end = max(e for _, e in ranges)
    position = 0
    with zf.open(member) as f:
        while position < end:
            chunk = f.read(1 << 22)
            if not chunk:
                break
            for (start, stop), buf in zip(ranges, out, strict=True):
                lo, hi = max(start, position), min(stop, position + len(chunk))
                if lo < hi:
                    buf += chunk[lo - position : hi - position]
            position += len(chunk)
    return [bytes(b) for b in out]


def elf_needed(wheel: Path, member: str) -> list[str]:
    """DT_NEEDED of a 64-bit little-endian ELF inside a wheel, read without extracting it."""
    with zipfile.ZipFile(wheel) as zf:
        (head,) = _stream_ranges(zf, member, [(0, 1 << 16)])
        if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
            raise KtError(f"{wheel.name}: {member} is not a 64-bit little-endian ELF library")
        (phoff,) = struct.unpack_from("<Q", head, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
        segments = [
            struct.unpack_from("<IIQQQQQQ", head, phoff + i * phentsize) for i in range(phnum)
        ]
        # PT_DYNAMIC: offset, size
        dynamic = next(((s[2], s[5]) for s in segments if s[0] == 2), None)
        if dynamic is None:
            return []
        (table,) = _stream_ranges(zf, member, [(dynamic[0], dynamic[0] + dynamic[1])])
        entries = [struct.unpack_from("<qQ", table, i) for i in range(0, len(table) - 15, 16)]
        tags = {tag: value for tag, value in entries if tag in (5, 10)}  # DT_STRTAB, DT_STRSZ
        loads = [s for s in segments if s[0] == 1]  # PT_LOAD: a virtual address → its file offset
        base = next(s[2] + tags[5] - s[3] for s in loads if s[3] <= tags[5] < s[3] + s[5])
        (strings,) = _stream_ranges(zf, member, [(base, base + tags[10])])
    return [strings[v : strings.index(b"\0", v)].decode() for tag, v in entries if tag == 1]


def cuda_majors(wheel: Path) -> set[int]:
    """The CUDA majors a wheel's CUDA provider links (libcudart.so.N, libcublasLt.so.N); empty for none."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            members = [n for n in zf.namelist() if re.search(r"providers_cuda[^/]*\.so$", n)]
    except (OSError, zipfile.BadZipFile):
        raise KtError(f"{wheel} is not a readable wheel (zip); fetch it again") from None
    majors = set()
    for member in members:
        for lib in elf_needed(wheel, member):
            if m := re.fullmatch(r"lib(?:cudart|cublasLt|cublas)\.so\.(\d+)", lib):
                majors.add(int(m[1]))
    return majors


def check_cuda(wheel: Path, want: int = IMAGE_CUDA_MAJOR) -> None:
    """Refuse a GPU wheel whose CUDA provider links another CUDA major than the notebook image has. The
    check reads 400 MB of the provider: its verdict is remembered in the wheel cache (never beside the
    wheel, which may sit in a bundle about to be uploaded), keyed by the wheel's name and size."""
    stamp = cache_dir() / "cuda-checks" / f"{wheel.name}.{wheel.stat().st_size}"
    if stamp.is_file():
        majors = {int(v) for v in stamp.read_text().split()}
    else:
        majors = cuda_majors(wheel)
        try:
            stamp.parent.mkdir(parents=True, exist_ok=True)
            stamp.write_text(" ".join(map(str, sorted(majors))) + "\n")
        except OSError:
            pass  # a read-only cache: check again next time
    if not majors:
        raise KtError(
            f"{wheel.name} has no CUDA provider; a GPU bundle needs onnxruntime-gpu built for CUDA "
            f"{want} (kt pins {RUNTIMES['gpu'].requirement})"
        )
    if majors != {want}:
        raise KtError(
            f"{wheel.name} links CUDA {'/'.join(map(str, sorted(majors)))} but Kaggle's GPU image has "
            f"CUDA {want}: its CUDA provider would fail there and the notebook run on the CPU; use "
            f"{RUNTIMES['gpu'].requirement} (drop --wheels-from, or put that wheel in it)"
        )
