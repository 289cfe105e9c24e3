"""APTOS 2019 Blindness Detection: ordinal 0-4, quadratic weighted kappa, code competition.

Layout (docs/competitions.md): train.csv (id_code,diagnosis), test.csv (id_code),
sample_submission.csv (id_code,diagnosis), train_images/{id_code}.png, test_images/{id_code}.png.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
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


# --- a synthetic layout of these files, for kt demo and the tests (test_labels.csv holds the
# hidden answers Kaggle never gives, so the demo can score its test predictions) -----------------

# Class shares of the real APTOS train set (about 1805/370/999/193/295 of 3662).
APTOS_SHARES = np.array([1805, 370, 999, 193, 295]) / 3662


def _fundus(
    rng: np.random.Generator, grade: int, size: int, lesions_only: bool = False
) -> np.ndarray:
    """A fundus-like photo: dark background, orange disc, vessels; the grade sets how red the disc is
    and how many lesions it shows, with noise so that neighbouring grades overlap. With lesions_only
    the colour carries no signal: only small lesions do, as in real retinopathy (where input size matters)."""
    import cv2  # only the synthetic layouts draw images

    img = np.zeros((size, size, 3), dtype=np.uint8)
    centre = (size // 2 + int(rng.integers(-size // 16, size // 16 + 1)),) * 2
    radius = int(size * rng.uniform(0.40, 0.47))
    red = np.clip(120 + (0 if lesions_only else 22 * grade) + rng.normal(0, 16), 0, 255)
    colour = (int(rng.uniform(20, 50)), int(rng.uniform(60, 100)), int(red))  # BGR for OpenCV
    cv2.circle(img, centre, radius, colour, -1)
    for _ in range(3):  # vessels: irrelevant structure the model must ignore
        end = tuple(int(v) for v in rng.integers(0, size, 2))
        cv2.line(img, centre, end, (20, 30, 90), max(1, size // 64))
    for _ in range(int(rng.poisson(3 * grade))):  # lesions
        angle, dist = rng.uniform(0, 2 * np.pi), rng.uniform(0, radius * 0.85)
        spot = (int(centre[0] + dist * np.cos(angle)), int(centre[1] + dist * np.sin(angle)))
        cv2.circle(
            img,
            spot,
            max(1, size // 40),
            (40, 220, 240) if rng.random() < 0.5 else (10, 10, 60),
            -1,
        )
    noise = rng.normal(0, 6, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def make_aptos(
    out_dir: str | Path,
    *,
    n_train: int = 300,
    n_test: int = 80,
    image_size: int = 64,
    seed: int = 0,
    lesions_only: bool = False,
) -> Path:
    """Write an APTOS-shaped folder: train.csv, test.csv, sample_submission.csv, train_images/, test_images/."""
    import cv2  # only the synthetic layouts draw images

    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        (out / f"{split}_images").mkdir(parents=True, exist_ok=True)
    n = n_train + n_test
    ids = [f"{v:012x}" for v in rng.choice(16**12, size=n, replace=False)]
    grades = rng.choice(len(APTOS_SHARES), size=n, p=APTOS_SHARES)
    for i, (id_code, grade) in enumerate(zip(ids, grades, strict=True)):
        split = "train" if i < n_train else "test"
        cv2.imwrite(
            str(out / f"{split}_images" / f"{id_code}.png"),
            _fundus(rng, int(grade), image_size, lesions_only),
        )
    train = pd.DataFrame({"id_code": ids[:n_train], "diagnosis": grades[:n_train]})
    test = pd.DataFrame({"id_code": ids[n_train:]})
    train.to_csv(out / "train.csv", index=False)
    test.to_csv(out / "test.csv", index=False)
    test.assign(diagnosis=0).to_csv(out / "sample_submission.csv", index=False)
    test.assign(diagnosis=grades[n_train:]).to_csv(out / "test_labels.csv", index=False)
    return out


def make_dr2015(out_dir: str | Path, n: int = 60, image_size: int = 64, seed: int = 1) -> Path:
    """The 2015 Diabetic Retinopathy layout: trainLabels.csv (image,level) and train/{image}.jpeg,
    left and right eyes of each patient."""
    import cv2  # only the synthetic layouts draw images

    out = Path(out_dir)
    (out / "train").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = [f"{10 + i // 2}_{'left' if i % 2 == 0 else 'right'}" for i in range(n)]
    levels = rng.choice(len(APTOS_SHARES), size=n, p=APTOS_SHARES)
    for name, level in zip(names, levels, strict=True):
        cv2.imwrite(str(out / "train" / f"{name}.jpeg"), _fundus(rng, int(level), image_size))
    pd.DataFrame({"image": names, "level": levels}).to_csv(out / "trainLabels.csv", index=False)
    return out


APTOS = Aptos(
    # released aptos.py: BGR, h flip; sample_train.py: CE
    paper=PaperRecipe(bgr=True, flips="h", loss="ce"),
    name="aptos",
    synthetic=make_aptos,
    synthetic_external={"dr2015": make_dr2015},
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
