"""The competition registry: a plain dict. Adding a contest = one adapter file + one recipe folder."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from ..errors import KtError
from .aptos import APTOS
from .base import Competition
from .cassava import CASSAVA
from .cct20 import CCT20
from .hpa import HPA
from .siim_isic import SIIM_ISIC

COMPETITIONS: dict[str, Competition] = {c.name: c for c in (APTOS, HPA, SIIM_ISIC, CASSAVA, CCT20)}


def get(name: str) -> Competition:
    try:
        return COMPETITIONS[name]
    except KeyError:
        close = difflib.get_close_matches(name, COMPETITIONS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise KtError(f"unknown competition {name!r}{hint}; valid: {', '.join(COMPETITIONS)}") from None


def for_config(cfg) -> Competition:
    """The adapter a run config (or ONNX recipe) means, with its reading options applied."""
    get_ = get(cfg["competition"] if isinstance(cfg, dict) else cfg.competition)
    keep_empty = cfg.get("keep_empty", False) if isinstance(cfg, dict) else cfg.keep_empty
    return get_.configure(keep_empty=keep_empty)


def find_data_dir(comp: Competition, given: str | Path | None) -> Path:
    """--data-dir, else $KT_DATA/<name>, else data/<name>, else a Kaggle notebook's /kaggle/input/<slug>."""
    if given:
        path = Path(given)
        if not path.is_dir():
            raise KtError(f"--data-dir {path} does not exist; kt download {comp.name} fetches the files")
        return path
    candidates = [Path(os.environ["KT_DATA"]) / comp.name] if os.environ.get("KT_DATA") else []
    candidates.append(Path("data") / comp.name)
    if comp.slug:
        candidates.append(Path("/kaggle/input") / comp.slug)
    for path in candidates:
        if path.is_dir():
            return path
    raise KtError(f"no data for {comp.name}: looked in {', '.join(map(str, candidates))}; "
                  f"pass --data-dir DIR or run kt download {comp.name}")
