"""Where a Kaggle notebook finds a competition's files: both mount layouts, marker files, refusals."""

from __future__ import annotations

import pytest

from kaggle_transfer import competitions
from kaggle_transfer.competitions import APTOS, HPA, kaggle_input
from kaggle_transfer.errors import KtError


def competition_files(folder, test="test_images"):
    folder.mkdir(parents=True)
    (folder / "sample_submission.csv").write_text("id_code,diagnosis\n")
    (folder / test).mkdir() if "." not in test else (folder / test).write_text("id_code\n")
    return folder


@pytest.mark.parametrize("where, how", [
    ("competitions/aptos2019-blindness-detection", "the 2026 layout"),
    ("aptos2019-blindness-detection", "the older layout"),
    ("some-owner/aptos2019-blindness-detection", "its marker files"),
    ("mounts/2027/competitions/aptos2019-blindness-detection", "its marker files"),
])
def test_each_layout_is_found(tmp_path, where, how):
    folder = competition_files(tmp_path / where)
    assert kaggle_input.find(APTOS.kaggle.slug, tmp_path) == (folder, how)


def test_the_known_paths_win_and_a_bundle_is_never_taken_for_data(tmp_path):
    bundle = competition_files(tmp_path / "datasets" / "me" / "kt-bundle-aptos")
    (bundle / "bundle.json").write_text("{}")
    assert kaggle_input.find(APTOS.kaggle.slug, tmp_path) is None
    legacy = competition_files(tmp_path / APTOS.kaggle.slug)
    new = competition_files(tmp_path / "competitions" / APTOS.kaggle.slug)
    assert kaggle_input.find(APTOS.kaggle.slug, tmp_path)[0] == new
    new.rename(tmp_path / "elsewhere")
    assert kaggle_input.find(APTOS.kaggle.slug, tmp_path)[0] == legacy


def test_hpa_test_folder_and_a_test_csv_are_markers(tmp_path):
    hpa = competition_files(tmp_path / "competitions" / HPA.kaggle.slug, test="test")
    assert kaggle_input.find(HPA.kaggle.slug, tmp_path)[0] == hpa
    other = competition_files(tmp_path / "x" / "datasets" / "me" / "some-slug", test="test.csv")
    assert kaggle_input.find("some-slug", tmp_path / "x")[0] == other


@pytest.mark.parametrize("copies", [["datasets/me/aptos-resized"], ["datasets/a/one", "datasets/b/two"]])
def test_a_look_alike_under_another_name_is_never_taken_for_the_competition(tmp_path, copies):
    """A user's copy of the data (a resized dataset) would answer the public test ids in the hidden rerun."""
    for copy in copies:
        competition_files(tmp_path / copy)
    with pytest.raises(KtError, match="the competition aptos2019-blindness-detection is not attached.*look like "
                                      "competition data under other names.*KT_BUNDLE_DATA"):
        kaggle_input.find(APTOS.kaggle.slug, tmp_path)


def test_the_competitions_folder_wins_among_folders_of_the_slugs_name(tmp_path):
    competition_files(tmp_path / "datasets" / "other" / APTOS.kaggle.slug)
    mounted = competition_files(tmp_path / "mounts" / "competitions" / APTOS.kaggle.slug)
    assert kaggle_input.find(APTOS.kaggle.slug, tmp_path)[0] == mounted


def test_find_data_dir_uses_the_kaggle_mounts_last(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KT_DATA", raising=False)
    mounted = competition_files(tmp_path / "input" / "competitions" / APTOS.kaggle.slug)
    monkeypatch.setattr(kaggle_input, "KAGGLE_INPUT", tmp_path / "input")
    assert competitions.find_data_dir(APTOS, None) == mounted
    local = tmp_path / "data" / "aptos"
    local.mkdir(parents=True)
    assert competitions.find_data_dir(APTOS, None).resolve() == local  # a local download comes first
    local.rmdir()
    mounted.rename(tmp_path / "gone")
    with pytest.raises(KtError, match="the competition aptos2019-blindness-detection is not attached.*add it to "
                                      "the notebook's inputs"):
        competitions.find_data_dir(APTOS, None)
