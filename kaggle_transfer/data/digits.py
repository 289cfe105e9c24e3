"""scikit-learn's handwritten digits (UCI optical digits: 1,797 real 8x8 grey images, 10 classes),
written as a Kaggle-shaped folder and described by a competition YAML. Offline: the data ships in
scikit-learn's wheel. Used by `kt demo digits` and by the tests as a real-signal check."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import yaml
from sklearn.model_selection import train_test_split

SPEC = {
    "name": "digits",
    "title": "UCI optical handwritten digits (scikit-learn)",
    "submit_via": "none",
    "task": "multiclass",
    "metric": "accuracy",
    "classes": [str(d) for d in range(10)],
    "train_csv": "train.csv",
    "id_column": "id",
    "target_column": "label",
    "image_pattern": "train_images/{id}.png",
    "test_image_pattern": "test_images/{id}.png",
    "test_csv": "test.csv",
    "sample_submission": "sample_submission.csv",
    "recipe": {
        "arch": "test_resnet",
        "pretrained": False,
        "size": 32,
        "epochs": 10,
        "lr": 0.003,
        "batch_size": 64,
        "augment": "none",
        "workers": 0,
    },
}


def make_digits(
    out_dir: str | Path, test_fraction: float = 0.25, image_size: int = 32, seed: int = 0
) -> Path:
    """Write train.csv, test.csv, sample_submission.csv, test_labels.csv, PNGs and digits.yaml.
    The 8x8 images (values 0-16) are scaled to 0-255 and upscaled to image_size with cubic interpolation."""
    from sklearn.datasets import load_digits

    out = Path(out_dir)
    digits = load_digits()
    ids = np.array([f"d{i:04d}" for i in range(len(digits.target))])
    train_idx, test_idx = train_test_split(
        np.arange(len(ids)), test_size=test_fraction, random_state=seed, stratify=digits.target
    )
    for split, idx in (("train", train_idx), ("test", test_idx)):
        folder = out / f"{split}_images"
        folder.mkdir(parents=True, exist_ok=True)
        for i in idx:
            img = (digits.images[i] * (255 / 16)).astype(np.float32)
            big = np.clip(
                cv2.resize(img, (image_size, image_size), interpolation=cv2.INTER_CUBIC), 0, 255
            )
            cv2.imwrite(str(folder / f"{ids[i]}.png"), big.astype(np.uint8))
    pd.DataFrame({"id": ids[train_idx], "label": digits.target[train_idx]}).to_csv(
        out / "train.csv", index=False
    )
    pd.DataFrame({"id": ids[test_idx]}).to_csv(out / "test.csv", index=False)
    pd.DataFrame({"id": ids[test_idx], "label": 0}).to_csv(
        out / "sample_submission.csv", index=False
    )
    pd.DataFrame({"id": ids[test_idx], "label": digits.target[test_idx]}).to_csv(
        out / "test_labels.csv", index=False
    )
    (out / "digits.yaml").write_text(yaml.safe_dump(SPEC, sort_keys=False))
    return out
