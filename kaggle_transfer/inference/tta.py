"""Test-time augmentation: a list of tiny view functions on NCHW batches (numpy)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

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
VIEWS: dict[str, list[View]] = {
    "none": [_identity],
    "flip": [_identity, _hflip],
    "d4": [_identity, _hflip, _vflip, _compose(_hflip, _vflip), _transpose, _compose(_transpose, _hflip),
           _compose(_transpose, _vflip), _compose(_transpose, _hflip, _vflip)],
}


def views(name: str) -> list[View]:
    try:
        return VIEWS[name]
    except KeyError:
        raise KtError(f"--tta {name!r} is not valid; choose one of: {', '.join(VIEWS)}") from None
