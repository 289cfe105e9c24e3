"""CCT-20 (Caltech Camera Traps, "Recognition in Terra Incognita", ECCV 2018): 15 classes, accuracy,
local evaluation only (not on Kaggle).

Layout (LILA): eccv_18_annotation_files/{train,cis_val,trans_val,cis_test,trans_test}_annotations.json
and eccv_18_all_images_sm/{file_name}; a flat layout (JSONs and images in one folder, or images in
images/) is read too. The JSONs are COCO Camera Traps: images (id, file_name, location, ...),
annotations (image_id, category_id), categories (id, name).

Choices, documented: the paper's 15 classes drop `empty` (id 30) everywhere; `--set keep_empty=true`
keeps it as a 16th class. An image with several annotations takes its most frequent non-empty
category (ties: the smaller id); it is `empty` only when all its annotations are. With
`--set per_annotation=true` (the study's released loader, datasets/cct20.py l.32) every non-empty
annotation is a sample of its own, in the JSON's order: an image with two annotations counts twice. Model selection
uses cis_val (locations seen in training); `kt evaluate` reports cis_test and trans_test (unseen
locations) side by side.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import KtError
from ..protocol import PaperRecipe
from ..tasks import Task
from .base import Competition, Evaluation, KaggleFacts, check_files, random_uuid

# Category ids of the paper's 15 classes, and names as in the LILA JSON (checked on read; unverified here).
CATEGORIES = {
    1: "opossum",
    3: "raccoon",
    5: "squirrel",
    6: "bobcat",
    7: "skunk",
    8: "dog",
    9: "coyote",
    10: "rabbit",
    11: "bird",
    16: "cat",
    21: "badger",
    33: "car",
    34: "deer",
    51: "fox",
    99: "rodent",
}
EMPTY_ID = 30
SPLITS = ("train", "cis_val", "trans_val", "cis_test", "trans_test")
SPLIT_WORD = {
    "train": "train",
    "cis_val": "val",
}  # everything else is held out of training and selection


def _find(data_dir: Path, names: tuple[str, ...], what: str) -> Path:
    for name in names:
        if (data_dir / name).is_dir():
            return data_dir / name
    return data_dir


class Cct20(Competition):
    keep_empty: bool = False
    per_annotation: bool = False

    def configure(self, **options) -> Cct20:
        keep, per = bool(options.get("keep_empty")), bool(options.get("per_annotation"))
        if (keep, per) == (self.keep_empty, self.per_annotation):
            return self
        new = dataclasses.replace(self)
        if keep and not self.keep_empty:
            ids = self.category_ids + [EMPTY_ID]
            new = dataclasses.replace(
                self,
                task=Task("multiclass", len(ids), "accuracy"),
                class_names=self.class_names + ["empty"],
            )
        new.keep_empty, new.per_annotation = keep or self.keep_empty, per
        return new

    @property
    def category_ids(self) -> list[int]:
        return list(CATEGORIES) + ([EMPTY_ID] if self.keep_empty else [])

    def read(self, data_dir: Path, split: str, skip_bad_images: bool = False) -> pd.DataFrame:
        """`train`: train + cis_val (the official split selects on cis_val); `test`: cis_test; or any
        LILA split by name (cis_test, trans_test, ...)."""
        if split in ("train", "test"):
            names = ("train", "cis_val") if split == "train" else ("cis_test",)
            return pd.concat(
                [self._split(data_dir, s, skip_bad_images) for s in names], ignore_index=True
            )
        return self._split(data_dir, split, skip_bad_images)

    def _split(self, data_dir: Path, split: str, skip_bad_images: bool) -> pd.DataFrame:
        data_dir = Path(data_dir)
        path = (
            _find(data_dir, ("eccv_18_annotation_files",), "annotations")
            / f"{split}_annotations.json"
        )
        if not path.is_file():
            raise KtError(
                f"CCT-20 {path.name} not found in {path.parent}; check --data-dir (LILA eccv_18 files)"
            )
        try:
            coco = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise KtError(f"{path} is not valid JSON: {e}") from None
        for key in ("images", "annotations", "categories"):
            if key not in coco:
                raise KtError(f"{path} has no {key!r}; is it a COCO Camera Traps file?")
        names = {c["id"]: c["name"] for c in coco["categories"]}
        for cid, name in CATEGORIES.items():
            if cid in names and names[cid].lower() != name:
                warnings.warn(
                    f"{path}: category {cid} is {names[cid]!r}, kt calls it {name!r}", stacklevel=2
                )
        per_image: dict[str, list[int]] = {}
        for a in coco["annotations"]:
            cid = a["category_id"]
            if cid not in CATEGORIES and cid != EMPTY_ID:
                raise KtError(
                    f"{path}: unknown category id {cid} (image {a['image_id']}); "
                    f"known: {sorted(CATEGORIES)} and empty={EMPTY_ID}"
                )
            per_image.setdefault(str(a["image_id"]), []).append(cid)
        index = {cid: k for k, cid in enumerate(self.category_ids)}
        folder = _find(data_dir, ("eccv_18_all_images_sm", "images"), "images")
        if self.per_annotation:
            rows = _annotation_rows(coco, index, folder, SPLIT_WORD.get(split, split))
            return check_files(
                pd.DataFrame(rows, columns=["id", "paths", "source", "target", "group", "split"]),
                skip_bad_images,
            )
        rows = []
        for img in coco["images"]:
            label = _label(per_image.get(str(img["id"]), []))
            if label is None or label not in index:
                continue  # no annotation, or empty while empty is dropped
            rows.append(
                {
                    "id": str(img["id"]),
                    "paths": (str(folder / img["file_name"]),),
                    "source": "competition",
                    "target": index[label],
                    "group": str(img.get("location", "")),
                    "split": SPLIT_WORD.get(split, split),
                }
            )
        return check_files(
            pd.DataFrame(rows, columns=["id", "paths", "source", "target", "group", "split"]),
            skip_bad_images,
        )


def _annotation_rows(
    coco: dict, index: dict[int, int], folder: Path, split_word: str
) -> list[dict]:
    """One row per kept annotation, in the JSON's order (the released loader's list comprehension);
    ids `<image id>#<n>` keep them unique. The image path comes from `images` (the loader's
    `<image_id>.jpg` when the image is not listed)."""
    images = {str(img["id"]): img for img in coco["images"]}
    seen: Counter = Counter()
    rows = []
    for a in coco["annotations"]:
        if a["category_id"] not in index:
            continue  # empty, unless kept
        image_id = str(a["image_id"])
        img = images.get(image_id, {"file_name": f"{image_id}.jpg"})
        seen[image_id] += 1
        rows.append(
            {
                "id": f"{image_id}#{seen[image_id]}",
                "paths": (str(folder / img["file_name"]),),
                "source": "competition",
                "target": index[a["category_id"]],
                "group": str(img.get("location", "")),
                "split": split_word,
            }
        )
    return rows


def _label(categories: list[int]) -> int | None:
    if not categories:
        return None
    animals = [c for c in categories if c != EMPTY_ID]
    if not animals:
        return EMPTY_ID
    counts = Counter(animals)
    return min(counts, key=lambda c: (-counts[c], c))


# --- a synthetic layout of these files, for kt demo and the tests (test_labels.csv holds the
# hidden answers Kaggle never gives, so the demo can score its test predictions) -----------------


def _camera_frame(rng: np.random.Generator, category: int, location: int, size: int) -> np.ndarray:
    import cv2  # only the synthetic layouts draw images

    tint = (location * 37) % 120
    img = np.clip(rng.normal(70 + tint, 10, (size, size, 1)).repeat(3, axis=2), 0, 255).astype(
        np.uint8
    )
    if rng.random() < 0.3:
        img = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)  # night frame
    if category != 30:
        k = list(CATEGORIES).index(category)
        colour = tuple(int(v) for v in ((k * 53) % 255, (k * 97) % 255, (k * 151) % 255))
        centre = tuple(int(v) for v in rng.integers(size // 4, 3 * size // 4, 2))
        cv2.ellipse(img, centre, (size // 6 + k % 4, size // 10 + k % 3), 0, 0, 360, colour, -1)
    return img


def make_cct20(
    out_dir: str | Path,
    *,
    n_train: int = 200,
    n_test: int = 60,
    image_size: int = 64,
    seed: int = 0,
) -> Path:
    """eccv_18_annotation_files/{split}_annotations.json + eccv_18_all_images_sm/, cis = seen locations.
    `train` gets n_train images, each other split n_test."""
    import cv2  # only the synthetic layouts draw images

    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    (out / "eccv_18_annotation_files").mkdir(parents=True, exist_ok=True)
    (out / "eccv_18_all_images_sm").mkdir(parents=True, exist_ok=True)
    categories = [{"id": c, "name": n} for c, n in {**CATEGORIES, EMPTY_ID: "empty"}.items()]
    ids = list(CATEGORIES)
    for split in SPLITS:
        locations = range(10, 14) if split.startswith("trans") else range(0, 10)
        images, annotations = [], []
        for _ in range(n_train if split == "train" else n_test):
            image_id = random_uuid(rng)
            category = EMPTY_ID if split != "train" and rng.random() < 0.1 else int(rng.choice(ids))
            location = int(rng.choice(list(locations)))
            cv2.imwrite(
                str(out / "eccv_18_all_images_sm" / f"{image_id}.jpg"),
                _camera_frame(rng, category, location, image_size),
            )
            images.append(
                {
                    "id": image_id,
                    "file_name": f"{image_id}.jpg",
                    "location": location,
                    "width": image_size,
                    "height": image_size,
                    "seq_id": random_uuid(rng),
                    "frame_num": 1,
                }
            )
            annotations.append(
                {"id": random_uuid(rng), "image_id": image_id, "category_id": category}
            )
            if category != EMPTY_ID and rng.random() < 0.1:  # a second animal of the same kind
                annotations.append(
                    {"id": random_uuid(rng), "image_id": image_id, "category_id": category}
                )
        path = out / "eccv_18_annotation_files" / f"{split}_annotations.json"
        path.write_text(
            json.dumps(
                {
                    "info": {"version": "synthetic"},
                    "images": images,
                    "annotations": annotations,
                    "categories": categories,
                }
            )
        )
    return out


CCT20 = Cct20(
    # released datasets/cct20.py: cv2 BGR, horizontal flip, one sample per non-empty annotation (l.32)
    paper=PaperRecipe(bgr=True, flips="h", options=(("per_annotation", True),)),
    name="cct20",
    synthetic=make_cct20,
    title="Caltech Camera Traps 20 (ECCV 2018 split)",
    task=Task("multiclass", num_classes=len(CATEGORIES), metric="accuracy"),
    kaggle=KaggleFacts(
        submit_via="none",
        download_hint="get it from LILA (https://lila.science/datasets/caltech-camera-traps) and pass "
        "--data-dir",
    ),
    id_column="id",
    target_column="category",
    class_names=list(CATEGORIES.values()),
    default_split="official",
    # sample_train.py reports cis_test at the best cis_val epoch
    evaluation=Evaluation(splits=("cis_test", "trans_test"), reported="cis_test"),
)
