"""EuroSAT (RGB): 10 land-use classes of 64x64 Sentinel-2 patches, accuracy, a local dataset.

Layout: the RGB release's `EuroSAT.zip` unpacks to `2750/<Class>/<Class>_<n>.jpg` (27,000 images); the
data folder may be `2750/` itself or hold it. Rows are in torchvision ImageFolder's order (classes
sorted, files sorted within a class), as the study's released loader (datasets/eurosat.py) reads them.

The study has no test split for EuroSAT: it draws 20 % of each class (numpy seed 42) as the
validation set and reports accuracy on it, training at 224 px. kt does the same: its `paper` split
uses seed 42 here, and `test` (what kt predict and kt evaluate read) is that validation set, labelled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import KtError
from ..protocol import PaperRecipe
from ..tasks import Task
from .base import Competition, KaggleFacts, check_files

CLASSES = [
    "AnnualCrop",
    "Forest",
    "HerbaceousVegetation",
    "Highway",
    "Industrial",
    "Pasture",
    "PermanentCrop",
    "Residential",
    "River",
    "SeaLake",
]
EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
PAPER_SEED = 42  # datasets/eurosat.py: np.random.seed(42)


def _root(data_dir: Path) -> Path:
    return data_dir / "2750" if (data_dir / "2750").is_dir() else data_dir


class EuroSat(Competition):
    def read(self, data_dir: Path, split: str, skip_bad_images: bool = False) -> pd.DataFrame:
        root = _root(Path(data_dir))
        found = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        if found != CLASSES:
            raise KtError(
                f"EuroSAT: {root} should hold the 10 class folders {', '.join(CLASSES)}; found "
                f"{', '.join(found) or 'none'} (unzip EuroSAT.zip, the RGB release, and pass its folder)"
            )
        rows = [
            (f"{c}/{f.name}", (str(f),), k)
            for k, c in enumerate(CLASSES)
            for f in sorted((root / c).iterdir(), key=lambda p: p.name)
            if f.suffix.lower() in EXTENSIONS
        ]
        table = pd.DataFrame(rows, columns=["id", "paths", "target"]).assign(source="competition")
        if split == "test":  # the study's reported split: its validation rows, with their labels
            from ..data.splits import paper_split

            table = table.iloc[paper_split(table["target"].to_numpy(), PAPER_SEED)].reset_index(
                drop=True
            )
        elif split != "train":
            raise KtError(
                f"EuroSAT has no split {split!r}; it has train (all images) and test (the study's 20 %)"
            )
        return check_files(table, skip_bad_images)

    def test_ids(self, data_dir: Path) -> list[str]:
        return list(self.read_test(data_dir)["id"])


# --- a synthetic layout of these files, for kt demo and the tests (test_labels.csv holds the
# hidden answers Kaggle never gives, so the demo can score its test predictions) -----------------


def make_eurosat(
    out_dir: str | Path, *, n_train: int = 200, n_test: int = 0, image_size: int = 64, seed: int = 0
) -> Path:
    """2750/<Class>/<Class>_<n>.jpg: patches whose colour and stripe spacing follow the class. EuroSAT has
    no test split (the study reports its validation split), so n_test is not used."""
    import cv2  # only the synthetic layouts draw images

    rng = np.random.default_rng(seed)
    for i in range(n_train):
        k, folder = i % len(CLASSES), Path(out_dir) / "2750" / CLASSES[i % len(CLASSES)]
        folder.mkdir(parents=True, exist_ok=True)
        img = np.empty((image_size, image_size, 3), np.uint8)
        img[:] = ((k * 71) % 200 + 30, (k * 37) % 200 + 30, (k * 113) % 200 + 30)
        # fields, rivers, roads: stripes
        for x in range(int(rng.integers(0, 4)), image_size, 4 + 2 * k):
            cv2.line(img, (x, 0), (x, image_size - 1), (255 - 20 * k, 20 * k, 128), 1)
        img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"{CLASSES[k]}_{i // len(CLASSES) + 1}.jpg"), img)
    return Path(out_dir)


EUROSAT = EuroSat(
    # datasets/eurosat.py: ImageFolder RGB, no flips, 224 px
    paper=PaperRecipe(bgr=False, flips="", size=224, seed=PAPER_SEED),
    name="eurosat",
    synthetic=make_eurosat,
    title="EuroSAT (RGB), land use from Sentinel-2",
    task=Task("multiclass", num_classes=len(CLASSES), metric="accuracy"),
    kaggle=KaggleFacts(
        submit_via="none",
        download_hint="get EuroSAT.zip (the RGB release) from https://github.com/phelber/EuroSAT, "
        "unzip it and pass --data-dir",
    ),
    id_column="id",
    target_column="label",
    class_names=CLASSES,
)
