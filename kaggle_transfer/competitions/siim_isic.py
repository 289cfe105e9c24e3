"""SIIM-ISIC Melanoma Classification (2020): binary, ROC AUC, CSV upload.

Layout (docs/competitions.md): train.csv (image_name,patient_id,sex,age_approx,
anatom_site_general_challenge,diagnosis,benign_malignant,target), test.csv (the first five),
sample_submission.csv (image_name,target), jpeg/train/{image_name}.jpg, jpeg/test/….
The community's resized copies keep images in train/ and test/ and add `tfrecord` (a patient-grouped,
stratified fold id; -1 marks duplicates, dropped), `width`, `height`; both layouts are read.
Rows are grouped by patient: no patient is on both sides of a split.
External `isic2019`: ISIC_2019_Training_GroundTruth.csv (image,MEL,NV,...; one-hot), the metadata CSV
(lesion_id groups) and ISIC_2019_Training_Input/{image}.jpg; MEL → 1, everything else → 0. Or the
community's resized 2019 copy, the layout the study used (melanoma-2019/): train.csv with
image_name,...,target,tfrecord and train/{image_name}.jpg. Its tfrecord shards take part in the
paper split (data/splits.py paper_shards): the study validated on 2020 and 2019 shards together.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import KtError
from ..protocol import PaperRecipe
from ..tasks import Task
from .base import Competition, KaggleFacts, check_files, parse_int_labels, read_csv, with_meta

TRAIN_COLUMNS = ["image_name", "patient_id", "sex", "age_approx", "anatom_site_general_challenge"]


def image_folder(data_dir: Path, split: str) -> Path:
    """jpeg/<split>/ in the official layout, <split>/ in the resized copies."""
    official = data_dir / "jpeg" / split
    return official if official.is_dir() else data_dir / split


class SiimIsic(Competition):
    def read(self, data_dir: Path, split: str, skip_bad_images: bool = False) -> pd.DataFrame:
        data_dir = Path(data_dir)
        path = data_dir / f"{split}.csv"
        columns = TRAIN_COLUMNS + (["target"] if split == "train" else [])
        df = read_csv(path, columns, f"SIIM-ISIC {split}.csv")
        if "tfrecord" in df.columns:
            # duplicates marked -1
            df = df[df["tfrecord"].astype(str) != "-1"].reset_index(drop=True)
        folder = image_folder(data_dir, split)
        table = pd.DataFrame(
            {
                "id": df["image_name"].to_numpy(),
                "paths": [(str(folder / f"{name}.jpg"),) for name in df["image_name"]],
                "source": "competition",
                "group": df["patient_id"].replace("", np.nan).fillna(df["image_name"]).to_numpy(),
            }
        )
        with_meta(table, df, self.meta_columns)
        if split == "train":
            table["target"] = parse_int_labels(df["target"], path, "target", 2)
            if "tfrecord" in df.columns:
                table["official_fold"] = pd.to_numeric(df["tfrecord"]).astype(int).to_numpy()
        return check_files(table, skip_bad_images)

    def read_external(self, source: str, external_dir: Path) -> pd.DataFrame:
        if source != "isic2019":
            return super().read_external(source, external_dir)
        external_dir = Path(external_dir)
        official = (external_dir / "ISIC_2019_Training_GroundTruth.csv").is_file()
        if (external_dir / "train.csv").is_file() and not official:
            return self._community_2019(external_dir)
        truth_path = external_dir / "ISIC_2019_Training_GroundTruth.csv"
        truth = read_csv(truth_path, ["image", "MEL"], "ISIC 2019 ground truth")
        meta_path = external_dir / "ISIC_2019_Training_Metadata.csv"
        lesion = (
            read_csv(meta_path, ["image", "lesion_id"], "ISIC 2019 metadata").set_index("image")[
                "lesion_id"
            ]
            if meta_path.is_file()
            else pd.Series(dtype=str)
        )
        mel = pd.to_numeric(truth["MEL"], errors="coerce")
        if mel.isna().any() or not mel.isin([0, 1]).all():
            raise KtError(f"{truth_path}: MEL must be 0 or 1 (one-hot floats)")
        folder = external_dir / "ISIC_2019_Training_Input"
        groups = truth["image"].map(lesion).replace("", np.nan).fillna(truth["image"])
        table = pd.DataFrame(
            {
                "id": truth["image"].to_numpy(),
                "paths": [(str(folder / f"{name}.jpg"),) for name in truth["image"]],
                "source": "isic2019",
                "group": ("isic2019:" + groups).to_numpy(),
                "target": mel.astype(int).to_numpy(),
            }
        )
        return check_files(table, skip_missing=True)

    def _community_2019(self, external_dir: Path) -> pd.DataFrame:
        path = external_dir / "train.csv"
        df = read_csv(path, ["image_name", "target", "tfrecord"], "ISIC 2019 community train.csv")
        groups = df["patient_id"] if "patient_id" in df.columns else pd.Series([""] * len(df))
        table = pd.DataFrame(
            {
                "id": df["image_name"].to_numpy(),
                "paths": [
                    (str(external_dir / "train" / f"{name}.jpg"),) for name in df["image_name"]
                ],
                "source": "isic2019",
                "group": (
                    "isic2019:" + groups.replace("", np.nan).fillna(df["image_name"])
                ).to_numpy(),
                "target": parse_int_labels(df["target"], path, "target", 2),
                "official_fold": pd.to_numeric(df["tfrecord"], errors="coerce")
                .fillna(-1)
                .astype(int)
                .to_numpy(),
            }
        )
        return check_files(table, skip_missing=True)


SIIM_ISIC = SiimIsic(
    # datasets/melanoma.py: cv2 BGR, both flips; l.19: np.random.seed(23) before the shard draw
    paper=PaperRecipe(bgr=True, flips="hv", seed=23),
    name="siim_isic",
    synthetic="siim_isic",
    title="SIIM-ISIC Melanoma Classification",
    task=Task("binary", num_classes=2, metric="roc_auc"),
    kaggle=KaggleFacts(slug="siim-isic-melanoma-classification", submit_via="csv"),
    id_column="image_name",
    target_column="target",
    class_names=["benign", "malignant"],
    external={"isic2019": "ISIC 2019 challenge training set (25,331 images); MEL → malignant"},
    # train.csv and test.csv both carry them; sex and site may be blank (the 1st place fed them to a
    # metadata branch, as --set meta=true does)
    meta_columns={
        "age_approx": "numeric",
        "sex": "category",
        "anatom_site_general_challenge": "category",
    },
)
