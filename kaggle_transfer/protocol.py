"""Preprocessing and optimisation protocols: `kt` (this package's defaults) and `paper` (the study's
released code, per dataset). Torch-free: prediction reads the evaluation resize from the model file.

What `paper` reproduces, from mlfoundations/imagenet-applications-transfer (datasets/*.py and
sample_train.py at fc721b1 / 5210027):

- channel order: the APTOS, CCT-20, HPA and Melanoma loaders read images with `cv2.imread` and never
  convert, so the networks see B, G, R (aptos.py l.25, cct20.py l.46, hpa.py l.25, melanoma.py l.53);
  Cassava converts to RGB (cassava.py l.26) and EuroSAT uses torchvision's ImageFolder (RGB). kt
  reads RGB and, for those four, reverses the channels inside the network, so the ONNX file carries it.
- HPA: `cv2.imread` of the 4-channel RGBY composite drops the fourth (yellow) plane: channels `rgb`.
- normalisation: ImageNet mean/std for every model (each loader's `Normalize(mean, std)`), where kt
  uses each pretrained model's own statistics.
- evaluation: `Resize(size)` of the shorter side, then `CenterCrop(size)`; kt squashes to size x size.
- training flips: horizontal for APTOS and CCT-20; horizontal and vertical for HPA, Melanoma and
  Cassava; none for EuroSAT (eurosat.py l.33-34 commented out). The crop is RandomResizedCrop
  (scale 0.65-1) everywhere, as kt's `augment: paper`.
- optimiser: `optim.AdamW(net.parameters(), ...)` / `optim.SGD(net.parameters(), ...)` decay every
  parameter (kt's default exempts biases and norms); the schedule steps once per epoch, cosine to 0
  (`CosineAnnealingLR(T_max=epochs)`) or x0.1 after epochs 15, 20, 25 (`MultiStepLR`), no warm-up.
- EuroSAT trains at 224 px (eurosat.py l.8); the others at 256; the DeiTs at 224 (study/archs.py).
  APTOS's loss is cross-entropy over the five grades and SIIM-ISIC's over two classes (sample_train.py
  l.119 `nn.CrossEntropyLoss()` on l.150 `net(inputs).view(-1, num_classes)`, for every dataset).
- precision: fp32 (sample_train.py's step, l.144-155, has no autocast or GradScaler): `--amp auto` is
  off; an explicit `--amp bf16` still wins.
- the last partial training batch is kept (sample_train.py l.112, `DataLoader(trainset,
  batch_size=batch_size, shuffle=True, num_workers=16)`: drop_last defaults to False), unless it is a
  single row.
- training crops come from the original images (each loader's `RandomResizedCrop(img_size,
  scale=(0.65, 1.0))` on the decoded file: aptos.py l.67): kt prepare's cache is used only when its short side is at
  least `cache_side(size)`, where the smallest crop (65 % of the area at torchvision's extreme aspect
  ratio 3/4) still has `size` pixels on its short side: 367 px for 256.

Not reproduced: the interpolation (OpenCV area/bilinear here, PIL's antialiased bilinear there) and
the data-loading order; both change pixels and batches, not the protocol.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .errors import KtError

PROTOCOLS = ("kt", "paper")
RESIZES = (
    "squash",
    "center_crop",
)  # evaluation: size x size, or short side to size then the centre
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PaperRecipe:
    """What the study's released loader does for one dataset (see the module docstring)."""

    bgr: bool = False  # the network sees B, G, R (cv2.imread without conversion)
    flips: str = "h"  # training flips: "" | "h" | "hv"
    channels: str | None = None  # input channels when the loader drops some (HPA: rgb)
    size: int = 256  # the input side the study trained at
    loss: str | None = None  # the study's loss where it is not the task's default (APTOS: ce)
    options: tuple[tuple[str, object], ...] = ()  # other config the study's loader implies (CCT-20)
    seed: int = 414  # the seed of the study's split (its released loaders: 414; EuroSAT 42)
    external: tuple[str, ...] = ()  # external sources the study's split holds (SIIM-ISIC: isic2019)


@dataclass(frozen=True)
class Protocol:
    """A run's resolved protocol: everything training, export and prediction must agree on."""

    name: str
    resize: str = "squash"
    flips: str = "h"  # used by `augment: paper`
    bgr: bool = False
    imagenet_stats: bool = False  # ImageNet mean/std instead of the model's own
    decay_all: bool = False  # weight decay on biases and norms too
    per_epoch: bool = False  # the schedule steps once per epoch, to 0, no warm-up
    keeps_last_batch: bool = False  # the last partial training batch trains too

    def describe(self) -> dict[str, Any]:
        """What the run folder and the ONNX metadata record."""
        return {
            "protocol": self.name,
            "resize": self.resize,
            "bgr": self.bgr,
            "mean": list(IMAGENET_MEAN) if self.imagenet_stats else None,
            "std": list(IMAGENET_STD) if self.imagenet_stats else None,
        }


KT = Protocol("kt")


def for_run(cfg, comp) -> Protocol:
    """The protocol of a run config on a competition."""
    if cfg.protocol == "kt":
        return KT
    if cfg.protocol != "paper":
        raise KtError(
            f"protocol={cfg.protocol!r} is not valid; choose one of: {', '.join(PROTOCOLS)}"
        )
    recipe = comp.paper
    spec = channels(cfg, comp)
    n = len(comp.select_channels(spec))
    if recipe.bgr and n != 3:
        raise KtError(
            f"--protocol paper feeds {comp.name} as B, G, R like the study; --set channels={spec} "
            f"gives {n} channels: use channels=rgb"
        )
    return Protocol(
        "paper",
        resize="center_crop",
        flips=recipe.flips,
        bgr=recipe.bgr,
        imagenet_stats=True,
        decay_all=True,
        per_epoch=True,
        keeps_last_batch=True,
    )


PAPER_MIN_SCALE, PAPER_MIN_RATIO = (
    0.65,
    3 / 4,
)  # the release's RandomResizedCrop scale, torchvision's ratio


def amp(cfg) -> str:
    """The run's --amp: `auto` is off under --protocol paper (the study trained in fp32)."""
    return "off" if cfg.amp == "auto" and cfg.protocol == "paper" else cfg.amp


def cache_side(cfg) -> int:
    """The smallest kt prepare cache a run may crop from: its size, or under --protocol paper the side
    whose smallest RandomResizedCrop still has `size` pixels (crops as from the originals)."""
    if cfg.protocol != "paper":
        return cfg.size
    return math.ceil(cfg.size / math.sqrt(PAPER_MIN_SCALE * PAPER_MIN_RATIO))


def channels(cfg, comp) -> str | None:
    """The run's input channels: `--set channels`, else the study's for protocol paper, else all."""
    if cfg.channels:
        return cfg.channels
    return comp.paper.channels if cfg.protocol == "paper" else None


def resize_of(meta: dict[str, Any]) -> str:
    """The evaluation resize a model file records (files from before protocols: squash)."""
    return (meta.get("preprocess") or {}).get("resize", "squash")
