"""APTOS 2019 Blindness Detection: ordinal 0-4, quadratic weighted kappa, code competition.

Layout (docs/competitions.md): train.csv (id_code,diagnosis), test.csv (id_code),
sample_submission.csv (id_code,diagnosis), train_images/{id_code}.png, test_images/{id_code}.png.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import KtError
from ..protocol import PaperRecipe
from ..tasks import Task
from .base import Competition, KaggleFacts, check_files, parse_int_labels, read_csv

GRADES = ["No DR", "Mild", "Moderate", "Severe", "Proliferative DR"]


class Aptos(Competition):
    def read(self, data_dir: Path, split: str, skip_bad_images: bool = False) -> pd.DataFrame:
        data_dir = Path(data_dir)
        path = data_dir / f"{split}.csv"
        columns = ["id_code", "diagnosis"] if split == "train" else ["id_code"]
        df = read_csv(path, columns, f"APTOS {split}.csv")
        table = pd.DataFrame(
            {
                "id": df["id_code"].to_numpy(),
                "paths": [(str(data_dir / f"{split}_images" / f"{i}.png"),) for i in df["id_code"]],
                "source": "competition",
            }
        )
        if split == "train":
            table["target"] = parse_int_labels(df["diagnosis"], path, "diagnosis", len(GRADES))
        return check_files(table, skip_bad_images)

    def read_external(self, source: str, external_dir: Path) -> pd.DataFrame:
        """dr2015: trainLabels.csv (image,level) with train/{image}.jpeg, plus, when present, the later
        released retinopathy_solution.csv (image,level,Usage) with test/{image}.jpeg. Same 0-4 scale.
        Rows whose image is missing are dropped and counted (the set is large and often partial)."""
        if source != "dr2015":
            return super().read_external(source, external_dir)
        external_dir = Path(external_dir)
        parts = []
        for csv_name, folder in (
            ("trainLabels.csv", "train"),
            ("retinopathy_solution.csv", "test"),
        ):
            path = external_dir / csv_name
            if not path.is_file():
                if csv_name == "trainLabels.csv":
                    raise KtError(
                        f"--external-dir dr2015={external_dir}: trainLabels.csv not found"
                    )
                continue
            df = read_csv(path, ["image", "level"], f"DR2015 {csv_name}")
            parts.append(
                pd.DataFrame(
                    {
                        "id": "dr2015:" + df["image"],
                        "paths": [(str(external_dir / folder / f"{i}.jpeg"),) for i in df["image"]],
                        "source": "dr2015",
                        "target": parse_int_labels(df["level"], path, "level", len(GRADES)),
                        # left and right eye of one patient (10_left, 10_right) stay together
                        "group": "dr2015:" + df["image"].str.rsplit("_", n=1).str[0],
                    }
                )
            )
        return check_files(pd.concat(parts, ignore_index=True), skip_missing=True)


APTOS = Aptos(
    # released aptos.py: BGR, h flip; sample_train.py: CE
    paper=PaperRecipe(bgr=True, flips="h", loss="ce"),
    name="aptos",
    synthetic="aptos",
    title="APTOS 2019 Blindness Detection",
    task=Task("ordinal", num_classes=len(GRADES), metric="qwk"),
    kaggle=KaggleFacts(
        slug="aptos2019-blindness-detection",
        submit_via="notebook",
        hidden_test_images=13000,  # the private test set, about 13,000 images (docs/competitions.md)
    ),
    id_column="id_code",
    target_column="diagnosis",
    class_names=GRADES,
    external={"dr2015": "2015 Diabetic Retinopathy Detection (EyePACS), same 0-4 scale"},
)
