"""Decode and resize images. Torch-free: training and ONNX inference share these functions,
so a model sees the same pixels at validation and at prediction time.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from ..errors import KtError


def _decode(path: str, flags: int) -> np.ndarray:
    try:
        data = np.fromfile(path, dtype=np.uint8)  # np.fromfile + imdecode also handles non-ASCII paths
    except OSError as e:
        raise KtError(f"cannot read image {path}: {e.strerror}") from None
    img = cv2.imdecode(data, flags) if data.size else None
    if img is None:
        raise KtError(f"image {path} is corrupt or not an image; replace it or pass --skip-bad-images")
    return img


def read_image(paths: Sequence[str]) -> np.ndarray:
    """Read one sample as an HxWxC uint8 array.

    One path: a colour image, converted from OpenCV's BGR to RGB (timm models expect RGB).
    Several paths: single-channel files stacked in the order given (HPA: red, green, blue, yellow).
    """
    if len(paths) == 1:
        img = _decode(paths[0], cv2.IMREAD_COLOR)
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    planes = [_decode(p, cv2.IMREAD_GRAYSCALE) for p in paths]
    shape = planes[0].shape
    if any(plane.shape != shape for plane in planes):  # e.g. one channel file saved at another size
        planes = [cv2.resize(x, shape[::-1], interpolation=cv2.INTER_AREA) for x in planes]
    return np.stack(planes, axis=-1)


def resize(img: np.ndarray, size: int) -> np.ndarray:
    """Square resize to size x size. INTER_AREA when shrinking (no aliasing), linear when growing."""
    if img.shape[0] == size and img.shape[1] == size:
        return img
    shrinking = img.shape[0] > size or img.shape[1] > size
    out = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return out[..., None] if out.ndim == 2 else out


def to_chw(img: np.ndarray) -> np.ndarray:
    """HxWxC uint8 → CxHxW uint8, contiguous (the model input layout; normalisation is in the model)."""
    return np.ascontiguousarray(img.transpose(2, 0, 1))
