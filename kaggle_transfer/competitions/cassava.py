"""Cassava Leaf Disease Classification: 5 classes, accuracy, code competition (notebook).

Layout (docs/competitions.md): train.csv (image_id WITH .jpg, label), train_images/, test_images/,
sample_submission.csv (image_id,label; lists only the one public test image), and
label_num_to_disease_map.json for class names. The hidden test set replaces test_images/ when the
notebook is scored, so the test ids are the files in test_images/, not the sample's rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import KtError
from ..protocol import PaperRecipe
from ..tasks import Task
from .base import Competition, KaggleFacts, check_files, parse_int_labels, read_csv

DISEASES = [
    "Cassava Bacterial Blight (CBB)",
    "Cassava Brown Streak Disease (CBSD)",
    "Cassava Green Mottle (CGM)",
    "Cassava Mosaic Disease (CMD)",
    "Healthy",
]


def check_label_map(data_dir: Path) -> None:
    """The class names kt uses must be the ones the competition's JSON gives, in the same order."""
    path = Path(data_dir) / "label_num_to_disease_map.json"
    if path.is_file():
        mapping = json.loads(path.read_text())
        names = [mapping.get(str(k)) for k in range(len(DISEASES))]
        if names != DISEASES:
            raise KtError(f"{path} maps labels to {names}; kt expects {DISEASES}")


class Cassava(Competition):
    def read(self, data_dir: Path, split: str, skip_bad_images: bool = False) -> pd.DataFrame:
        return (self._train if split == "train" else self._test)(Path(data_dir), skip_bad_images)

    def _train(self, data_dir: Path, skip_bad_images: bool) -> pd.DataFrame:
        data_dir = Path(data_dir)
        check_label_map(data_dir)
        path = data_dir / "train.csv"
        df = read_csv(path, ["image_id", "label"], "Cassava train.csv")
        table = pd.DataFrame(
            {
                "id": df["image_id"].to_numpy(),
                "paths": [(str(data_dir / "train_images" / i),) for i in df["image_id"]],
                "source": "competition",
                "target": parse_int_labels(df["label"], path, "label", len(DISEASES)),
            }
        )
        return check_files(table, skip_bad_images)

    def _test(self, data_dir: Path, skip_bad_images: bool) -> pd.DataFrame:
        folder = Path(data_dir) / "test_images"
        if not folder.is_dir():
            raise KtError(f"Cassava test_images/ not found in {data_dir}; check --data-dir")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        return pd.DataFrame(
            {
                "id": [p.name for p in files],
                "paths": [(str(p),) for p in files],
                "source": "competition",
            }
        )

    def test_ids(self, data_dir: Path) -> list[str]:
        return list(self.read_test(data_dir)["id"])


# --- a synthetic layout of these files, for kt demo and the tests (test_labels.csv holds the
# hidden answers Kaggle never gives, so the demo can score its test predictions) -----------------


def _leaf(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    import cv2  # only the synthetic layouts draw images

    img = np.zeros((size, size, 3), np.uint8)
    img[:] = (
        int(rng.uniform(40, 80)),
        int(rng.uniform(60, 90)),
        int(rng.uniform(40, 70)),
    )  # soil, BGR
    cv2.ellipse(
        img,
        (size // 2, size // 2),
        (size // 3, size // 5),
        float(rng.uniform(0, 180)),
        0,
        360,
        (40, int(rng.uniform(140, 180)), 50),
        -1,
    )
    # disease colour
    spot = [(30, 60, 140), (20, 120, 180), (90, 200, 200), (160, 220, 160), None][label]
    if spot is not None:
        for _ in range(int(rng.integers(3, 7))):  # spots large enough to survive a resize to 32 px
            c = tuple(int(v) for v in rng.integers(size // 3, 2 * size // 3, 2))
            cv2.circle(img, c, max(2, size // 12), spot, -1)
    return np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)


def make_cassava(
    out_dir: str | Path,
    *,
    n_train: int = 200,
    n_test: int = 50,
    image_size: int = 64,
    seed: int = 0,
) -> Path:
    """train.csv (image_id with .jpg, label), train_images/, test_images/, a one-row sample submission."""
    import cv2  # only the synthetic layouts draw images

    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    shares = np.array([1087, 2189, 2386, 13158, 2577]) / 21397  # the real class counts
    labels = rng.choice(5, size=n_train + n_test, p=shares)
    ids = [f"{v}.jpg" for v in rng.choice(10**10 - 10**9, n_train + n_test, replace=False) + 10**9]
    for split in ("train_images", "test_images"):
        (out / split).mkdir(parents=True, exist_ok=True)
    for i, (image_id, label) in enumerate(zip(ids, labels, strict=True)):
        folder = out / ("train_images" if i < n_train else "test_images")
        cv2.imwrite(str(folder / image_id), _leaf(rng, int(label), image_size))
    pd.DataFrame({"image_id": ids[:n_train], "label": labels[:n_train]}).to_csv(
        out / "train.csv", index=False
    )
    pd.DataFrame({"image_id": ids[n_train : n_train + 1], "label": 4}).to_csv(
        out / "sample_submission.csv", index=False
    )
    pd.DataFrame({"image_id": ids[n_train:], "label": labels[n_train:]}).to_csv(
        out / "test_labels.csv", index=False
    )
    (out / "label_num_to_disease_map.json").write_text(
        json.dumps({str(k): v for k, v in enumerate(DISEASES)})
    )
    return out


CASSAVA = Cassava(
    paper=PaperRecipe(bgr=False, flips="hv"),  # datasets/cassava.py: converted to RGB, both flips
    name="cassava",
    synthetic=make_cassava,
    title="Cassava Leaf Disease Classification",
    task=Task("multiclass", num_classes=len(DISEASES), metric="accuracy"),
    kaggle=KaggleFacts(
        slug="cassava-leaf-disease-classification",
        submit_via="notebook",
        hidden_test_images=15000,  # the hidden test set, about 15,000 images (docs/competitions.md)
    ),
    id_column="image_id",
    target_column="label",
    class_names=DISEASES,
)
