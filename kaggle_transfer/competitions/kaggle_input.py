"""Where a Kaggle notebook finds a competition's files under /kaggle/input.

Kaggle has mounted inputs in two layouts (docs/kaggle.md): notebooks made in 2026 see a competition at
`/kaggle/input/competitions/<slug>/` and a dataset at `/kaggle/input/datasets/<owner>/<dataset>/`;
older notebooks see `/kaggle/input/<slug>/` and `/kaggle/input/<dataset>/`. Both known paths are tried
first; failing them, a folder named after the competition's slug anywhere a few levels down, found by
its marker files: `sample_submission.csv` beside `test_images/`, `test/` or `test.csv`. A look-alike
under another name (a user's copy of the data, a resized dataset) is never taken for the competition:
in the hidden rerun it would answer the public test ids.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import KtError

KAGGLE_INPUT = Path("/kaggle/input")
TEST_MARKERS = ("test_images", "test", "test.csv")
DEPTH = 4  # /kaggle/input/competitions/<slug> is two levels down; datasets three: room for another
WIDE = 200  # a folder with more sub-folders than this holds data, not mounts: not searched


def known_paths(slug: str, root: Path = KAGGLE_INPUT) -> list[Path]:
    """The competition's folder in the 2026 layout, then in the older one."""
    return [root / "competitions" / slug, root / slug]


def is_competition_folder(path: Path) -> bool:
    """A competition's files: the sample submission and a test set, and not a kt bundle."""
    return (
        (path / "sample_submission.csv").is_file()
        and any((path / m).exists() for m in TEST_MARKERS)
        and not (path / "bundle.json").exists()
    )


def folders(root: Path, depth: int = DEPTH) -> list[Path]:
    """Sub-folders of `root` down to `depth` levels, breadth first, skipping very wide folders."""
    level, found = [root], []
    for _ in range(depth):
        below = []
        for folder in level:
            try:
                with os.scandir(folder) as entries:
                    subs = sorted(Path(e.path) for e in entries if e.is_dir())
            except OSError:
                continue
            if len(subs) <= WIDE:
                below += subs
        found += below
        level = below
    return found


def find(slug: str, root: Path = KAGGLE_INPUT) -> tuple[Path, str] | None:
    """(folder, how it was found) for a competition mounted under `root`, or None when nothing is there.
    Look-alikes under other names are an error naming them: guessing could score a copy's files."""
    if not root.is_dir():
        return None
    for path, layout in zip(
        known_paths(slug, root), ("the 2026 layout", "the older layout"), strict=True
    ):
        if is_competition_folder(path):
            return path, layout
    candidates = [p for p in folders(root) if is_competition_folder(p)]
    named = sorted(
        (p for p in candidates if p.name == slug),
        key=lambda p: ("competitions" not in p.parts, len(p.parts), str(p)),
    )
    if named:
        return named[0], "its marker files"
    if candidates:
        raise KtError(
            f"the competition {slug} is not attached under {root}; {len(candidates)} folder(s) look like "
            f"competition data under other names ({', '.join(map(str, candidates[:3]))}): add the "
            "competition to the notebook's inputs, or name the folder with KT_BUNDLE_DATA (--data-dir)"
        )
    return None
