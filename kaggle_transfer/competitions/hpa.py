"""Human Protein Atlas Image Classification (2018): 28-label multilabel, macro F1, CSV upload.

Layout (docs/competitions.md): train.csv (Id,Target with space-separated label ids in any order),
sample_submission.csv (Id,Predicted; the test ids), train/{Id}_{red,green,blue,yellow}.png and test/….
Channel order is fixed and documented: red (microtubules), green (the protein of interest),
blue (nucleus), yellow (ER). `--set channels=rgb` trains on the first three.
The study's 73/18/9 split (train / val / test_val, from the 3rd-place team; datasets/hpa.py reads
`splits/hpa/split.stratified.small.0.csv`, columns Id,...,Split): when that file is in the data folder
(top level or splits/hpa/), `--split paper` uses it row for row and holds test_val out; without it
the paper split is kt's multilabel-stratified 20 %.
External `hpav18`: a folder with a CSV (Id,Target) and per-channel images in the same naming, PNG
or JPEG (as competitors distributed the resized HPAv18 set).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import KtError
from ..protocol import PaperRecipe
from ..tasks import Task
from .base import Competition, Evaluation, KaggleFacts, check_files, random_uuid, read_csv

CLASSES = [
    "Nucleoplasm",
    "Nuclear membrane",
    "Nucleoli",
    "Nucleoli fibrillar center",
    "Nuclear speckles",
    "Nuclear bodies",
    "Endoplasmic reticulum",
    "Golgi apparatus",
    "Peroxisomes",
    "Endosomes",
    "Lysosomes",
    "Intermediate filaments",
    "Actin filaments",
    "Focal adhesion sites",
    "Microtubules",
    "Microtubule ends",
    "Cytokinetic bridge",
    "Mitotic spindle",
    "Microtubule organizing center",
    "Centrosome",
    "Lipid droplets",
    "Plasma membrane",
    "Cell junctions",
    "Mitochondria",
    "Aggresome",
    "Cytosol",
    "Cytoplasmic bodies",
    "Rods & rings",
]
CHANNELS = ("red", "green", "blue", "yellow")
SPLIT_FILE = "split.stratified.small.0.csv"
TEST_VAL = "test_val"  # the study's held-out third of its split file: thresholds never see it


def paper_split_file(data_dir: Path) -> Path | None:
    for path in (data_dir / SPLIT_FILE, data_dir / "splits" / "hpa" / SPLIT_FILE):
        if path.is_file():
            return path
    return None


def parse_labels(text: str, where: str) -> tuple[int, ...]:
    """'16 0' → (0, 16); blank → (); anything else names the row."""
    try:
        labels = tuple(sorted({int(t) for t in str(text).split()}))
    except ValueError:
        raise KtError(f"{where}: Target {text!r} must be space-separated label ids 0..27") from None
    if any(not 0 <= label < len(CLASSES) for label in labels):
        raise KtError(f"{where}: Target {text!r} has a label outside 0..27")
    return labels


def channel_paths(folder: Path, sample_id: str, ext: str = ".png") -> tuple[str, ...]:
    return tuple(str(folder / f"{sample_id}_{c}{ext}") for c in CHANNELS)


class Hpa(Competition):
    def read(self, data_dir: Path, split: str, skip_bad_images: bool = False) -> pd.DataFrame:
        if split == TEST_VAL:
            return self._test_val(Path(data_dir), skip_bad_images)
        return (self._train if split == "train" else self._test)(Path(data_dir), skip_bad_images)

    def heldout_splits(self, data_dir: Path, cfg) -> tuple[str, ...]:
        """test_val, where the run trained on the study's split file (which holds those rows out);
        under any other split they trained."""
        paper = (cfg.split or self.default_split) == "paper" and not cfg.split_file
        return (TEST_VAL,) if paper and paper_split_file(Path(data_dir)) else ()

    def _test_val(self, data_dir: Path, skip_bad_images: bool) -> pd.DataFrame:
        """The study's third set (datasets/hpa.py: `split_df[split_df['Split'] == 'test_val']`), labelled
        training images no run on the study's split trains or validates on."""
        if paper_split_file(data_dir) is None:
            raise KtError(
                f"HPA test_val needs the study's split file {SPLIT_FILE} in {data_dir} (or splits/hpa/)"
            )
        table = self._train(data_dir, skip_bad_images)
        rows = table[table["paper_split"].astype(str).str.lower() == TEST_VAL]
        return rows.drop(columns=["paper_split"]).reset_index(drop=True)

    def _train(self, data_dir: Path, skip_bad_images: bool) -> pd.DataFrame:
        data_dir = Path(data_dir)
        path = data_dir / "train.csv"
        df = read_csv(path, ["Id", "Target"], "HPA train.csv")
        table = pd.DataFrame(
            {
                "id": df["Id"].to_numpy(),
                "paths": [channel_paths(data_dir / "train", i) for i in df["Id"]],
                "source": "competition",
                "target": [
                    parse_labels(t, f"{path} row {n + 2}") for n, t in enumerate(df["Target"])
                ],
            }
        )
        split_file = paper_split_file(data_dir)
        # the study's split: rows the file does not name neither train nor validate
        if split_file is not None:
            words = read_csv(split_file, ["Id", "Split"], "HPA paper split file").set_index("Id")[
                "Split"
            ]
            table["paper_split"] = table["id"].map(words).fillna("absent").to_numpy()
        return check_files(table, skip_bad_images)

    def _test(self, data_dir: Path, skip_bad_images: bool) -> pd.DataFrame:
        data_dir = Path(data_dir)
        df = read_csv(
            data_dir / "sample_submission.csv", ["Id", "Predicted"], "HPA sample_submission.csv"
        )
        table = pd.DataFrame(
            {
                "id": df["Id"].to_numpy(),
                "paths": [channel_paths(data_dir / "test", i) for i in df["Id"]],
                "source": "competition",
            }
        )
        return check_files(table, skip_bad_images)

    def read_external(self, source: str, external_dir: Path) -> pd.DataFrame:
        if source != "hpav18":
            return super().read_external(source, external_dir)
        external_dir = Path(external_dir)
        csvs = sorted(external_dir.glob("*.csv"))
        if not csvs:
            raise KtError(f"--external-dir hpav18={external_dir} holds no CSV (Id,Target)")
        df = read_csv(csvs[0], ["Id", "Target"], "HPAv18 CSV")
        folder = external_dir / "images" if (external_dir / "images").is_dir() else external_dir
        ext = ".jpg" if any(folder.glob("*_green.jpg")) else ".png"
        table = pd.DataFrame(
            {
                "id": df["Id"].to_numpy(),
                "paths": [channel_paths(folder, i, ext) for i in df["Id"]],
                "source": "hpav18",
                "target": [
                    parse_labels(t, f"{csvs[0]} row {n + 2}") for n, t in enumerate(df["Target"])
                ],
            }
        )
        return check_files(table, skip_missing=True)  # external sets have gaps; count, do not stop


