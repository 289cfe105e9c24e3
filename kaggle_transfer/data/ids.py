"""One id normalisation for every join of user-supplied rows with a competition's table (pseudo-label
tables, split files): ids are compared as text, stripped of surrounding space, Unicode-normalised (NFC),
and without an image file suffix — Cassava's ids keep `.jpg` (`1000015157.jpg`), a folder of the same
images yields `1000015157`, and both must meet."""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterable

SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")


def join_key(value: object) -> str:
    """The form an id is compared in."""
    text = unicodedata.normalize("NFC", str(value).strip())
    lower = text.lower()
    suffix = next((s for s in SUFFIXES if lower.endswith(s)), "")
    return text[: len(text) - len(suffix)] if suffix else text


def keys(values: Iterable[object]) -> list[str]:
    return [join_key(v) for v in values]


def image_keys(paths: Iterable[tuple[str, ...] | list[str]]) -> set:
    """Every image file of these rows by its identity on disk (device and inode: a symlink or a hard link
    is the same image), or its resolved path where it cannot be read: a row is the same image whatever
    its id or file name says."""
    out: set = set()
    for row in paths:
        for p in row:
            try:
                st = os.stat(p)
                out.add((st.st_dev, st.st_ino))
            except OSError:
                out.add(os.path.realpath(p))
    return out
