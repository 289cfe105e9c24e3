"""Cassava Leaf Disease Classification: 5 classes, accuracy, code competition (notebook).

Layout (docs/competitions.md): train.csv (image_id WITH .jpg, label), train_images/, test_images/,
sample_submission.csv (image_id,label; lists only the one public test image), and
label_num_to_disease_map.json for class names. The hidden test set replaces test_images/ when the
notebook is scored, so the test ids are the files in test_images/, not the sample's rows.
"""

from __future__ import annotations

import json
from pathlib import Path

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


CASSAVA = Cassava(
    paper=PaperRecipe(bgr=False, flips="hv"),  # datasets/cassava.py: converted to RGB, both flips
    name="cassava",
    synthetic="cassava",
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
