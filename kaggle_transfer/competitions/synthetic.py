"""Small competition-shaped datasets with a learnable signal, for `kt demo` and the tests.

Each adapter writes its own layout (`Competition.synthetic`, and `synthetic_external` for its
external sources): the real file names, CSV headers and sample submission, so the adapter under
test is the one users run. A file `test_labels.csv`, which Kaggle never gives, holds the hidden
answers so the demo can score its test predictions.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import KtError
from . import COMPETITIONS


def generators() -> dict[str, Callable[..., Path]]:
    """Every layout by name: the built-in competitions', then their external sources'."""
    out = {c.name: c.synthetic for c in COMPETITIONS.values() if c.synthetic}
    for comp in COMPETITIONS.values():
        out.update(comp.synthetic_external)
    return out


def make(name: str, out_dir: str | Path, **kwargs) -> Path:
    """Write the layout `name` (a built-in competition, or an external source: `dr2015`, `hpav18`,
    `isic2019`) into `out_dir`."""
    found = generators()
    if name not in found:
        raise KtError(f"no synthetic data for {name!r}; available: {', '.join(found)}")
    return found[name](out_dir, **kwargs)
