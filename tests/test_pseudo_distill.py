"""Pseudo-labels (kt pseudo, --external pseudo=FILE) and knowledge distillation (--teacher): the labels
agree with kt predict, pseudo and teacher targets never reach validation (asserted on ids), and the
distillation loss is the textbook one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from kaggle_transfer import runs
from kaggle_transfer.cli import main
from kaggle_transfer.errors import KtError
from kaggle_transfer.tasks import Task
from kaggle_transfer.training import targets
from kaggle_transfer.training.loop import fit

from .conftest import tiny_config


@pytest.fixture(scope="module")
def pseudo_csv(onnx_model, aptos_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("pseudo") / "test.csv"
    result = CliRunner().invoke(main, ["pseudo", "aptos", str(onnx_model), "--data-dir", str(aptos_dir),
                                       "-o", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    return out


def test_pseudo_labels_are_kt_predicts_answers(pseudo_csv, onnx_model, aptos_dir, tmp_path):
    table = pd.read_csv(pseudo_csv, dtype={"id": str})
    result = CliRunner().invoke(main, ["predict", "aptos", str(onnx_model), "--data-dir", str(aptos_dir),
                                       "--out-root", str(tmp_path), "--no-progress"])
    assert result.exit_code == 0, result.output
    submission = pd.read_csv(next(tmp_path.rglob("submission.csv")), dtype={"id_code": str})
    assert len(table) == len(submission) == len(pd.read_csv(aptos_dir / "test.csv"))
    answers = dict(zip(submission["id_code"], submission["diagnosis"], strict=True))
    assert all(answers[i] == t for i, t in zip(table["id"], table["target"], strict=True))
    record = json.loads(pseudo_csv.with_suffix(".json").read_text())
    assert record["kept"] == len(table) and record["image_root"] == str(aptos_dir.resolve())
    assert table["confidence"].between(0, 1).all() and "raw_0" in table.columns


def test_min_confidence_keeps_the_sure_rows(pseudo_csv, onnx_model, aptos_dir, tmp_path):
    full = pd.read_csv(pseudo_csv)
    cut = float(full["confidence"].median())
    out = tmp_path / "sure.csv"
    result = CliRunner().invoke(main, ["pseudo", "aptos", str(onnx_model), "--data-dir", str(aptos_dir), "-o",
                                       str(out), "--min-confidence", str(cut), "--no-progress"])
    assert result.exit_code == 0, result.output
    kept = pd.read_csv(out)
    assert len(kept) == int((full["confidence"] >= cut).sum()) and (kept["confidence"] >= cut).all()


def test_ordinal_confidence_is_the_distance_to_the_nearest_cut():
    from kaggle_transfer.inference.pseudo import confidence

    task = Task("ordinal", 5, "qwk")
    conf = confidence(task, np.array([[1.0], [1.5], [1.25], [9.0]]), {"cutpoints": [0.5, 1.5, 2.5, 3.5]})
    assert np.allclose(conf, [1.0, 0.0, 0.5, 1.0])


def test_pseudo_rows_train_only_and_never_validate(pseudo_csv, aptos_dir, tmp_path):
    result = fit(tiny_config(epochs=1, max_steps=2, external=[f"pseudo={pseudo_csv}"]), tmp_path / "run", aptos_dir,
                 progress=False)
    n_test = len(pd.read_csv(aptos_dir / "test.csv"))
    assert result["n_pseudo"] == n_test and result["pseudo_dropped"] == 0
    oof_ids = set(runs.load_oof(tmp_path / "run")["ids"])
    assert not oof_ids & set(pd.read_csv(pseudo_csv, dtype={"id": str})["id"])  # validation: labelled rows only
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert list(info["pseudo"]) == [str(pseudo_csv.resolve())]


def test_a_pseudo_label_of_a_labelled_image_is_dropped(onnx_model, aptos_dir, tmp_path):
    out = tmp_path / "train_as_unlabelled.csv"  # someone labels the training folder itself
    result = CliRunner().invoke(main, ["pseudo", "aptos", str(onnx_model), "--images", str(aptos_dir / "train_images"),
                                       "-o", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    run = fit(tiny_config(epochs=1, max_steps=1, external=[f"pseudo={out}"]), tmp_path / "run", aptos_dir,
              progress=False)
    assert run["n_pseudo"] == 0 and run["pseudo_dropped"] == len(pd.read_csv(aptos_dir / "train.csv"))


def test_damaged_pseudo_tables_are_one_line(pseudo_csv, aptos_dir, tmp_path):
    from kaggle_transfer import competitions

    bad = tmp_path / "bad.csv"
    frame = pd.read_csv(pseudo_csv, dtype=str)
    frame.loc[0, "target"] = "7"
    frame.to_csv(bad, index=False)
    bad.with_suffix(".json").write_text(pseudo_csv.with_suffix(".json").read_text())
    with pytest.raises(KtError, match="row 2 has target '7'"):
        targets.read_pseudo(bad, competitions.get("aptos"))
    frame = pd.read_csv(pseudo_csv, dtype=str)
    frame.loc[0, "paths"] = "../../etc/passwd"
    frame.to_csv(bad, index=False)
    with pytest.raises(KtError, match="leads outside"):
        targets.read_pseudo(bad, competitions.get("aptos"))
    with pytest.raises(KtError, match="not a eurosat pseudo-label record"):
        targets.read_pseudo(pseudo_csv, competitions.get("eurosat"))


def test_soft_labels_replace_the_hard_ones_of_soft_rows():
    task = Task("multiclass", 3, "accuracy")
    raw = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    rows = pd.DataFrame({"target": [0, 1, 2], "soft": [False, True, True], "raw": [None, raw[0], raw[1]]})
    y = targets.train_targets(task, rows)
    assert np.allclose(y[0], [1, 0, 0]) and np.allclose(y[1:], torch.softmax(torch.tensor(raw), 1).numpy())
    ordinal = targets.train_targets(Task("ordinal", 5, "qwk"), rows.assign(raw=[None, np.array([2.7]),
                                                                                np.array([0.2])]))
    assert np.allclose(ordinal, [0, 2.7, 0.2])


def test_distill_loss_is_ce_plus_t2_kl():
    task = Task("multiclass", 4, "accuracy")
    gen = torch.Generator().manual_seed(0)
    out, teacher = torch.randn(6, 4, generator=gen), torch.randn(6, 4, generator=gen)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    mask = torch.tensor([1, 1, 1, 1, 0, 0], dtype=torch.float32)
    packed = torch.from_numpy(targets.pack(task, y.numpy(), teacher.numpy(), mask.numpy()))
    t, alpha = 2.0, 0.7
    loss = targets.DistillLoss(task, "ce", alpha=alpha, temperature=t)(out, packed)
    ce = F.cross_entropy(out, y, reduction="none")
    kl = F.kl_div(F.log_softmax(out / t, 1), F.softmax(teacher / t, 1), reduction="none").sum(1) * t * t
    w = alpha * mask
    assert torch.allclose(loss, ((1 - w) * ce + w * kl).mean(), atol=1e-6)
    zero = targets.DistillLoss(task, "ce", alpha=0.0, temperature=t)(out, packed)
    assert torch.allclose(zero, F.cross_entropy(out, y), atol=1e-6)
    grade = Task("ordinal", 5, "qwk")
    reg = targets.DistillLoss(grade, "l1", alpha=1.0, temperature=t)(
        torch.tensor([1.0, 2.0]), torch.tensor([[0.0, 1.5, 1.0], [4.0, 2.0, 1.0]]))
    assert torch.allclose(reg, torch.tensor((0.25 + 0.0) / 2))  # MSE to the teacher's value only


def test_teacher_targets_come_from_out_of_fold_outputs(trained_run, onnx_model, aptos_dir, pseudo_csv, tmp_path):
    from kaggle_transfer import competitions
    from kaggle_transfer.data.splits import HELD_OUT
    from kaggle_transfer.inference import ensemble
    from kaggle_transfer.training.tables import load_tables

    spec = ensemble.build("aptos", [trained_run], method="mean", out=tmp_path / "teacher.json")
    comp = competitions.get("aptos")
    # the student on 5 folds, the teacher on the paper split: some training rows have no OOF output
    cfg = tiny_config(split="kfold", fold=1, external=[f"pseudo={pseudo_csv}"])
    table = load_tables(cfg, aptos_dir, external_dirs={}, skip_bad_images=False)
    train_rows = table[(table["fold"] != cfg.fold) & (table["fold"] != HELD_OUT)]  # as fit() takes them
    raw, mask = targets.teacher_outputs(spec["path"], comp, comp.task, train_rows)
    oof = runs.load_oof(trained_run)
    oof_index = {str(i): k for k, i in enumerate(oof["ids"])}
    labelled = (train_rows["source"] == "competition").to_numpy()
    assert (labelled & mask).any() and (labelled & ~mask).any()
    # a labelled row has a teacher output exactly when the teacher validated on it (never trained on it)
    assert (mask[labelled] == train_rows.loc[labelled, "id"].astype(str).isin(oof_index).to_numpy()).all()
    for r in np.flatnonzero(labelled & mask):
        assert np.allclose(raw[r], np.asarray(oof["raw"][oof_index[str(train_rows["id"].iloc[r])]]).reshape(-1))
    assert (~labelled).sum() == len(pd.read_csv(pseudo_csv)) and mask[~labelled].all()  # kt pseudo's raw outputs
    val_ids = set(table.loc[table["fold"] == cfg.fold, "id"])
    assert not val_ids & set(train_rows["id"])

    student = fit(tiny_config(fold=1, epochs=1, max_steps=2, teacher=spec["path"], distill_alpha=0.5,
                              external=[f"pseudo={pseudo_csv}"]), tmp_path / "student", aptos_dir, progress=False)
    assert np.isfinite(student["score"])
    info = json.loads((tmp_path / "student" / "run.json").read_text())
    assert info["teacher"]["sha256"] and info["teacher"]["path"] == str((tmp_path / "teacher.json").resolve())
    with pytest.raises(KtError, match="not supported"):
        fit(tiny_config(fold=1, teacher=spec["path"], mix="mixup"), tmp_path / "x", aptos_dir, progress=False)


def test_soft_pseudo_rows_train_on_the_ensembles_outputs(onnx_model, aptos_dir, tmp_path):
    from kaggle_transfer import competitions
    from kaggle_transfer.training.tables import load_tables

    out = tmp_path / "soft.csv"
    result = CliRunner().invoke(main, ["pseudo", "aptos", str(onnx_model), "--data-dir", str(aptos_dir), "-o",
                                       str(out), "--soft", "--no-progress"])
    assert result.exit_code == 0, result.output
    table = load_tables(tiny_config(external=[f"pseudo={out}"]), aptos_dir, external_dirs={}, skip_bad_images=False)
    rows = table[table["source"] == "pseudo"]
    y = targets.train_targets(competitions.get("aptos").task, rows)
    recorded = pd.read_csv(out, dtype={"id": str}).set_index("id").loc[rows["id"], "raw_0"].to_numpy()
    assert np.allclose(y, recorded, atol=1e-5)  # an ordinal regression trains on the ensemble's grade
    assert not np.allclose(y, np.round(y))  # not the hard labels
    run = fit(tiny_config(epochs=1, max_steps=2, external=[f"pseudo={out}"]), tmp_path / "run", aptos_dir,
              progress=False)
    assert run["n_pseudo"] == len(rows) and np.isfinite(run["score"])


@pytest.mark.parametrize("name, below", [
    ("cassava", "train_images"),   # ids keep .jpg; the folder's ids do not
    ("aptos", "."),                # --images at the data root: ids like train_images/<id>
    ("siim_isic", "jpeg/train"),
    ("eurosat", "."),
])
def test_no_labelled_image_keeps_its_pseudo_label_whatever_its_id_looks_like(name, below, tmp_path):
    """Each competition's real id shapes: every pseudo row that is a labelled image is dropped, by id as
    data/ids.py compares them or by the image file itself; unlabelled images stay."""
    from kaggle_transfer import competitions
    from kaggle_transfer.competitions import synthetic
    from kaggle_transfer.inference.pseudo import folder_table
    from kaggle_transfer.training.targets import add_pseudo

    comp = competitions.get(name)
    data = synthetic.make(name, tmp_path / name, n_train=24, n_test=6, image_size=32)
    table = comp.read_train(data).assign(source="competition")
    folder = data / below
    if not folder.is_dir():
        pytest.skip(f"the synthetic {name} layout has no {below}/")
    extra = folder_table(folder, comp).assign(source="pseudo")
    kept, dropped = add_pseudo(table, extra)
    labelled = {str(Path(p).resolve()) for paths in table["paths"] for p in paths}
    assert dropped == sum(str(Path(p[0]).resolve()) in labelled for p in extra["paths"]) > 0
    assert not {str(Path(p[0]).resolve()) for p in kept["paths"]} & labelled


def test_join_keys_meet_across_suffixes_space_and_unicode_forms():
    from kaggle_transfer.data.ids import join_key

    assert join_key("1000015157.jpg") == join_key("1000015157") == join_key(" 1000015157.JPG ")
    assert join_key("caf\u00e9") == join_key("cafe\u0301")  # NFC and NFD spell one id
    assert join_key("ISIC_0015719") == "ISIC_0015719" and join_key("a.b.png") == "a.b"


def test_min_confidence_one_keeps_only_the_surest_rows(pseudo_csv, onnx_model, aptos_dir, tmp_path):
    """Confidences are capped at 1, so --min-confidence 1 is a real choice: the rows it is fully sure of."""
    full = pd.read_csv(pseudo_csv)
    out = tmp_path / "surest.csv"
    result = CliRunner().invoke(main, ["pseudo", "aptos", str(onnx_model), "--data-dir", str(aptos_dir), "-o",
                                       str(out), "--min-confidence", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(out)) == int((full["confidence"] >= 1.0).sum())
