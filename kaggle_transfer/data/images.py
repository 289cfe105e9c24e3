"""Decode and resize images. Torch-free: training and ONNX inference share these functions,
so a model sees the same pixels at validation and at prediction time.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Sequence

import cv2
import numpy as np

from ..errors import KtError
from ..files import atomic_path

# kt prepare's files, by format (benchmarks/cache_formats.py chose the default, README "Speed"): channels
# in our order; png and raw read back exactly, jpeg (quality 95, no chroma subsampling) within ~40 dB
CACHE_FORMATS = {"jpeg": ".kt.jpg", "png": ".kt.png", "raw": ".kt.npy"}
CACHE_SUFFIXES = tuple(CACHE_FORMATS.values())
JPEG_PARAMS = [
    cv2.IMWRITE_JPEG_QUALITY,
    95,
    cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
    cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
]
# Pixel budget per image ($KT_MAX_PIXELS): six times the largest real competition photos (SIIM-ISIC's
# 6000x4000); a decompression bomb (a small file that decodes to gigabytes) is a bad image, not a crash.
DEFAULT_MAX_PIXELS = 150_000_000
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ORIENTATION = 0x0112  # the EXIF tag (TIFF/EP; PIL.ExifTags.Base.Orientation)


def max_pixels() -> int:
    try:
        return int(os.environ.get("KT_MAX_PIXELS") or DEFAULT_MAX_PIXELS)
    except ValueError:
        raise KtError(
            f"KT_MAX_PIXELS={os.environ['KT_MAX_PIXELS']!r} is not a number of pixels"
        ) from None


def probe(path: str) -> str | None:
    """Why an image file cannot be used (missing, not an image, over the pixel budget), or None.

    Reads the header only: cheap enough to check a whole training set with --skip-bad-images."""
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        return f"{path} is a folder, not an image" if os.path.isdir(path) else f"{path} is missing"
    try:
        with Image.open(path) as im:
            w, h = im.size
    except Image.DecompressionBombError:
        return f"{path} is over the pixel budget of {max_pixels():,} (KT_MAX_PIXELS)"
    except (OSError, UnidentifiedImageError, ValueError):
        return f"{path} is corrupt or not an image"
    if w * h > max_pixels():
        return (
            f"{path} has {w}x{h} pixels, over the pixel budget of {max_pixels():,} (KT_MAX_PIXELS)"
        )
    return None


def cache_suffix(fmt: str, channels: int) -> str:
    """The file suffix of a cache entry: JPEG holds 1 or 3 channels, so other counts (HPA's 4) use PNG."""
    if fmt not in CACHE_FORMATS:
        raise KtError(
            f"--format {fmt!r} is not a cache format; choose one of: {', '.join(CACHE_FORMATS)}"
        )
    return CACHE_FORMATS["png"] if fmt == "jpeg" and channels not in (1, 3) else CACHE_FORMATS[fmt]


def _read_raw(path: str) -> np.ndarray:
    try:
        img = np.load(path, allow_pickle=False)  # a plain uint8 array: no object can come out of it
    except (OSError, ValueError, EOFError) as e:
        raise KtError(
            f"cache entry {path} is damaged ({type(e).__name__}); run kt prepare again (it rebuilds "
            "bad cache entries)"
        ) from None
    if img.dtype != np.uint8 or img.ndim != 3:
        raise KtError(f"cache entry {path} is not an image array; run kt prepare again")
    return img


class BadImage(KtError):
    """An image that cannot be used: `problem` says what is wrong with the file, the message adds the
    fix (so a caller that skips it records the problem without advice for a flag it lacks)."""

    def __init__(self, problem: str, fix: str | None = None):
        # one argument: the whole message, as a DataLoader worker or pickle rebuilds the error
        super().__init__(f"image {problem}; {fix}" if fix else problem)
        self.problem = problem


def _decode(path: str, flags: int) -> np.ndarray:
    if path.endswith(CACHE_SUFFIXES):
        fix = "run kt prepare again (it rebuilds bad cache entries)"
    else:
        fix = "replace it or pass --skip-bad-images"
        problem = probe(path)  # before decoding: a bomb must never reach the decoder
        if problem:
            raise BadImage(problem, fix)
    try:
        # np.fromfile + imdecode also handles non-ASCII paths
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise BadImage(f"{path} cannot be read ({e.strerror})", fix) from None
    if data[:8].tobytes() == PNG_SIGNATURE:
        # as imagecodecs decodes PNGs (the fast path): a PNG's eXIf orientation is left alone
        flags = flags | cv2.IMREAD_IGNORE_ORIENTATION if flags >= 0 else flags
    img = cv2.imdecode(data, flags) if data.size else None
    if img is None:
        raise BadImage(f"{path} is corrupt or not an image", fix)
    return img


# PNG colour types (the IHDR chunk, bytes 24-25 of the file: bit depth, colour type) the fast path takes
PNG_GRAY, PNG_RGB, PNG_RGBA = 0, 2, 6


@functools.cache
def _imagecodecs():
    """imagecodecs, or None where it is missing or does not load (a notebook image whose numpy its
    wheel was not built for): OpenCV decodes then."""
    try:
        import imagecodecs

        imagecodecs.png_decode  # noqa: B018 - a build without the PNG codec counts as missing
    except Exception:  # noqa: BLE001 - ImportError, or whatever a broken extension raises
        return None
    return imagecodecs


def png_decoder() -> str:
    """Which library decodes 8-bit PNGs here (the notebook prints it and its manifest records it)."""
    ic = _imagecodecs()
    return f"imagecodecs {ic.__version__}" if ic else f"OpenCV {cv2.__version__} (no imagecodecs)"


def _fast_png(path: str, gray: bool) -> np.ndarray | None:
    """An 8-bit grey, RGB or RGBA PNG decoded by imagecodecs (libpng: 1.38x OpenCV's
    images per CPU-second on APTOS-size PNGs, benchmarks/decoders.py) as RGB, or its one grey plane;
    None where it does not apply (another PNG kind, imagecodecs not installed, a file the probe
    refuses), and OpenCV decodes it, as it does without imagecodecs."""
    imagecodecs = _imagecodecs()
    if imagecodecs is None or not path.lower().endswith(".png") or probe(path):
        return None
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError:
        return None
    if len(data) < 26 or data[24] != 8:
        return None
    kind = int(data[25])
    if kind not in ((PNG_GRAY,) if gray else (PNG_RGB, PNG_RGBA)):
        return None
    try:
        # the array itself, not a bytes copy of it: the copy (14 MB for an APTOS photo) was mapped and faulted
        # in afresh for every image, 4,660 page faults and about 10 % of the notebook predictor's CPU time
        img = imagecodecs.png_decode(data)
    except Exception:  # noqa: BLE001 - imagecodecs' own error kinds: OpenCV names the file
        return None
    if img.dtype != np.uint8 or img.ndim != (2 if gray else 3):
        return None
    return img if gray else np.ascontiguousarray(img[..., :3])


def _decode_reduced(path: str, size: int) -> np.ndarray | None:
    """JPEG decoded at a reduced DCT scale (PIL draft), still at least `size` on the short side.
    Decoding a 6000x4000 photo at 1/8 scale is several times faster than a full decode."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.format != "JPEG" or im.size[0] * im.size[1] > max_pixels():
                return None
            w, h = im.size
            scale = min(w, h) / size
            if scale >= 2:
                im.draft("RGB", (int(w / scale) + 1, int(h / scale) + 1))
            rgb = im.convert("RGB")
            # the EXIF orientation applied, as OpenCV's decode (every other path) applies it
            with warnings.catch_warnings():  # a damaged EXIF block is no reason to warn per image
                warnings.simplefilter("ignore")
                turned = im.getexif().get(ORIENTATION, 1) != 1
            return np.asarray(ImageOps.exif_transpose(rgb) if turned else rgb)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None  # let the OpenCV path name the corrupt file


def read_image(paths: Sequence[str], reduce_to: int | None = None) -> np.ndarray:
    """Read one sample as an HxWxC uint8 array.

    One path: a colour image, converted from OpenCV's BGR to RGB (timm models expect RGB); a cache file
    of kt prepare in the channels it was given. Several paths: single-channel files stacked in the order
    given (HPA: red, green, blue, yellow). `reduce_to`: JPEGs may be decoded at a reduced scale, keeping >= that side.
    """
    if len(paths) == 1:
        if paths[0].endswith(CACHE_SUFFIXES):
            if paths[0].endswith(CACHE_FORMATS["raw"]):
                return _read_raw(paths[0])
            img = _decode(paths[0], cv2.IMREAD_UNCHANGED)
            if paths[0].endswith(CACHE_FORMATS["jpeg"]) and img.ndim == 3:
                # written from BGR, as JPEG's colour model expects
                img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
            return img[..., None] if img.ndim == 2 else img
        if reduce_to and paths[0].lower().endswith((".jpg", ".jpeg")):
            fast = _decode_reduced(paths[0], reduce_to)
            if fast is not None:
                return fast
        fast = _fast_png(paths[0], gray=False)
        if fast is not None:
            return fast
        img = _decode(paths[0], cv2.IMREAD_COLOR)
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    planes = [
        p if p is not None else _decode(path, cv2.IMREAD_GRAYSCALE)
        for path, p in ((path, _fast_png(path, gray=True)) for path in paths)
    ]
    shape = planes[0].shape
    if any(plane.shape != shape for plane in planes):  # e.g. one channel file saved at another size
        planes = [cv2.resize(x, shape[::-1], interpolation=cv2.INTER_AREA) for x in planes]
    return np.stack(planes, axis=-1)


def resize(img: np.ndarray, size: int) -> np.ndarray:
    """Square resize to size x size. INTER_AREA when shrinking (no aliasing), linear when growing."""
    if img.shape[0] == size and img.shape[1] == size:
        return img
    shrinking = img.shape[0] > size or img.shape[1] > size
    out = cv2.resize(
        img, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    )
    return out[..., None] if out.ndim == 2 else out


def center_crop(img: np.ndarray, size: int) -> np.ndarray:
    """The shorter side to `size` (aspect kept), then the central size x size: torchvision's
    Resize(size) + CenterCrop(size), the study's evaluation transform. The long side is truncated and
    the crop offset rounded as torchvision does (transforms/functional.py: _compute_resized_output_size,
    center_crop)."""
    h, w = img.shape[:2]
    if min(h, w) != size:
        short, long = (h, w) if h <= w else (w, h)
        new_long = int(size * long / short)
        nh, nw = (size, new_long) if h <= w else (new_long, size)
        shrinking = min(h, w) > size
        img = cv2.resize(
            img, (nw, nh), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        )
        img = img[..., None] if img.ndim == 2 else img
        h, w = nh, nw
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return img[top : top + size, left : left + size]


def fit_to(img: np.ndarray, size: int, mode: str = "squash") -> np.ndarray:
    """The evaluation resize a model was trained with: `squash` (size x size) or `center_crop`."""
    return center_crop(img, size) if mode == "center_crop" else resize(img, size)


def resize_short_side(img: np.ndarray, size: int) -> np.ndarray:
    """Shrink so the shorter side is `size` (aspect kept); never enlarge. What the cache stores, so
    random crops at training time still see the whole field of view."""
    h, w = img.shape[:2]
    if min(h, w) <= size:
        return img
    scale = size / min(h, w)
    out = cv2.resize(
        img,
        (max(size, round(w * scale)), max(size, round(h * scale))),
        interpolation=cv2.INTER_AREA,
    )
    return out[..., None] if out.ndim == 2 else out


def fundus_crop(img: np.ndarray, threshold: int = 10) -> np.ndarray:
    """Trim the black border around a fundus photo (rows and columns whose brightest pixel is dark).
    The maxima are taken over each row of the (H, W*C) view, then per column over its channels: numpy
    reduces a contiguous axis with SIMD, so this is 4 ms where the per-pixel channel maximum first took
    170 (an APTOS-size 3216x2136 photo, benchmarks/notebook_predictor.py's machine)."""
    h, w = img.shape[:2]
    flat = img.reshape(h, -1)
    rows, cols = (
        np.flatnonzero(flat.max(axis=1) > threshold),
        np.flatnonzero(flat.max(axis=0).reshape(w, -1).max(axis=1) > threshold),
    )
    if len(rows) < 8 or len(cols) < 8:
        return img  # nearly black: keep as is rather than crop to nothing
    return img[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def write_cache(path: str, img: np.ndarray) -> None:
    """Write a cache entry in the format its suffix names, for read_image to return the same channels."""
    with atomic_path(path) as tmp:
        if path.endswith(CACHE_FORMATS["raw"]):
            with open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(img), allow_pickle=False)
            return
        jpeg = path.endswith(CACHE_FORMATS["jpeg"])
        if jpeg and img.shape[-1] == 3:
            img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
        ok, data = cv2.imencode(
            ".jpg" if jpeg else ".png",
            img,
            JPEG_PARAMS if jpeg else [cv2.IMWRITE_PNG_COMPRESSION, 1],
        )
        if not ok:
            raise KtError(f"could not encode {path}")
        tmp.write_bytes(data.tobytes())


def to_chw(img: np.ndarray) -> np.ndarray:
    """HxWxC uint8 → CxHxW uint8, contiguous (the model input layout; normalisation is in the model)."""
    return np.ascontiguousarray(img.transpose(2, 0, 1))
