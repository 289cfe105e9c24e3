"""The study's validation split, row for row: kt's `--split paper` against the released algorithm
(mlfoundations/imagenet-applications-transfer, datasets/aptos.py and cassava.py), run here on
fixtures with each competition's real column layout."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kaggle_transfer.competitions import APTOS, CASSAVA, synthetic
from kaggle_transfer.data.splits import assign_folds, paper_split


def released_validation_keys(csv, image_key: str, label_key: str, num_classes: int, seed: int = 414) -> set:
    """The released get_aptos()/get_cassava() split, step for step (global numpy seed, per-class choice)."""
    train_df = pd.read_csv(csv)
    np.random.seed(seed)
    validation_idx = []
    for i in range(num_classes):
        label_idx = [idx for idx, label in enumerate(train_df[label_key].values) if label == i]
        validation_idx.extend(np.random.choice(label_idx, int(0.2 * len(label_idx)), replace=False).tolist())
    return set(train_df[image_key].values[validation_idx].tolist())


@pytest.mark.parametrize("comp, image_key, label_key", [(APTOS, "id_code", "diagnosis"),
                                                        (CASSAVA, "image_id", "label")])
def test_the_paper_split_is_the_released_one(comp, image_key, label_key, tmp_path):
    data = synthetic.make(comp.name, tmp_path / comp.name, n_train=400, n_test=4, image_size=16)
    table = comp.read_train(data)
    folds = assign_folds(table, "paper", 5, 414)
    ours = set(table.loc[folds == 0, "id"])
    assert ours == released_validation_keys(data / "train.csv", image_key, label_key, comp.task.num_classes)
    counts = pd.Series(table["target"]).value_counts()
    assert len(ours) == sum(int(0.2 * n) for n in counts)  # 20% of each class, rounded down per class
    # what kt did before (scikit-learn with the same seed) is a different set: the test can tell them apart
    from sklearn.model_selection import train_test_split

    _, other = train_test_split(np.arange(len(table)), test_size=0.2, random_state=414, stratify=table["target"])
    assert set(table["id"].iloc[other]) != ours


def test_paper_split_edge_cases():
    assert paper_split(np.array([], dtype=int)).tolist() == []
    assert paper_split(np.array([0, 0, 0, 0, 1])).size == 0  # int(0.2 * 4) = 0 and int(0.2 * 1) = 0
    y = np.array([2, 2, 2, 2, 2, 0, 0, 0, 0, 0])  # an absent class 1 draws nothing from the stream
    np.random.seed(7)
    expected = sorted(np.random.choice([5, 6, 7, 8, 9], 1, replace=False).tolist()
                      + np.random.choice([0, 1, 2, 3, 4], 1, replace=False).tolist())
    assert paper_split(y, seed=7).tolist() == expected


def test_the_eurosat_paper_split_is_the_released_one(tmp_path):
    """datasets/eurosat.py: torchvision ImageFolder order (classes and files sorted), numpy seed 42."""
    from kaggle_transfer.competitions import EUROSAT

    data = synthetic.make("eurosat", tmp_path / "eurosat", n_train=230, image_size=16)
    root = data / "2750"
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files = [(f"{c}/{f.name}", k) for k, c in enumerate(classes) for f in sorted((root / c).iterdir())]
    np.random.seed(42)
    released = []
    for i in range(10):
        label_idx = [idx for idx, (_, label) in enumerate(files) if label == i]
        released.extend(np.random.choice(label_idx, int(0.2 * len(label_idx)), replace=False).tolist())
    released_ids = {files[i][0] for i in released}
    table = EUROSAT.read_train(data)
    assert list(table["id"]) == [f for f, _ in files]  # ImageFolder's order
    ours = set(table.loc[assign_folds(table, "paper", 5, EUROSAT.paper.seed) == 0, "id"])
    assert ours == released_ids and set(EUROSAT.read_test(data)["id"]) == released_ids


def released_cct20_samples(annotation_file) -> list[tuple[str, int]]:
    """datasets/cct20.py, CCTDataset.__init__: one (image_id, class index) per annotation that is not
    empty (category 30), in the JSON's order, classes indexed in the released list's order."""
    import json

    classes = [1, 3, 5, 6, 7, 8, 9, 10, 11, 16, 21, 33, 34, 51, 99]
    annotations = json.load(open(annotation_file))
    data = [(anno["image_id"], anno["category_id"]) for anno in annotations["annotations"]
            if anno["category_id"] != 30]
    return [(str(i), classes.index(c)) for i, c in data]


def test_cct20_per_annotation_samples_are_the_released_ones(tmp_path):
    import json

    from kaggle_transfer import competitions, config

    data = synthetic.make("cct20", tmp_path / "cct20", n_train=40, n_test=20, image_size=16)
    path = data / "eccv_18_annotation_files" / "train_annotations.json"
    coco = json.loads(path.read_text())
    first, second = coco["images"][0]["id"], coco["images"][1]["id"]
    coco["annotations"] += [{"id": "x1", "image_id": first, "category_id": 34},   # a second animal
                            {"id": "x2", "image_id": first, "category_id": 34},   # and a third, same class
                            {"id": "x3", "image_id": second, "category_id": 30}]  # empty: dropped
    path.write_text(json.dumps(coco))
    comp = competitions.for_config(config.resolve(flags={"competition": "cct20"}, sets=["per_annotation=true"]))
    table = comp.read(data, "train")
    ours = table[table["split"] == "train"]
    assert [(i.split("#")[0], t) for i, t in zip(ours["id"], ours["target"], strict=True)] == \
        released_cct20_samples(path)
    assert ours["id"].is_unique and (ours["id"].str.split("#").str[0] == str(first)).sum() >= 3
    per_image = competitions.get("cct20").read(data, "train")
    assert len(per_image[per_image["split"] == "train"]) == len(coco["images"])  # kt's default: one per image


def released_melanoma_split(years: list[pd.DataFrame], seed: int = 23) -> tuple[set, set]:
    """datasets/melanoma.py, MelanomaDataset.__init__ for train=True and train=False: numpy seed 23,
    then per year (2020, then 2019) a set of the tfrecord ids >= 0 and np.random.choice of 80 % of them."""
    sides = []
    for train in (True, False):
        np.random.seed(seed)
        keys = []
        for df in years:
            folds = set(df["tfrecord"].values)
            folds = [f for f in folds if f >= 0]
            train_splits = np.random.choice(folds, size=int(0.8 * len(folds)), replace=False).tolist()
            val_splits = [fold for fold in folds if fold not in train_splits]
            part = df.loc[df["tfrecord"].isin(train_splits if train else val_splits)]
            keys += part["image_name"].tolist()
        sides.append(set(keys))
    return sides[0], sides[1]


def test_siim_isic_paper_split_is_the_released_shard_draw_over_2020_and_2019(tmp_path):
    """The community resized layouts of both years; 2019 through --external isic2019."""
    from kaggle_transfer import config
    from kaggle_transfer.training.tables import load_tables

    y2020 = synthetic.make("siim_isic", tmp_path / "2020", n_train=240, n_test=4, image_size=16, layout="resized")
    y2019 = synthetic.make("siim_isic", tmp_path / "2019", n_train=300, n_test=4, image_size=16, layout="resized",
                           seed=1)
    csv = pd.read_csv(y2019 / "train.csv")
    for name in csv["image_name"]:  # 2019 names of their own, shards 0..29 as the 2019 copy has
        (y2019 / "train" / f"{name}.jpg").rename(y2019 / "train" / f"{name.replace('ISIC_', 'ISIC_19_')}.jpg")
    csv["image_name"] = csv["image_name"].str.replace("ISIC_", "ISIC_19_")
    csv["tfrecord"] = np.where(csv["tfrecord"] >= 0, np.arange(len(csv)) % 30, -1)
    csv.to_csv(y2019 / "train.csv", index=False)
    cfg = config.resolve(flags={"competition": "siim_isic", "external": ["isic2019"], "cache": False})
    table = load_tables(cfg, y2020, external_dirs={"isic2019": str(y2019)}, skip_bad_images=False)
    train, val = released_melanoma_split([pd.read_csv(y2020 / "train.csv"), pd.read_csv(y2019 / "train.csv")])
    assert set(table.loc[table["fold"] == 0, "id"]) == val
    assert set(table.loc[table["fold"] == 1, "id"]) == train
    assert table.loc[table["fold"] == 0, "source"].nunique() == 2  # both years validate


def test_hpa_paper_split_uses_the_split_file(tmp_path):
    from kaggle_transfer import config
    from kaggle_transfer.training.tables import load_tables

    data = synthetic.make("hpa", tmp_path / "hpa", n_train=60, n_test=4, image_size=16)
    train_csv = pd.read_csv(data / "train.csv")
    words = np.array(["train"] * 44 + ["val"] * 11 + ["test_val"] * 5)
    (data / "splits" / "hpa").mkdir(parents=True)
    train_csv.assign(Split=words).to_csv(data / "splits" / "hpa" / "split.stratified.small.0.csv", index=False)
    table = load_tables(config.resolve(flags={"competition": "hpa", "cache": False}), data, external_dirs={},
                        skip_bad_images=False)
    # datasets/hpa.py: split_df[split_df['Split'] == 'val'] validates, 'train' trains, test_val is kept out
    assert list(table.loc[table["fold"] == 0, "id"]) == list(train_csv["Id"][words == "val"])
    assert list(table.loc[table["fold"] == 1, "id"]) == list(train_csv["Id"][words == "train"])
    assert (table.loc[train_csv.index[words == "test_val"], "fold"] < 0).all()


def test_hpa_test_val_is_the_released_third_set_scored_with_validation_thresholds(tmp_path):
    """datasets/hpa.py returns test_val as a third set; the study's HPA number is F1 there, with the
    per-class thresholds fitted on the validation rows (in-sample thresholds inflate the score)."""
    import subprocess
    import sys

    from sklearn.metrics import f1_score

    from kaggle_transfer import competitions, config, runs
    from kaggle_transfer.tasks import sigmoid
    from kaggle_transfer.training.heldout import score_splits

    hpa = competitions.get("hpa")
    data = synthetic.make("hpa", tmp_path / "hpa", n_train=60, n_test=4, image_size=16)
    train_csv = pd.read_csv(data / "train.csv")
    words = np.array(["train"] * 40 + ["val"] * 12 + ["test_val"] * 8)
    split_df = train_csv.assign(Split=words)
    split_df.to_csv(data / "split.stratified.small.0.csv", index=False)
    rows = hpa.read(data, "test_val")
    assert list(rows["id"]) == list(split_df[split_df["Split"] == "test_val"]["Id"])  # the released filter
    assert hpa.heldout_splits(data, config.resolve(flags={"competition": "hpa"})) == ("test_val",)
    # under any other split the test_val rows train: they are not held out
    assert hpa.heldout_splits(data, config.resolve(flags={"competition": "hpa", "split": "kfold"})) == ()
    assert hpa.heldout_splits(tmp_path, config.resolve(flags={"competition": "hpa"})) == ()

    root = tmp_path / "runs"
    cmd = [sys.executable, "-m", "kaggle_transfer", "train", "hpa", "--data-dir", str(data), "--arch",
           "test_resnet", "--size", "32", "--epochs", "1", "--no-pretrained", "-b", "16", "--runs-root", str(root),
           "--set", "workers=0"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-1500:]
    run_dir = next((root / "hpa").glob("*_test_resnet_32"))
    scores = score_splits(run_dir, data)
    # by hand: the best weights on the test_val images, decoded with the OOF's thresholds
    import torch

    from kaggle_transfer.training.dataset import ImageDataset
    from kaggle_transfer.training.export import load_run_model

    model, _ = load_run_model(run_dir)
    dataset = ImageDataset(rows, 32, channels=hpa.select_channels(None))
    with torch.no_grad():
        raw = model.eval()(torch.stack([torch.as_tensor(dataset[i][0]) for i in range(len(rows))])).numpy()
    thresholds = np.asarray(runs.load_oof(run_dir)["fitted"]["thresholds"])
    y = hpa.task.targets(rows["target"])
    want = f1_score(y, (sigmoid(raw) >= thresholds).astype(int), average="macro", zero_division=0)
    assert scores["test_val"] == pytest.approx(want, abs=1e-6)
