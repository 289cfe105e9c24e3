"""HPA, SIIM-ISIC, Cassava and CCT-20 (+ external sources) on synthetic files in their real layouts."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from kaggle_transfer.competitions import (
    APTOS,
    CASSAVA,
    CCT20,
    COMPETITIONS,
    HPA,
    SIIM_ISIC,
    submission,
    synthetic,
)
from kaggle_transfer.data.splits import assign_folds
from kaggle_transfer.errors import KtError
from kaggle_transfer.inference.predict import blend
from kaggle_transfer.tasks import Task

SMALL = {"hpa": {"n_train": 60, "n_test": 12}, "siim_isic": {"n_train": 80, "n_test": 16},
         "cassava": {"n_train": 60, "n_test": 12}, "cct20": {"n_train": 40, "n_test": 20},
         "eurosat": {"n_train": 100, "n_test": 0}}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("comps")
    return {name: synthetic.make(name, root / name, image_size=48, **kw) for name, kw in SMALL.items()}


def test_registry_lists_all_six():
    assert list(COMPETITIONS) == ["aptos", "hpa", "siim_isic", "cassava", "cct20", "eurosat"]
    assert {c.kaggle.submit_via for c in COMPETITIONS.values()} == {"notebook", "csv", "none"}


@pytest.mark.parametrize("name", list(SMALL))
def test_standard_table(data, name):
    comp = COMPETITIONS[name]
    table = comp.read_train(data[name])
    assert {"id", "paths", "source", "target"} <= set(table.columns) and table["id"].is_unique
    assert all(isinstance(p, tuple) and all(Path(f).is_file() for f in p) for p in table["paths"])
    y = comp.task.targets(table["target"])
    assert len(y) == len(table)
    test = comp.read_test(data[name])
    assert "id" in test.columns and len(test) > 0


def test_hpa_reads_four_channels_in_documented_order(data):
    table = HPA.read_train(data["hpa"])
    assert [Path(p).name.rsplit("_", 1)[1] for p in table["paths"][0]] == ["red.png", "green.png", "blue.png",
                                                                             "yellow.png"]
    raw = pd.read_csv(data["hpa"] / "train.csv", dtype=str)
    assert table["target"][0] == tuple(sorted(int(t) for t in raw["Target"][0].split()))
    assert HPA.select_channels("rgb") == [0, 1, 2] and HPA.select_channels(None) == [0, 1, 2, 3]
    with pytest.raises(KtError, match="letters of red/green/blue/yellow"):
        HPA.select_channels("rgx")


def test_hpa_bad_input(data, tmp_path):
    hpa = Path(shutil.copytree(data["hpa"], tmp_path / "hpa"))
    first = pd.read_csv(hpa / "train.csv", dtype=str)["Id"][0]
    (hpa / "train" / f"{first}_yellow.png").unlink()
    with pytest.raises(KtError, match=f"{first}_yellow.png"):
        HPA.read_train(hpa)
    df = pd.read_csv(hpa / "train.csv", dtype=str)
    df.loc[1, "Target"] = "3 28"
    df.to_csv(hpa / "train.csv", index=False)
    with pytest.raises(KtError, match="outside 0..27"):
        HPA.read_train(hpa, skip_bad_images=True)


def test_hpa_multilabel_stratified_folds(data):
    table = HPA.read_train(data["hpa"])
    folds = assign_folds(table, "kfold", 3, 0)
    y = HPA.task.targets(table["target"])
    common = y.sum(0) >= 9
    per_fold = np.stack([y[folds == k].sum(0) for k in range(3)])[:, common]
    assert (np.abs(per_fold - per_fold.mean(0)).max(0) <= 2).all()  # each frequent label spread evenly


def test_hpa_submission_format(data):
    ids = HPA.test_ids(data["hpa"])
    answers = np.zeros((len(ids), 28), dtype=int)
    answers[0, [3, 25]] = 1  # row 0: two labels; the rest blank, which HPA allows
    frame = HPA.submission_frame(ids, answers)
    assert frame["Predicted"].tolist()[:2] == ["3 25", ""]
    assert HPA.parse_answers(frame["Predicted"].tolist())[0].tolist() == answers[0].tolist()
    assert [HPA.check_answer(v) for v in ("", "0 27", "28", "1 1", "a")] == [True, True, False, False, False]


def test_siim_groups_patients_and_reads_both_layouts(data, tmp_path):
    table = SIIM_ISIC.read_train(data["siim_isic"])
    assert table["group"].str.startswith("IP_").all()
    for split in ("paper", "kfold"):
        folds = assign_folds(table, split, 4, 0)
        assert table.assign(f=folds).groupby("group")["f"].nunique().max() == 1, split  # no patient on two sides
    resized = synthetic.make("siim_isic", tmp_path / "resized", n_train=40, n_test=8, image_size=32,
                             layout="resized")
    table2 = SIIM_ISIC.read_train(resized)
    assert len(table2) == 38  # two tfrecord=-1 duplicates dropped
    raw = pd.read_csv(resized / "train.csv")
    kept = raw[raw["tfrecord"] != -1]
    assert np.array_equal(assign_folds(table2, "kfold", 5, 0), kept["tfrecord"].to_numpy() % 5)


def test_siim_answers_are_probabilities():
    assert [SIIM_ISIC.check_answer(v) for v in ("0", "0.25", "1.0", "1.5", "-0.1", "nan", "")] == [
        True, True, True, False, False, False, False]


def test_rank_blend_is_invariant_to_monotone_transforms():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    a, b = y + rng.normal(0, 1, 300), y + rng.normal(0, 1.5, 300)
    task = Task("binary", 2, "roc_auc")
    base = blend(np.stack([a, b])[:, :, None], method="rank", task=task)
    warped = blend(np.stack([np.exp(3 * a), b ** 3])[:, :, None], method="rank", task=task)
    assert np.allclose(base, warped)
    assert roc_auc_score(y, task.decode(base)) == pytest.approx(roc_auc_score(y, task.decode(warped)))
    with pytest.raises(KtError, match="--blend rank suits"):
        blend(np.stack([a, b])[:, :, None], method="rank", task=Task("ordinal", 5, "qwk"))


def test_cassava_ids_keep_jpg_and_test_ids_come_from_the_folder(data):
    table = CASSAVA.read_train(data["cassava"])
    assert table["id"].str.endswith(".jpg").all()
    ids = CASSAVA.test_ids(data["cassava"])
    assert len(ids) == 12 and len(pd.read_csv(data["cassava"] / "sample_submission.csv")) == 1
    assert sorted(ids) == sorted(p.name for p in (data["cassava"] / "test_images").iterdir())


def test_cassava_label_map_is_checked(data, tmp_path):
    cassava = Path(shutil.copytree(data["cassava"], tmp_path / "c"))
    (cassava / "label_num_to_disease_map.json").write_text(json.dumps({"0": "Healthy"}))
    with pytest.raises(KtError, match="label_num_to_disease_map.json maps labels"):
        CASSAVA.read_train(cassava)


def test_cct20_official_split_drops_empty_and_keeps_it_on_request(data):
    table = CCT20.read_train(data["cct20"])
    assert set(table["split"]) == {"train", "val"}
    folds = assign_folds(table, "official", 5, 0)
    assert (folds[table["split"] == "val"] == 0).all() and (folds[table["split"] == "train"] == 1).all()
    annotations = json.loads((data["cct20"] / "eccv_18_annotation_files" / "cis_val_annotations.json").read_text())
    empties = {a["image_id"] for a in annotations["annotations"] if a["category_id"] == 30}
    assert empties and not empties & set(table["id"])
    with_empty = CCT20.configure(keep_empty=True)
    assert with_empty.task.num_classes == 16 and with_empty.class_names[-1] == "empty"
    assert empties <= set(with_empty.read_train(data["cct20"])["id"])
    assert CCT20.task.num_classes == 15  # the registry's adapter is unchanged


def test_cct20_bad_json(data, tmp_path):
    cct = Path(shutil.copytree(data["cct20"], tmp_path / "cct"))
    path = cct / "eccv_18_annotation_files" / "train_annotations.json"
    coco = json.loads(path.read_text())
    coco["annotations"][0]["category_id"] = 77
    path.write_text(json.dumps(coco))
    with pytest.raises(KtError, match="unknown category id 77"):
        CCT20.read_train(cct)
    del coco["annotations"]
    path.write_text(json.dumps(coco))
    with pytest.raises(KtError, match="has no 'annotations'"):
        CCT20.read_train(cct)


def test_cct20_several_annotations_take_the_most_frequent_animal():
    from kaggle_transfer.competitions.cct20 import _label

    assert _label([30, 30]) == 30 and _label([30, 9]) == 9 and _label([9, 3, 3]) == 3 and _label([9, 3]) == 3
    assert _label([]) is None


def test_external_sources_only_train(tmp_path, aptos_dir):
    dr = synthetic.make("dr2015", tmp_path / "dr", n=20, image_size=32)
    ext = APTOS.read_external("dr2015", dr)
    assert (ext["source"] == "dr2015").all() and ext["id"].str.startswith("dr2015:").all()
    assert ext.groupby("group").size().max() == 2  # left + right eye
    with pytest.raises(KtError, match="no external source 'idrid'"):
        APTOS.read_external("idrid", dr)


def test_hpav18_and_isic2019_readers(data, tmp_path):
    hpav18 = tmp_path / "hpav18"
    shutil.copytree(data["hpa"] / "train", hpav18 / "images")
    shutil.copy(data["hpa"] / "train.csv", hpav18 / "HPAv18RGBY_WithoutUncertain_wodpl.csv")
    ext = HPA.read_external("hpav18", hpav18)
    assert len(ext) == 60 and (ext["source"] == "hpav18").all()
    isic = tmp_path / "isic2019"
    shutil.copytree(data["siim_isic"] / "jpeg" / "train", isic / "ISIC_2019_Training_Input")
    train = pd.read_csv(data["siim_isic"] / "train.csv")
    pd.DataFrame({"image": train["image_name"], "MEL": train["target"].astype(float),
                  "NV": 1.0 - train["target"]}).to_csv(isic / "ISIC_2019_Training_GroundTruth.csv", index=False)
    ext = SIIM_ISIC.read_external("isic2019", isic)
    assert ext["target"].tolist() == train["target"].tolist() and (ext["source"] == "isic2019").all()


@pytest.mark.parametrize("name, flags", [
    ("hpa", {"loss": "focal", "channels": "rgb"}),
    ("hpa", {}),
    ("siim_isic", {}),
    ("cassava", {"augment": "heavy"}),
    ("cct20", {}),
    ("eurosat", {}),
])
@pytest.mark.slow
def test_tiny_run_export_predict_validate(data, tmp_path, name, flags):
    from kaggle_transfer import config
    from kaggle_transfer.training.export import export
    from kaggle_transfer.training.loop import fit
    from tests.helpers import predict

    cfg = config.resolve(flags={"competition": name, "arch": "test_resnet", "pretrained": False, "size": 32,
                                "epochs": 1, "batch_size": 16, "workers": 0, **flags})
    result = fit(cfg, tmp_path / "run", data[name], progress=False)
    assert result["metric"] == COMPETITIONS[name].task.metric
    onnx = export(tmp_path / "run")
    assert onnx["metadata"]["channels"] == ([c for c in HPA.channels[:3]] if flags.get("channels") else
                                            list(COMPETITIONS[name].channels))
    manifest = predict(name, [onnx["path"]], data[name], out_root=tmp_path / "subs", progress=False,
                                  blend_method="rank" if name == "siim_isic" else "mean")
    assert submission.problems(COMPETITIONS[name], Path(manifest["submission"]), data[name]) == []


@pytest.mark.slow
def test_evaluate_reports_cis_and_trans_side_by_side(data, tmp_path):
    from click.testing import CliRunner

    from kaggle_transfer import config
    from kaggle_transfer.cli import main
    from kaggle_transfer.training.export import export
    from kaggle_transfer.training.loop import fit

    cfg = config.resolve(flags={"competition": "cct20", "arch": "test_resnet", "pretrained": False, "size": 32,
                                "epochs": 1, "batch_size": 16, "workers": 0})
    fit(cfg, tmp_path / "run", data["cct20"], progress=False)
    runner = CliRunner()
    out = runner.invoke(main, ["evaluate", "cct20", str(tmp_path / "run"), "--data-dir", str(data["cct20"])])
    assert out.exit_code == 2 and "run kt export" in out.output  # not exported yet
    export(tmp_path / "run")
    out = runner.invoke(main, ["evaluate", "cct20", str(tmp_path / "run"), "--data-dir", str(data["cct20"]),
                               "--no-progress"])
    assert out.exit_code == 0, out.output
    result = json.loads((tmp_path / "run" / "evaluation.json").read_text())
    assert set(result["splits"]) == {"cis_test", "trans_test"}
    per_class = pd.read_csv(tmp_path / "run" / "evaluation_per_class.csv", header=[0, 1], index_col=0)
    assert len(per_class) == 15
    assert "cis_test" in out.output and "trans_test" in out.output
    out = runner.invoke(main, ["evaluate", "aptos", str(tmp_path / "run")])
    assert out.exit_code == 2 and "no labelled test splits" in out.output