# --- a synthetic layout of these files, for kt demo and the tests (test_labels.csv holds the
# hidden answers Kaggle never gives, so the demo can score its test predictions) -----------------

# HPA: frequent classes first, as in the real data (nucleoplasm, cytosol, plasma membrane, ...)
HPA_COMMON = [
    0,
    25,
    21,
    2,
    23,
    7,
    5,
    4,
    3,
    19,
    1,
    14,
    6,
    18,
    22,
    12,
    11,
    26,
    13,
    16,
    24,
    17,
    20,
    8,
    9,
    10,
    15,
    27,
]


def _cells(rng: np.random.Generator, labels: tuple[int, ...], size: int) -> list[np.ndarray]:
    """Four channel planes (red, green, blue, yellow). Each label lights one cell of a 7x4 grid in the
    green (protein) channel; nuclei (blue) and the other stains are label-independent."""
    import cv2  # only the synthetic layouts draw images

    planes = [np.clip(rng.normal(20, 6, (size, size)), 0, 255).astype(np.uint8) for _ in range(4)]
    for _ in range(4):
        centre = tuple(int(v) for v in rng.integers(size // 8, size - size // 8, 2))
        cv2.circle(planes[2], centre, max(2, size // 10), 180, -1)
        cv2.circle(planes[0], centre, max(3, size // 7), 90, 1)
    cell_w, cell_h = size / 7, size / 4
    for k in labels:
        x, y = int((k % 7 + 0.5) * cell_w), int((k // 7 + 0.5) * cell_h)
        cv2.circle(planes[1], (x, y), max(1, int(min(cell_w, cell_h) / 2.5)), 230, -1)
    return planes


def make_hpa(
    out_dir: str | Path,
    *,
    n_train: int = 200,
    n_test: int = 50,
    image_size: int = 64,
    seed: int = 0,
) -> Path:
    """train.csv (Id,Target), sample_submission.csv (Id,Predicted), {train,test}/{Id}_{colour}.png."""
    import cv2  # only the synthetic layouts draw images

    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    weights = 1.0 / (1 + np.arange(len(HPA_COMMON))) ** 1.2
    weights /= weights.sum()
    rows = []
    for i in range(n_train + n_test):
        k = int(rng.choice([1, 1, 1, 2, 2, 3]))
        labels = tuple(sorted({int(c) for c in rng.choice(HPA_COMMON, size=k, p=weights)}))
        split = "train" if i < n_train else "test"
        sample_id = random_uuid(rng)
        (out / split).mkdir(parents=True, exist_ok=True)
        for colour, plane in zip(
            ("red", "green", "blue", "yellow"), _cells(rng, labels, image_size), strict=True
        ):
            cv2.imwrite(str(out / split / f"{sample_id}_{colour}.png"), plane)
        rows.append((split, sample_id, " ".join(map(str, labels))))
    df = pd.DataFrame(rows, columns=["split", "Id", "Target"])
    df[df.split == "train"][["Id", "Target"]].to_csv(out / "train.csv", index=False)
    test = df[df.split == "test"]
    test[["Id"]].assign(Predicted="0").to_csv(out / "sample_submission.csv", index=False)
    test[["Id"]].assign(Predicted=test["Target"]).to_csv(out / "test_labels.csv", index=False)
    return out


def make_hpav18(out_dir: str | Path, n: int = 40, image_size: int = 64, seed: int = 3) -> Path:
    """The HPAv18 external images' layout: HPAv18RGBY_WithoutUncertain_wodpl.csv (Id,Target) and
    images/{Id}_{colour}.png, cells drawn as the competition's."""
    out = Path(out_dir)
    staged = make_hpa(out / ".staging", n_train=n, n_test=0, image_size=image_size, seed=seed)
    (staged / "train").rename(out / "images")
    (staged / "train.csv").rename(out / "HPAv18RGBY_WithoutUncertain_wodpl.csv")
    shutil.rmtree(staged)
    return out


HPA = Hpa(
    # datasets/hpa.py: cv2 drops yellow, BGR, both flips
    paper=PaperRecipe(bgr=True, flips="hv", channels="rgb"),
    # the study's number is test_val, scored with thresholds fitted on the validation rows (in-sample
    # thresholds over 28 classes, some with a handful of positives, inflate and reorder models)
    evaluation=Evaluation(reported=TEST_VAL),
    name="hpa",
    synthetic=make_hpa,
    synthetic_external={"hpav18": make_hpav18},
    title="Human Protein Atlas Image Classification",
    task=Task("multilabel", num_classes=len(CLASSES), metric="macro_f1"),
    kaggle=KaggleFacts(slug="human-protein-atlas-image-classification", submit_via="csv"),
    id_column="Id",
    target_column="Predicted",
    class_names=CLASSES,
    channels=CHANNELS,
    external={"hpav18": "HPAv18 public images (74,606), per-channel, Id,Target CSV"},
)
