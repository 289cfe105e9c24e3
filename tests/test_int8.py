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
