"""Small competition-shaped datasets with a learnable signal, for `kt demo` and the tests.

Each generator writes the competition's real layout (file names, CSV headers, sample submission),
so the adapter under test is the one users run. A file `test_labels.csv`, which Kaggle never
gives, holds the hidden answers so the demo can score its test predictions.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from ..errors import KtError
from .cassava import DISEASES
from .cct20 import CATEGORIES, EMPTY_ID, SPLITS
from .eurosat import CLASSES

# Class shares of the real APTOS train set (about 1805/370/999/193/295 of 3662).
APTOS_SHARES = np.array([1805, 370, 999, 193, 295]) / 3662


def _fundus(
    rng: np.random.Generator, grade: int, size: int, lesions_only: bool = False
) -> np.ndarray:
    """A fundus-like photo: dark background, orange disc, vessels; the grade sets how red the disc is
    and how many lesions it shows, with noise so that neighbouring grades overlap. With lesions_only
    the colour carries no signal: only small lesions do, as in real retinopathy (where input size matters)."""
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
    out = Path(out_dir)
    (out / "train").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = [f"{10 + i // 2}_{'left' if i % 2 == 0 else 'right'}" for i in range(n)]
    levels = rng.choice(len(APTOS_SHARES), size=n, p=APTOS_SHARES)
    for name, level in zip(names, levels, strict=True):
        cv2.imwrite(str(out / "train" / f"{name}.jpeg"), _fundus(rng, int(level), image_size))
    pd.DataFrame({"image": names, "level": levels}).to_csv(out / "trainLabels.csv", index=False)
    return out


def _uuid(rng: np.random.Generator) -> str:
    h = "".join(rng.choice(list("0123456789abcdef"), 32))
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


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
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    weights = 1.0 / (1 + np.arange(len(HPA_COMMON))) ** 1.2
    weights /= weights.sum()
    rows = []
    for i in range(n_train + n_test):
        k = int(rng.choice([1, 1, 1, 2, 2, 3]))
        labels = tuple(sorted({int(c) for c in rng.choice(HPA_COMMON, size=k, p=weights)}))
        split = "train" if i < n_train else "test"
        sample_id = _uuid(rng)
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


def _lesion(rng: np.random.Generator, malignant: bool, size: int) -> np.ndarray:
    """Skin-coloured background with a mole; malignant ones are larger, darker and irregular."""
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


def _leaf(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
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


def _camera_frame(rng: np.random.Generator, category: int, location: int, size: int) -> np.ndarray:
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
            image_id = _uuid(rng)
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
                    "seq_id": _uuid(rng),
                    "frame_num": 1,
                }
            )
            annotations.append({"id": _uuid(rng), "image_id": image_id, "category_id": category})
            if category != EMPTY_ID and rng.random() < 0.1:  # a second animal of the same kind
                annotations.append(
                    {"id": _uuid(rng), "image_id": image_id, "category_id": category}
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


def make_eurosat(
    out_dir: str | Path, *, n_train: int = 200, n_test: int = 0, image_size: int = 64, seed: int = 0
) -> Path:
    """2750/<Class>/<Class>_<n>.jpg: patches whose colour and stripe spacing follow the class. EuroSAT has
    no test split (the study reports its validation split), so n_test is not used."""
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


GENERATORS = {
    "aptos": make_aptos,
    "hpa": make_hpa,
    "siim_isic": make_siim_isic,
    "cassava": make_cassava,
    "cct20": make_cct20,
    "eurosat": make_eurosat,
    "dr2015": make_dr2015,
    "hpav18": make_hpav18,
    "isic2019": make_isic2019,
}


def make(name: str, out_dir: str | Path, **kwargs) -> Path:
    """Write the layout `name` (a competition adapter's `synthetic` attribute, or an external source:
    `dr2015`, `hpav18`, `isic2019`)."""
    try:
        generator = GENERATORS[name]
    except KeyError:
        raise KtError(
            f"no synthetic data for {name!r}; available: {', '.join(GENERATORS)}"
        ) from None
    return generator(out_dir, **kwargs)
