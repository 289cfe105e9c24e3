"""Atomic writes and file hashes. Torch-free: inference and submission use it too."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import KtError

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path in the same folder; rename it onto `path` only if the block succeeds.

    A crash mid-write (killed run, full disk) leaves the previous file intact, never a torn one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; a normal file follows the umask
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(
        path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"
    )


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays show up in metrics; JSON has no type for them
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def inside(root: str | os.PathLike, *parts: str, what: str) -> Path:
    """`root/parts...`, refused unless it stays inside `root` (no `..`, no absolute part, no escape).

    Every path kt derives from a name, a YAML or ONNX metadata goes through here; `what` names the
    key or flag the parts came from, for the error."""
    root = Path(root)
    path = root.joinpath(*parts)
    if any(Path(p).is_absolute() for p in parts) or not _within(root, path):
        raise KtError(
            f"{what} {'/'.join(map(str, parts))!r} leads outside {root}; use a plain relative name"
        )
    return path


def _within(root: Path, path: Path) -> bool:
    root_n, path_n = (
        os.path.normpath(os.path.abspath(root)),
        os.path.normpath(os.path.abspath(path)),
    )
    return path_n == root_n or path_n.startswith(root_n.rstrip(os.sep) + os.sep)


def outside(root: str | os.PathLike, paths) -> str | None:
    """The first of `paths` that leads outside `root` (after normalising `..`), or None."""
    root_n = os.path.normpath(os.path.abspath(root)).rstrip(os.sep) + os.sep
    for p in paths:
        if not os.path.normpath(os.path.abspath(p)).startswith(root_n):
            return str(p)
    return None


def contained(table, root: Path, what: str):
    """Every image path of a table must lie inside the folder it was read from: an id such as
    `../../etc/x` in a CSV, or a pattern in a YAML, cannot make kt read elsewhere."""
    escaped = outside(root, (p for paths in table["paths"] for p in paths))
    if escaped:
        raise KtError(
            f"{what}: image path {escaped} leads outside {root}; ids and patterns must stay inside "
            "the data folder"
        )
    return table


def write_csv(path: str | os.PathLike, frame, **kwargs: Any) -> Path:
    """A pandas frame as CSV, atomically (no index unless asked)."""
    kwargs.setdefault("index", False)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, **kwargs)
    return Path(path)


def copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """A copy that appears whole or not at all."""
    import shutil

    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return Path(dst)


def clean_stale_tmp(folder: str | os.PathLike) -> int:
    """Remove temp files that a killed process left behind (atomic_path's `.NAME.XXXX.tmp`)."""
    n = 0
    for tmp in Path(folder).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
        n += 1
    return n


def read_json(path: str | os.PathLike, *, what: str) -> Any:
    """A JSON file kt wrote; a damaged one is one line naming it."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise KtError(f"{path} is not valid JSON; the {what} is damaged") from None


def read_yaml(path: str | os.PathLike, *, what: str) -> Any:
    """A YAML file a user wrote (recipe, competition, grid): missing, binary or malformed is one line
    naming it; YAML's own message is folded onto that line and cut short."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise KtError(f"{what} {path} not found")
    try:
        return yaml.safe_load(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise KtError(f"{what} {path} is not a text file (not UTF-8); give a YAML file") from None
    except yaml.YAMLError as e:
        raise KtError(
            f"{what} {path} is not valid YAML: {' '.join(str(e).split())[:200]}"
        ) from None
    except OSError as e:
        raise KtError(f"{what} {path} cannot be read: {e.strerror}") from None
