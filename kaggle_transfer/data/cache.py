"""`kt prepare`: a one-time resized copy of every image, used automatically by training and prediction.

cache/<competition>/<size>[-crop]/<sha1 of source paths>.kt.{jpg,png,npy}, plus manifest.json mapping
each sample's source files to their (mtime_ns, size) when cached. An entry whose sources changed is
stale and ignored (and redone by the next `kt prepare`). Multi-channel samples (HPA) become one file.

Formats (`--format`, measured by benchmarks/cache_formats.py): `jpeg` (default: quality 95 without chroma
subsampling, about 40 dB from the resized pixels; HPA's four channels fall back to png), `png` (lossless)
and `raw` (uint8 .npy: lossless and the fastest to read, the largest on disk). One file per sample:
preparing in another format replaces the old entry.
Source data is only read, never written. Torch-free: prediction in a notebook uses it too.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..errors import KtError
from ..files import clean_stale_tmp, contained, inside, write_json
from . import images

SUFFIXES = images.CACHE_SUFFIXES


def cache_dir(root: Path, competition: str, size: int, crop: bool) -> Path:
    return inside(root, competition, f"{size}{'-crop' if crop else ''}", what="competition name")


def _key(paths: Sequence[str]) -> str:
    return hashlib.sha1("\0".join(os.path.abspath(p) for p in paths).encode()).hexdigest()


def _stamp(paths: Sequence[str]) -> list[list[int]]:
    return [[os.stat(p).st_mtime_ns, os.stat(p).st_size] for p in paths]


def _prepare_one(
    args: tuple[tuple[str, ...], str, int, bool, str],
) -> tuple[str, list[list[int]] | str]:
    paths, stem, size, crop, fmt = args
    try:
        img = images.read_image(paths, reduce_to=size)
        if crop:
            img = images.fundus_crop(img)
        img = images.resize_short_side(img, size)
        out = stem + images.cache_suffix(fmt, img.shape[-1])
        images.write_cache(out, img)
        for other in SUFFIXES:  # one entry per sample: an older entry in another format goes
            if not out.endswith(other) and os.path.exists(stem + other):
                os.remove(stem + other)
        return _key(paths), _stamp(paths)
    except KtError as e:
        return _key(paths), f"error: {e}"


def entry_file(folder: Path, key: str) -> Path | None:
    """The cache file of a sample, whatever its format, or None."""
    return next((folder / f"{key}{s}" for s in SUFFIXES if (folder / f"{key}{s}").is_file()), None)


def load_manifest(folder: Path) -> dict[str, list]:
    """The cache's index; an unreadable one (a killed write, an edit) is treated as empty: kt prepare
    then verifies and rebuilds every entry rather than trusting it."""
    path = folder / "manifest.json"
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


PNG_START, PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"


def entry_intact(path: Path) -> bool:
    """A cache file that begins and ends as its format does (the size its header declares, for raw):
    catches truncated and overwritten entries without decoding them."""
    try:
        with open(path, "rb") as f:
            if path.name.endswith(images.CACHE_FORMATS["raw"]):
                fmt = np.lib.format
                version = fmt.read_magic(f)
                shape, _, dtype = (
                    fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
                )(f)
                return (
                    dtype == np.uint8
                    and f.tell() + int(np.prod(shape)) == os.fstat(f.fileno()).st_size
                )
            head = f.read(8)
            f.seek(-8, os.SEEK_END)
            tail = f.read(8)
        if path.name.endswith(images.CACHE_FORMATS["jpeg"]):
            return head[:2] == b"\xff\xd8" and tail[-2:] == b"\xff\xd9"
        return head == PNG_START and tail == PNG_END
    except (OSError, ValueError):
        return False


def prepare(
    tables: Sequence[pd.DataFrame],
    root: Path,
    competition: str,
    size: int,
    *,
    crop: bool = False,
    workers: int = 0,
    progress: bool = True,
    fmt: str = "jpeg",
) -> dict[str, int]:
    """Cache every row of the tables in format `fmt`; skip entries that are up to date. Resumable: the
    manifest is saved as work completes, so a killed run loses at most the last batch."""
    if not 8 <= size <= 4096:
        raise KtError(f"--size {size} is outside 8..4096 (the side of the cached images)")
    if not 0 <= workers <= 256:
        raise KtError(f"--processes {workers} is outside 0..256 (0: one per CPU core)")
    images.cache_suffix(fmt, 3)  # an unknown format is one line before any work
    folder = cache_dir(root, competition, size, crop)
    folder.mkdir(parents=True, exist_ok=True)
    clean_stale_tmp(folder)  # what a killed earlier run left half-written
    manifest = load_manifest(folder)
    todo, done, bad = [], 0, []
    for paths in (p for table in tables for p in table["paths"]):
        key = _key(paths)
        entry, current = manifest.get(key), entry_file(folder, key)
        # one file is a colour image (3 channels); several are one channel each (HPA)
        wanted = images.cache_suffix(fmt, 3 if len(paths) == 1 else len(paths))
        if (
            entry
            and current is not None
            and current.name.endswith(wanted)
            and entry == _stamp(paths)
            and entry_intact(current)
        ):
            done += 1
        else:
            todo.append((tuple(paths), str(folder / key), size, crop, fmt))
    workers = workers or os.cpu_count() or 1
    pool_kind = (
        ProcessPoolExecutor(
            max_workers=workers, initializer=die_with_parent, initargs=(os.getpid(),)
        )
        if workers > 1
        else _Serial()
    )
    with pool_kind as pool:
        results = (
            pool.map(_prepare_one, todo, chunksize=16) if workers > 1 else map(_prepare_one, todo)
        )
        for n, (key, stamp) in enumerate(
            tqdm(
                results,
                total=len(todo),
                desc=f"prepare {size}px",
                unit="img",
                disable=None if progress else True,
            ),
            1,
        ):
            if isinstance(stamp, str):
                bad.append(stamp)
            else:
                manifest[key] = stamp
            if n % 500 == 0:
                write_json(folder / "manifest.json", manifest)
    write_json(folder / "manifest.json", manifest)
    return {
        "cached": len(todo) - len(bad),
        "up_to_date": done,
        "failed": len(bad),
        "folder": str(folder),
        "errors": bad[:5],
        "format": fmt,
    }


def die_with_parent(parent: int) -> None:
    """A pool worker is killed when the process that started it dies (Linux PR_SET_PDEATHSIG): a kt prepare
    killed with SIGKILL leaves no worker running on. Elsewhere a no-op. A parent that died before the
    signal was armed is caught by comparing the parent's pid afterwards (prctl(2) advises it): the worker
    then ends at once."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:
        os._exit(1)


