"""The APTOS adapter on synthetic files in the real layout, and the splits."""

import numpy as np
import pandas as pd
import pytest

from kaggle_transfer.competitions import APTOS, get
from kaggle_transfer.data.splits import assign_folds
from kaggle_transfer.errors import KtError


def test_reads_the_standard_table(aptos_dir):
    table = APTOS.read_train(aptos_dir)
    assert list(table.columns) == ["id", "paths", "source", "target"]
    assert len(table) == 120 and table["id"].is_unique
    assert table["target"].dtype.kind == "i" and set(table["target"]) <= set(range(5))
    for i, paths in zip(table["id"], table["paths"], strict=True):
        assert len(paths) == 1 and paths[0].endswith(f"train_images/{i}.png")
    assert (table["source"] == "competition").all()
    test = APTOS.read_test(aptos_dir)
    assert "target" not in test.columns and len(test) == 30


def test_unknown_competition_suggests():
    with pytest.raises(KtError, match="did you mean aptos"):
        get("apots")


def _rewrite(path, **columns):
    df = pd.read_csv(path, dtype=str)
    for k, v in columns.items():
        df[k] = v
    df.to_csv(path, index=False)


def test_missing_train_csv(aptos_copy):
    (aptos_copy / "train.csv").unlink()
    with pytest.raises(KtError, match=r"APTOS train.csv not found: .*train.csv"):
        APTOS.read_train(aptos_copy)


def test_wrong_header(aptos_copy):
    df = pd.read_csv(aptos_copy / "train.csv").rename(columns={"diagnosis": "level"})
    df.to_csv(aptos_copy / "train.csv", index=False)
    with pytest.raises(KtError, match="lacks column.*diagnosis.*header is id_code,level"):
        APTOS.read_train(aptos_copy)


@pytest.mark.parametrize("value", ["5", "-1", "", "2.5", "moderate"])
def test_labels_outside_range(aptos_copy, value):
    df = pd.read_csv(aptos_copy / "train.csv", dtype=str)
    df.loc[3, "diagnosis"] = value
    df.to_csv(aptos_copy / "train.csv", index=False)
    with pytest.raises(KtError, match=r"integer in 0\.\.4; row 5"):
        APTOS.read_train(aptos_copy)


def test_duplicate_ids(aptos_copy):
    df = pd.read_csv(aptos_copy / "train.csv", dtype=str)
    df.loc[5, "id_code"] = df.loc[4, "id_code"]
    df.to_csv(aptos_copy / "train.csv", index=False)
    with pytest.raises(KtError, match="duplicate id_code"):
        APTOS.read_train(aptos_copy)


def test_missing_image_is_named_or_skipped(aptos_copy):
    first = pd.read_csv(aptos_copy / "train.csv", dtype=str)["id_code"][0]
    (aptos_copy / "train_images" / f"{first}.png").unlink()
    with pytest.raises(KtError, match=f"1 image file.*{first}.png.*--skip-bad-images"):
        APTOS.read_train(aptos_copy)
    table = APTOS.read_train(aptos_copy, skip_bad_images=True)
    assert len(table) == 119 and table.attrs["skipped_images"] == 1 and first not in set(table["id"])


def test_paper_split_is_per_class_20_percent_and_deterministic(aptos_dir):
    table = APTOS.read_train(aptos_dir)
    folds = assign_folds(table, "paper", 5, 414)
    assert set(folds) == {0, 1}
    for grade in range(5):
        in_class = folds[table["target"] == grade]
        assert abs((in_class == 0).mean() - 0.2) <= 1 / len(in_class) + 0.01
    assert np.array_equal(folds, assign_folds(table, "paper", 5, 414))
    assert not np.array_equal(folds, assign_folds(table, "paper", 5, 1))


def test_kfold_covers_every_row_once_and_external_rows_only_train(aptos_dir):
    table = APTOS.read_train(aptos_dir)
    extra = table.head(10).assign(source="dr2015", id=lambda d: "x" + d["id"])
    both = pd.concat([table, extra], ignore_index=True)
    folds = assign_folds(both, "kfold", 4, 0)
    assert (folds[-10:] == -1).all()
    comp = folds[:-10]
    assert sorted(set(comp)) == [0, 1, 2, 3]
    sizes = np.bincount(comp)
    assert sizes.max() - sizes.min() <= 2
    paper = assign_folds(both, "paper", 5, 414)
    assert (paper[-10:] == -1).all()


def test_grouped_kfold_keeps_groups_together(aptos_dir):
    table = APTOS.read_train(aptos_dir)
    table["group"] = np.arange(len(table)) // 4  # e.g. four photos per patient
    folds = assign_folds(table, "kfold", 3, 0)
    assert table.assign(fold=folds).groupby("group")["fold"].nunique().max() == 1


def test_kfold_with_a_class_rarer_than_the_fold_count(aptos_dir):
    table = APTOS.read_train(aptos_dir)
    table.loc[0, "target"] = 7  # one row of a class cannot be in every fold: sklearn still stratifies the rest
    folds = assign_folds(table, "kfold", 20, 0)
    assert sorted(set(folds)) == list(range(20))
    for grade in range(5):
        per_fold = np.bincount(folds[table["target"] == grade], minlength=20)
        assert per_fold.max() - per_fold.min() <= 1
