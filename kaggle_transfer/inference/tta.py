"""Test-time augmentation: a list of tiny view functions on NCHW batches (numpy)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..config import CHOICES
from ..errors import KtError

View = Callable[[np.ndarray], np.ndarray]


def _identity(x: np.ndarray) -> np.ndarray:
    return x


def _hflip(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x[..., ::-1])


def _vflip(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x[..., ::-1, :])


def _transpose(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.swapaxes(-1, -2))


def _compose(*fs: View) -> View:
    def view(x: np.ndarray) -> np.ndarray:
        for f in fs:
            x = f(x)
        return x

    return view


# d4: the 8 symmetries of the square (flips x transpose), as SIIM-ISIC winners used
_VIEWS: dict[str, list[View]] = {
    "none": [_identity],
    "flip": [_identity, _hflip],
    "d4": [
        _identity,
        _hflip,
        _vflip,
        _compose(_hflip, _vflip),
        _transpose,
        _compose(_transpose, _hflip),
        _compose(_transpose, _vflip),
        _compose(_transpose, _hflip, _vflip),
    ],
}
# the names are config.CHOICES['tta'] (what --tta and a recipe accept); each has its views here
VIEWS: dict[str, list[View]] = {name: _VIEWS[name] for name in CHOICES["tta"]}


def views(name: str) -> list[View]:
    try:
        return VIEWS[name]
    except KeyError:
        raise KtError(f"--tta {name!r} is not valid; choose one of: {', '.join(VIEWS)}") from None


def recorded_tta(metadata: Sequence[dict]) -> str:
    """The views the models were trained to be predicted with (`kt train --tta`, in their metadata).

    An explicit --tta wins; models that recorded different views need one."""
    recorded = {m.get("tta") or (m.get("recipe") or {}).get("tta") or "none" for m in metadata}
    if len(recorded) > 1:
        raise KtError(
            f"the models recorded different TTA views ({', '.join(sorted(recorded))}); choose one with --tta"
        )
    return recorded.pop() if recorded else "none"
