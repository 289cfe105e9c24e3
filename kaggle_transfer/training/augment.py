"""Training augmentation presets by name, built from albumentations.

Evaluation never uses these: it is `images.fit_to`, shared with ONNX inference.
"""

from __future__ import annotations

import os

# albumentations asks PyPI for a newer version at import: a network call (and a stall with the internet
# off, as in Kaggle notebooks). kt never wants it.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import cv2  # noqa: E402

from ..errors import KtError

PRESETS = ("none", "paper", "heavy", "randaugment", "augmix")


class TimmPolicy(A.ImageOnlyTransform):
    """timm's RandAugment or AugMix (PIL-based) inside an albumentations pipeline, on uint8 RGB."""

    def __init__(self, policy: str, p: float = 1.0):
        super().__init__(p=p)
        from timm.data.auto_augment import augment_and_mix_transform, rand_augment_transform

        hparams = {"translate_const": 100, "img_mean": (124, 116, 104)}
        self.policy = policy
        self.op = (
            rand_augment_transform("rand-m9-mstd0.5-inc1", hparams)
            if policy == "randaugment"
            else augment_and_mix_transform("augmix-m5-w3", hparams)
        )

    def apply(self, img, **params):
        import numpy as np
        from PIL import Image

        return np.asarray(self.op(Image.fromarray(img)), dtype=np.uint8)

    def get_transform_init_args_names(self):
        return ("policy",)


def build_train_transform(
    preset: str, size: int, channels: int = 3, flips: str = "h"
) -> A.Compose | None:
    """`paper`: the study's random-resized-crop (scale 0.65-1) and `flips` (horizontal by default; under
    --protocol paper the released loader's per dataset: none, h or hv).
    `heavy`: plus vertical flip, rotation/scale/shift and colour jitter, as the APTOS winners used.
    `randaugment` / `augmix`: paper plus timm's RandAugment (m9) or AugMix (m5, width 3).
    `none`: no augmentation (plain resize)."""
    if preset == "none":
        return None
    crop = A.RandomResizedCrop(size=(size, size), scale=(0.65, 1.0), interpolation=cv2.INTER_AREA)
    if preset == "paper":
        return A.Compose(
            [
                crop,
                *([A.HorizontalFlip(p=0.5)] if "h" in flips else []),
                *([A.VerticalFlip(p=0.5)] if "v" in flips else []),
            ]
        )
    if preset == "heavy":
        # Hue/saturation jitter is defined for RGB only; 4-channel inputs get brightness/contrast
        colour = (
            A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05, p=0.8)
            if channels == 3
            else A.RandomBrightnessContrast(0.3, 0.3, p=0.8)
        )
        return A.Compose(
            [
                crop,
                A.HorizontalFlip(p=0.5),
                A.VerticalFlip(p=0.5),
                A.Affine(
                    rotate=(-180, 180), scale=(0.9, 1.1), translate_percent=(-0.05, 0.05), p=0.7
                ),
                colour,
            ]
        )
    if preset in ("randaugment", "augmix"):
        if channels != 3:
            raise KtError(
                f"--augment {preset} is defined for RGB images; use paper or heavy for {channels} channels"
            )
        return A.Compose([crop, A.HorizontalFlip(p=0.5), TimmPolicy(preset)])
    raise KtError(f"unknown augment preset {preset!r}; valid: {', '.join(PRESETS)}")
