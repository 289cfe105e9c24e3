"""Training augmentation presets by name, built from albumentations.

Evaluation never uses these: it is `images.resize`, shared with ONNX inference.
"""

from __future__ import annotations

import albumentations as A
import cv2

from ..errors import KtError

PRESETS = ("none", "paper", "heavy")


def build_train_transform(preset: str, size: int, channels: int = 3) -> A.Compose | None:
    """`paper`: the study's random-resized-crop (scale 0.65-1) and horizontal flip.
    `heavy`: plus vertical flip, rotation/scale/shift and colour jitter, as the APTOS winners used.
    `none`: no augmentation (plain resize)."""
    if preset == "none":
        return None
    crop = A.RandomResizedCrop(size=(size, size), scale=(0.65, 1.0), interpolation=cv2.INTER_AREA)
    if preset == "paper":
        return A.Compose([crop, A.HorizontalFlip(p=0.5)])
    if preset == "heavy":
        # Hue/saturation jitter is defined for RGB only; 4-channel inputs get brightness/contrast
        colour = (A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05, p=0.8) if channels == 3
                  else A.RandomBrightnessContrast(0.3, 0.3, p=0.8))
        return A.Compose([
            crop,
            A.HorizontalFlip(p=0.5),
            A.VerticalFlip(p=0.5),
            A.Affine(rotate=(-180, 180), scale=(0.9, 1.1), translate_percent=(-0.05, 0.05), p=0.7),
            colour,
        ])
    raise KtError(f"unknown augment preset {preset!r}; valid: {', '.join(PRESETS)}")
