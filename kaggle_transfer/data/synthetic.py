"""Small competition-shaped datasets with a learnable signal, for `kt demo` and the tests.

Each generator writes the competition's real layout (file names, CSV headers, sample submission),
so the adapter under test is the one users run. A file `test_labels.csv`, which Kaggle never
gives, holds the hidden answers so the demo can score its test predictions.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from ..errors import KtError

# Class shares of the real APTOS train set (about 1805/370/999/193/295 of 3662).
APTOS_SHARES = np.array([1805, 370, 999, 193, 295]) / 3662


def _fundus(rng: np.random.Generator, grade: int, size: int) -> np.ndarray:
    """A fundus-like photo: dark background, orange disc, vessels; the grade sets how red the disc is
    and how many lesions it shows, with noise so that neighbouring grades overlap."""
    img = np.zeros((size, size, 3), dtype=np.uint8)
    centre = (size // 2 + int(rng.integers(-size // 16, size // 16 + 1)),) * 2
    radius = int(size * rng.uniform(0.40, 0.47))
    red = np.clip(120 + 22 * grade + rng.normal(0, 16), 0, 255)
    colour = (int(rng.uniform(20, 50)), int(rng.uniform(60, 100)), int(red))  # BGR for OpenCV
    cv2.circle(img, centre, radius, colour, -1)
    for _ in range(3):  # vessels: irrelevant structure the model must ignore
        end = tuple(int(v) for v in rng.integers(0, size, 2))
        cv2.line(img, centre, end, (20, 30, 90), max(1, size // 64))
    for _ in range(int(rng.poisson(3 * grade))):  # lesions
        angle, dist = rng.uniform(0, 2 * np.pi), rng.uniform(0, radius * 0.85)
        spot = (int(centre[0] + dist * np.cos(angle)), int(centre[1] + dist * np.sin(angle)))
        cv2.circle(img, spot, max(1, size // 40), (40, 220, 240) if rng.random() < 0.5 else (10, 10, 60), -1)
    noise = rng.normal(0, 6, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def make_aptos(out_dir: str | Path, n_train: int = 300, n_test: int = 80, image_size: int = 64,
               seed: int = 0) -> Path:
    """Write an APTOS-shaped folder: train.csv, test.csv, sample_submission.csv, train_images/, test_images/."""
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        (out / f"{split}_images").mkdir(parents=True, exist_ok=True)
    n = n_train + n_test
    ids = [f"{v:012x}" for v in rng.choice(16**12, size=n, replace=False)]
    grades = rng.choice(len(APTOS_SHARES), size=n, p=APTOS_SHARES)
    for i, (id_code, grade) in enumerate(zip(ids, grades, strict=True)):
        split = "train" if i < n_train else "test"
        cv2.imwrite(str(out / f"{split}_images" / f"{id_code}.png"), _fundus(rng, int(grade), image_size))
    train = pd.DataFrame({"id_code": ids[:n_train], "diagnosis": grades[:n_train]})
    test = pd.DataFrame({"id_code": ids[n_train:]})
    train.to_csv(out / "train.csv", index=False)
    test.to_csv(out / "test.csv", index=False)
    test.assign(diagnosis=0).to_csv(out / "sample_submission.csv", index=False)
    test.assign(diagnosis=grades[n_train:]).to_csv(out / "test_labels.csv", index=False)
    return out


GENERATORS = {"aptos": make_aptos}


def make(name: str, out_dir: str | Path, **kwargs) -> Path:
    try:
        generator = GENERATORS[name]
    except KeyError:
        raise KtError(f"no synthetic data for {name!r}; available: {', '.join(GENERATORS)}") from None
    return generator(out_dir, **kwargs)
