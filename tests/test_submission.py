"""The submission validator against the sample submission, and the writer."""

import numpy as np
import pandas as pd
import pytest

from kaggle_transfer.competitions import APTOS, submission
from kaggle_transfer.errors import KtError


@pytest.fixture
def good(aptos_dir, tmp_path):
    sample = pd.read_csv(aptos_dir / "sample_submission.csv", dtype=str)
    path = submission.write(APTOS, list(sample["id_code"]), np.arange(len(sample)) % 5, tmp_path / "sub.csv")
    return path, pd.read_csv(path, dtype=str)


def test_written_submission_is_valid_and_matches_the_sample(good, aptos_dir):
    path, df = good
    sample = pd.read_csv(aptos_dir / "sample_submission.csv", dtype=str)
    assert list(df.columns) == list(sample.columns) and list(df["id_code"]) == list(sample["id_code"])
    assert submission.validate(APTOS, path, aptos_dir)["rows"] == len(sample)
    assert submission.problems(APTOS, aptos_dir / "sample_submission.csv", aptos_dir) == []


def _broken(df, tmp_path, change):
    df = change(df.copy())
    path = tmp_path / "broken.csv"
    df.to_csv(path, index=False)
    return path


def _set(column, row, value):
    return lambda d: d.assign(**{column: d[column].where(d.index != row, value)})


@pytest.mark.parametrize("change, message", [
    (lambda d: d.rename(columns={"diagnosis": "level"}), "header is id_code,level"),
    (lambda d: d.iloc[:-1], "test id.s. missing"),
    (lambda d: pd.concat([d, d.iloc[:1]]), "duplicate id"),
    (_set("id_code", 0, "ffffffffffff"), "not in the test set"),
    (_set("diagnosis", 2, "5"), r"outside .*row 4: '5'"),
    (_set("diagnosis", 1, "2.5"), "outside"),
    (_set("diagnosis", 1, ""), "outside"),
    (_set("diagnosis", 1, "nan"), "outside"),
    (_set("diagnosis", 1, "2.0"), r"outside .*'2.0'"),  # the README says integer: Kaggle may not read 2.0
    (_set("diagnosis", 1, "+2"), "outside"),
    (_set("diagnosis", 1, " 2"), "outside"),
    (_set("diagnosis", 1, "\u0662"), "outside"),  # an Arabic-Indic two is a digit to str.isdigit
])
def test_validator_catches(good, aptos_dir, tmp_path, change, message):
    _, df = good
    path = _broken(df, tmp_path, change)
    with pytest.raises(KtError, match=message):
        submission.validate(APTOS, path, aptos_dir)


def test_row_count_and_unreadable_files(good, aptos_dir, tmp_path):
    _, df = good
    short = _broken(df, tmp_path, lambda d: d.iloc[:5])
    assert any("rows; expected" in p for p in submission.problems(APTOS, short, aptos_dir))
    missing = tmp_path / "missing.csv"
    assert submission.problems(APTOS, missing, aptos_dir) == [f"{missing} not found"]
    (tmp_path / "empty.csv").write_text("")
    assert "not a readable CSV" in submission.problems(APTOS, tmp_path / "empty.csv", aptos_dir)[0]


def test_without_sample_submission_test_csv_sets_the_ids(good, aptos_copy):
    (aptos_copy / "sample_submission.csv").unlink()
    path, _ = good
    assert submission.problems(APTOS, path, aptos_copy) == []
