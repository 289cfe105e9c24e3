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


# --- a synthetic layout of these files, for kt demo and the tests (test_labels.csv holds the
# hidden answers Kaggle never gives, so the demo can score its test predictions) -----------------


def _lesion(rng: np.random.Generator, malignant: bool, size: int) -> np.ndarray:
    """Skin-coloured background with a mole; malignant ones are larger, darker and irregular."""
    import cv2  # only the synthetic layouts draw images

    skin = np.array([rng.uniform(150, 200), rng.uniform(160, 200), rng.uniform(200, 240)])  # BGR
    img = np.clip(skin + rng.normal(0, 8, (size, size, 3)), 0, 255).astype(np.uint8)
    centre = (size // 2 + int(rng.integers(-size // 10, size // 10 + 1)),) * 2
    # the classes overlap in size, colour and shape, so AUC is high but not perfect
    radius = size * (rng.uniform(0.12, 0.26) if malignant else rng.uniform(0.07, 0.19))
    shade = rng.uniform(0.55, 0.9) if malignant else rng.uniform(0.7, 1.0)
    colour = tuple(int(v * shade) for v in (90, 115, 150))
    points = [
        (
            int(centre[0] + radius * rng.uniform(0.75 if malignant else 0.9, 1.2) * np.cos(a)),
            int(centre[1] + radius * rng.uniform(0.75 if malignant else 0.9, 1.1) * np.sin(a)),
        )
        for a in np.linspace(0, 2 * np.pi, 12, endpoint=False)
    ]
    cv2.fillPoly(img, [np.array(points, np.int32)], colour)
    return img


def make_siim_isic(
    out_dir: str | Path,
    *,
    n_train: int = 200,
    n_test: int = 50,
    image_size: int = 64,
    seed: int = 0,
    layout: str = "official",
) -> Path:
    """The official layout (jpeg/train, jpeg/test) or the resized copies' (train/, test/, tfrecord)."""
    import cv2  # only the synthetic layouts draw images

    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    rows, patient = [], 0
    while len(rows) < n_train + n_test:
        patient += 1
        risk = rng.random() < 0.25
        for _ in range(int(rng.integers(1, 5))):
            malignant = bool(risk and rng.random() < 0.6)
            rows.append(
                {
                    "image_name": f"ISIC_{len(rows) + 1000000:07d}",
                    "patient_id": f"IP_{patient:07d}",
                    "sex": rng.choice(["male", "female", ""]),
                    "age_approx": str(int(rng.integers(3, 9)) * 10),
                    "anatom_site_general_challenge": rng.choice(
                        ["torso", "lower extremity", "head/neck", ""]
                    ),
                    "diagnosis": "melanoma" if malignant else "nevus",
                    "benign_malignant": "malignant" if malignant else "benign",
                    "target": int(malignant),
                }
            )
    df = pd.DataFrame(rows[: n_train + n_test])
    train, test = df.iloc[:n_train].copy(), df.iloc[n_train:].copy()
    for split, part in (("train", train), ("test", test)):
        folder = out / ("jpeg" if layout == "official" else "") / split
        folder.mkdir(parents=True, exist_ok=True)
        for name, target in zip(part["image_name"], part["target"], strict=True):
            cv2.imwrite(str(folder / f"{name}.jpg"), _lesion(rng, bool(target), image_size))
    if layout == "resized":
        codes = {p: i % 15 for i, p in enumerate(train["patient_id"].unique())}
        train["tfrecord"] = train["patient_id"].map(codes)
        train.loc[train.index[:2], "tfrecord"] = -1  # duplicates the community marked
        train["width"], train["height"] = image_size, image_size
    train.to_csv(out / "train.csv", index=False)
    test.iloc[:, :5].to_csv(out / "test.csv", index=False)
    test[["image_name"]].assign(target=0.0).to_csv(out / "sample_submission.csv", index=False)
    test[["image_name", "target"]].to_csv(out / "test_labels.csv", index=False)
    return out


def make_isic2019(out_dir: str | Path, n: int = 60, image_size: int = 64, seed: int = 2) -> Path:
    """The ISIC 2019 challenge's layout: ISIC_2019_Training_GroundTruth.csv (image, one-hot MEL, NV,
    ...), ISIC_2019_Training_Metadata.csv (image, lesion_id, ...) and ISIC_2019_Training_Input/."""
    import cv2  # only the synthetic layouts draw images

    out = Path(out_dir)
    folder = out / "ISIC_2019_Training_Input"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = [f"ISIC_{i:07d}" for i in range(n)]
    malignant = rng.random(n) < 0.3
    for name, bad in zip(names, malignant, strict=True):
        cv2.imwrite(str(folder / f"{name}.jpg"), _lesion(rng, bool(bad), image_size))
    mel = malignant.astype(float)
    pd.DataFrame({"image": names, "MEL": mel, "NV": 1.0 - mel}).to_csv(
        out / "ISIC_2019_Training_GroundTruth.csv", index=False
    )
    pd.DataFrame(
        {"image": names, "age_approx": 50, "lesion_id": [f"BCN_{i // 2:07d}" for i in range(n)]}
    ).to_csv(out / "ISIC_2019_Training_Metadata.csv", index=False)
    return out


SIIM_ISIC = SiimIsic(
    # datasets/melanoma.py: cv2 BGR, both flips; l.19: np.random.seed(23) before the shard draw
    # the study's Melanoma split holds the 2019 challenge's shards beside 2020's (datasets/melanoma.py),
    # and sample_train.py trains two-class cross-entropy
    paper=PaperRecipe(bgr=True, flips="hv", seed=23, loss="ce", external=("isic2019",)),
    name="siim_isic",
    synthetic=make_siim_isic,
    synthetic_external={"isic2019": make_isic2019},
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