def competition_tables(
    comp, data_dir: Path, external_dirs: dict[str, str] | None = None
) -> tuple[list[pd.DataFrame], list[str]]:
    """What `kt prepare` caches: a competition's train and test rows and its external sources' rows,
    and notes on what was left out (a folder with train files only is still cached)."""
    tables, notes = [comp.read_train(data_dir, skip_bad_images=True)], []
    try:
        tables.append(comp.read_test(data_dir, skip_bad_images=True))
    except KtError as e:
        notes.append(f"test images not cached: {e}")
    for name, path in (external_dirs or {}).items():
        tables.append(
            contained(comp.read_external(name, Path(path)), Path(path), f"--external-dir {name}")
        )
    return tables, notes


class _Serial:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def use_cache(
    table: pd.DataFrame, root: Path, competition: str, size: int, *, crop: bool
) -> pd.DataFrame:
    """Swap each row's paths for its cached file when the cache holds an up-to-date entry.

    Looks for the smallest prepared size >= `size` (same crop setting). Rows without an entry keep their
    sources, so a partial cache is still correct. Adds a `cached` column."""
    base = Path(root) / competition
    sizes = (
        sorted(
            int(p.name.split("-")[0])
            for p in base.glob("*")
            if p.is_dir() and p.name.split("-")[0].isdigit() and p.name.endswith("-crop") == crop
        )
        if base.is_dir()
        else []
    )
    usable = [s for s in sizes if s >= size]
    table = table.copy()
    table["cached"] = False
    if not usable:
        return table
    folder = cache_dir(root, competition, usable[0], crop)
    manifest = load_manifest(folder)
    new_paths, cached = [], []
    for paths in table["paths"]:
        key = _key(paths)
        entry = entry_file(folder, key) if key in manifest else None
        hit = entry is not None and manifest[key] == _stamp(paths)
        new_paths.append((str(entry),) if hit else tuple(paths))
        cached.append(hit)
    table["paths"], table["cached"] = new_paths, np.array(cached)
    return table
