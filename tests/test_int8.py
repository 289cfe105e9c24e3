"""kt export --int8: onnxruntime static quantisation of a run's model, its parity and score record
checked against a recomputation, the refusal past the tolerance, and --int8 in predict and bundle."""

import json
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest

from kaggle_transfer import runs
from kaggle_transfer.errors import KtError
from kaggle_transfer.inference.predictor import Choice, RunOptions, load_predictor
from kaggle_transfer.inference.quantize import _rows, quantize
from kaggle_transfer.inference.session import read_metadata


@pytest.fixture
def run(trained_run, onnx_model, tmp_path):
    """A private copy of the exported tiny run (the int8 file is written into it)."""
    return shutil.copytree(trained_run, tmp_path / "run")


def test_the_int8_copy_is_quantised_and_records_what_it_was_accepted_on(run):
    record = quantize(run, tolerance=1.0)
    path = run / runs.MODEL_INT8
    graph = onnx.load(str(path)).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ
    assert any(t.data_type == onnx.TensorProto.INT8 for t in graph.initializer)  # int8 weights
    meta = read_metadata(path)
    assert meta["int8"] == {k: record[k] for k in meta["int8"]}
    assert meta["arch"] == read_metadata(run / runs.MODEL)["arch"]  # the rest of the metadata kept
    # recomputed here: both models on the run's validation rows, scored with its fitted parameters
    comp, _, val, oof = _rows(run, 64, 512)
    options = RunOptions(progress=False, tta="none")
    fp32 = load_predictor("aptos", Choice(models=[run / runs.MODEL]), options).outputs(val)
    int8 = load_predictor("aptos", Choice(models=[run / runs.MODEL], int8=True), options).outputs(val)
    assert record["validation_rows"] == len(val) == len(oof["ids"])
    assert record["max_abs_diff"] == pytest.approx(float(np.abs(fp32 - int8).max()))
    assert 0 < record["max_abs_diff"] < 0.5  # quantised, and still the same model
    order = {str(i): k for k, i in enumerate(oof["ids"])}
    y = oof["targets"][[order[str(i)] for i in val["id"]]]
    assert record["score_int8"] == pytest.approx(comp.task.score(y, int8, oof["fitted"]))
    assert record["calibration_rows"] > 0


def test_past_the_tolerance_nothing_is_written_unless_forced(run):
    with pytest.raises(KtError, match="nothing written"):
        quantize(run, tolerance=-1.0)  # any score, even an equal one, drops more than -1
    assert not (run / runs.MODEL_INT8).exists()
    quantize(run, tolerance=-1.0, force=True)
    assert (run / runs.MODEL_INT8).is_file()


def test_a_damaged_int8_record_is_refused_on_load(run, tmp_path):
    quantize(run, tolerance=1.0)
    proto = onnx.load(str(run / runs.MODEL_INT8))
    for p in proto.metadata_props:
        if p.key == "kt":
            meta = json.loads(p.value)
            meta["int8"]["score_int8"] = "high"
            p.value = json.dumps(meta)
    onnx.save(proto, str(tmp_path / "bad.onnx"))
    with pytest.raises(KtError, match="'int8'"):
        read_metadata(tmp_path / "bad.onnx")


def test_predict_and_bundle_take_the_int8_copies(run, aptos_dir, tmp_path):
    def kt(*args):
        return subprocess.run([sys.executable, "-m", "kaggle_transfer", *args], capture_output=True, text=True,
                              timeout=300, cwd=tmp_path)

    missing = kt("predict", "aptos", str(run), "--int8", "--data-dir", str(aptos_dir), "--no-progress")
    assert missing.returncode == 2 and "has no model.int8.onnx" in missing.stderr
    quantize(run, tolerance=1.0)
    done = kt("predict", "aptos", str(run), "--int8", "--data-dir", str(aptos_dir), "--no-progress")
    assert done.returncode == 0, done.stderr[-1500:]
    manifest = json.loads(next((tmp_path / "submissions" / "aptos").glob("*/manifest.json")).read_text())
    assert manifest["models"][0]["file"].endswith(runs.MODEL_INT8)
    assert "(int8)" in done.stdout  # the summary line says what ran
    bundle = kt("bundle", "aptos", str(run), "--int8", "-o", str(tmp_path / "b"), "--user", "kt-tester",
                "--no-fetch-wheels", "--image-has-onnxruntime", "--cpu-fallback")
    assert bundle.returncode == 0, bundle.stderr[-1500:]
    (copied,) = (tmp_path / "b").glob("*.onnx")
    assert "int8" in read_metadata(copied)
    # kt submit rebuilds the bundle from the submission: an ensemble predicted with --int8 ships int8
    from kaggle_transfer import competitions
    from kaggle_transfer.inference.ensemble import build
    from kaggle_transfer.kaggle import bundle as bundle_mod

    build("aptos", [run], "mean", tmp_path / "spec.json")
    done = kt("predict", "aptos", "--ensemble", str(tmp_path / "spec.json"), "--int8", "--data-dir",
              str(aptos_dir), "--no-progress", "--label", "ens8")
    assert done.returncode == 0, done.stderr[-1500:]
    csv = next((tmp_path / "submissions" / "aptos").glob("*_ens8/submission.csv"))
    target = bundle_mod.NotebookTarget(accelerator="none", image_has_onnxruntime=True)
    built = bundle_mod.for_submission(competitions.get("aptos"), csv, target=target, fetch=False)
    (shipped,) = built.glob("*.onnx")
    assert "int8" in read_metadata(shipped)
    assert json.loads((built / "bundle.json").read_text())["precision"] == "fp32"  # no conversion on load


