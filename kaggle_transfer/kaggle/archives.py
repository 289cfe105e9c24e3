"""Zip archives checked before anything is extracted: no member outside the destination, no symlink,
no decompression bomb, enough free space. Torch-free; `kt download` extracts competitions with it."""

from __future__ import annotations

import shutil
import stat
import zipfile
import zlib
from pathlib import Path

from ..errors import KtError

# A zip whose members expand more than this many times their compressed size is refused as a bomb;
# competition archives of images (already compressed) and CSVs stay far below it.
MAX_RATIO = 200
SPACE_MARGIN = 1.1  # free space wanted beyond the uncompressed size


def check_archive(archive: Path, dest: Path) -> list[zipfile.ZipInfo]:
    """Every member checked before anything is written: no `../`, absolute path or symlink; total size
    against the free space at `dest`; expansion ratio against MAX_RATIO. A corrupt zip is one line."""
    dest = dest.resolve()
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as e:
        raise KtError(
            f"{archive.name} is not a readable zip ({e}); it is corrupt or truncated: "
            "download again with --force"
        ) from None
    for m in members:
        target = (dest / m.filename).resolve()
        if m.filename.startswith(("/", "\\")) or (target != dest and dest not in target.parents):
            raise KtError(
                f"{archive.name}: member {m.filename!r} would be written outside {dest}; refused"
            )
        if stat.S_ISLNK(m.external_attr >> 16):
            raise KtError(f"{archive.name}: member {m.filename!r} is a symbolic link; refused")
        if m.file_size > MAX_RATIO * max(m.compress_size, 1) and m.file_size > 1 << 20:
            raise KtError(
                f"{archive.name}: member {m.filename!r} expands {m.file_size // max(m.compress_size, 1)}x "
                f"(over {MAX_RATIO}x): refused as a decompression bomb"
            )
    total = sum(m.file_size for m in members)
    free = shutil.disk_usage(_existing_parent(dest)).free
    if total * SPACE_MARGIN > free:
        raise KtError(
            f"{archive.name} needs {total / 2**30:.1f} GiB but {dest} has {free / 2**30:.1f} GiB free; "
            "free some space or pass --dest on a larger disk"
        )
    return members


def _existing_parent(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def safe_extract(archive: Path, dest: Path) -> list[str]:
    """Extract a zip after check_archive; a failure mid-way (a full disk) raises with nothing half-done
    reported as done: the caller extracts into a temp folder and renames it into place."""
    members = check_archive(archive, dest)
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(dest.resolve())
    except (zipfile.BadZipFile, EOFError, zlib.error) as e:
        raise KtError(
            f"{archive.name} is corrupt ({type(e).__name__}); download again with --force"
        ) from None
    return [m.filename for m in members]