def test_export_int8_keeps_a_current_model_so_an_ensemble_spec_stays_valid(run, tmp_path):
    from kaggle_transfer.files import sha256
    from kaggle_transfer.inference.ensemble import build, load_spec

    spec = build("aptos", [run], "mean", tmp_path / "spec.json")
    before = sha256(run / runs.MODEL)
    out = subprocess.run([sys.executable, "-m", "kaggle_transfer", "export", str(run), "--int8",
                          "--int8-tolerance", "1"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-1500:]
    assert "kept" in out.stdout and sha256(run / runs.MODEL) == before
    load_spec(spec["path"])  # still valid: its model.onnx did not change
    assert (run / runs.MODEL_INT8).is_file()


def test_an_int8_copy_answers_only_for_the_model_it_was_made_from(run, trained_run, tmp_path):
    from kaggle_transfer.inference.session import int8_copy

    quantize(run, tolerance=1.0)
    assert int8_copy(run / runs.MODEL) == run / runs.MODEL_INT8
    # another run's int8 copy dropped into this one (or a model.onnx exported again after it)
    other = shutil.copytree(trained_run, tmp_path / "other")
    shutil.copy(run / runs.MODEL_INT8, other / runs.MODEL_INT8)
    proto = onnx.load(str(other / runs.MODEL))
    proto.doc_string = "exported again"
    onnx.save(proto, str(other / runs.MODEL))
    with pytest.raises(KtError, match="was quantised from another model.onnx"):
        int8_copy(other / runs.MODEL)
    shutil.copy(other / runs.MODEL, other / runs.MODEL_INT8)  # a plain fp32 file under the int8 name
    with pytest.raises(KtError, match="is not an int8 copy"):
        int8_copy(other / runs.MODEL)


def test_int8_refuses_a_nan_tolerance_and_a_run_whose_validation_rows_are_gone(run, tmp_path):
    with pytest.raises(KtError, match="--int8-tolerance nan: give a finite"):
        quantize(run, tolerance=float("nan"))
    data = shutil.copytree(runs.recorded_data_dir(run), tmp_path / "data")
    oof_ids = {str(i) for i in runs.load_oof(run)["ids"]}
    table = (data / "train.csv").read_text().splitlines()
    (data / "train.csv").write_text("\n".join([table[0], *[r for r in table[1:] if r.split(",")[0] not in oof_ids]]))
    with pytest.raises(KtError, match=r"none of its \d+ validation ids .* pass --data-dir"):
        quantize(run, tolerance=1.0, data_dir=data)
    assert not (run / runs.MODEL_INT8).exists()
    with pytest.raises(KtError, match="--data-dir .* is not a folder"):
        quantize(run, tolerance=1.0, data_dir=tmp_path / "nowhere")


def test_a_groups_int8_copies_are_written_all_or_none(run, tmp_path):
    from click.testing import CliRunner

    from kaggle_transfer.cli import main

    group = tmp_path / "group"
    for fold in ("fold0", "fold1"):
        shutil.copytree(run, group / fold)
    (group / "fold1" / runs.OOF).unlink()  # fold1 cannot be checked: the group's export must stop there
    members = [{"dir": f, "fold": k, "seed": 0, "score": 0.5} for k, f in enumerate(("fold0", "fold1"))]
    (group / runs.GROUP).write_text(json.dumps({"members": members, "mean": 0.5, "std": 0.0, "pooled_score": 0.5}))
    out = CliRunner().invoke(main, ["export", str(group), "--int8", "--int8-tolerance", "1"])
    assert out.exit_code == 2, out.output[-1500:]
    error = out.output.strip().splitlines()[-1]
    assert "fold1" in error and "no member's int8 copy was written" in error
    assert not list(group.rglob("*int8*"))  # fold0's copy was staged, never put in place, and removed
    shutil.copy(group / "fold0" / runs.OOF, group / "fold1" / runs.OOF)
    (group / "fold1" / runs.MODEL_INT8).mkdir()  # fold1's copy cannot be put in place
    out = CliRunner().invoke(main, ["export", str(group), "--int8", "--int8-tolerance", "1"])
    assert out.exit_code == 2 and "is not a file; remove it" in out.output, out.output[-1500:]
    assert not (group / "fold0" / runs.MODEL_INT8).exists() and not list(group.rglob("*.pending"))
