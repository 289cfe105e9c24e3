"""Image + metadata (--set meta=true): the encoding, the model's second input through ONNX, the
torch-free predictor reading the test CSV's columns, and damaged or mismatched metadata refused."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pandas as pd
import pytest
from click.testing import CliRunner

from kaggle_transfer.cli import main
from kaggle_transfer.data import tabular as meta
from kaggle_transfer.errors import KtError

from .conftest import TINY


def test_encoding_is_fitted_on_training_rows_and_handles_gaps():
    train = pd.DataFrame({"age": ["30", "50", "", "70"], "sex": ["male", "female", "", "male"]})
    spec = meta.fit({"age": "numeric", "sex": "category"}, train)
    assert spec["columns"][0]["mean"] == pytest.approx(50.0) and spec["columns"][1]["levels"] == ["female", "male"]
    assert spec["width"] == 2 + 3
    test = pd.DataFrame({"age": ["60", "nan"], "sex": ["other", "female"]})
    x, gaps = meta.encode(spec, test)
    std = np.std([30, 50, 70])
    assert np.allclose(x, [[10 / std, 0, 0, 0, 1], [0, 1, 1, 0, 0]], atol=1e-6)
    assert gaps == {"age": 1, "sex": 1}  # a missing age, an unseen sex
    x, gaps = meta.encode(spec, pd.DataFrame({"id": ["a"]}))  # columns absent altogether: all missing
    assert np.allclose(x, [[0, 1, 0, 0, 1]]) and gaps == {"age": 1, "sex": 1}
    with pytest.raises(KtError, match="declared numeric but holds 'old'"):
        meta.fit({"age": "numeric"}, pd.DataFrame({"age": ["old"]}))
    with pytest.raises(KtError, match="metadata encoding is damaged"):
        meta.check_spec({**spec, "width": 9}, "x.json")


@pytest.fixture(scope="module")
def meta_run(tmp_path_factory):
    from kaggle_transfer import config
    from kaggle_transfer.competitions import synthetic
    from kaggle_transfer.training.export import export
    from kaggle_transfer.training.loop import fit

    root = tmp_path_factory.mktemp("siim")
    data = synthetic.make("siim_isic", root / "data", n_train=80, n_test=16, image_size=32)
    cfg = config.resolve(flags={"competition": "siim_isic", **TINY, "meta": True, "max_steps": 3})
    fit(cfg, root / "run", data, progress=False)
    return root / "run", data, export(root / "run")


def test_a_metadata_run_exports_two_inputs_with_parity(meta_run):
    run_dir, _, exported = meta_run
    spec = json.loads((run_dir / "meta.json").read_text())
    assert [c["name"] for c in spec["columns"]] == ["age_approx", "sex", "anatom_site_general_challenge"]
    assert spec["missing"]["train"]["sex"] > 0  # the synthetic CSV leaves some blank, as the real one does
    assert exported["max_abs_diff"] < 1e-4 and exported["metadata"]["meta"]["width"] == spec["width"]
    graph = onnx.load(exported["path"]).graph
    assert [i.name for i in graph.input] == ["image", "meta"]


def test_the_torch_free_predictor_feeds_the_test_csvs_metadata(meta_run, tmp_path):
    import onnxruntime as ort

    from kaggle_transfer.competitions import get
    from kaggle_transfer.inference.predict import RunOptions, predict_models
    from kaggle_transfer.inference.session import load_model

    run_dir, data, exported = meta_run
    result = CliRunner().invoke(main, ["predict", "siim_isic", exported["path"], "--data-dir", str(data),
                                       "--out-root", str(tmp_path), "--no-progress"])
    assert result.exit_code == 0, result.output
    manifest = json.loads(next(tmp_path.rglob("manifest.json")).read_text())
    test_csv = pd.read_csv(data / "test.csv", dtype=str, keep_default_na=False)
    assert manifest["meta_missing"]["sex"] == int((test_csv["sex"] == "").sum())
    # the metadata reaches the graph: the same images with other metadata give other outputs
    model = load_model(exported["path"])
    table = get("siim_isic").read_test(data)
    raw = predict_models([model], list(table["paths"]), RunOptions(progress=False), meta_rows=table)[0]
    flipped = table.assign(sex=table["sex"].map({"male": "female", "female": "male", "": "male"}))
    other = predict_models([model], list(table["paths"]), RunOptions(progress=False), meta_rows=flipped)[0]
    assert not np.allclose(raw, other)
    features = meta.encode(model.meta_spec, table)[0]
    session = ort.InferenceSession(exported["path"], providers=["CPUExecutionProvider"])
    from kaggle_transfer.data import images
    from kaggle_transfer.inference.predict import _batch

    decoded = [images.read_image(p) for p in table["paths"]]
    direct = session.run(None, {"image": _batch(decoded, 32, (0, 1, 2)), "meta": features})[0]
    assert np.allclose(raw, direct, atol=1e-5)
    with pytest.raises(KtError, match="takes metadata beside the image"):
        predict_models([model], list(table["paths"]), RunOptions(progress=False))


def test_metadata_that_disagrees_with_the_graph_is_refused(meta_run, tmp_path):
    from kaggle_transfer.inference.session import load_model

    _, _, exported = meta_run
    proto = onnx.load(exported["path"])
    entry = next(p for p in proto.metadata_props if p.key == "kt")
    record = json.loads(entry.value)
    for damage, match in ((None, "says the graph takes an image only"), (3, "meta.width")):
        record_copy = dict(record, meta=None if damage is None else {**record["meta"], "width": damage})
        if damage is not None:  # a width that no longer matches its columns is a damaged encoding
            match = "metadata 'meta' is not a metadata encoding"
        entry.value = json.dumps(record_copy)
        onnx.save(proto, str(tmp_path / "bad.onnx"))
        with pytest.raises(KtError, match=match):
            load_model(tmp_path / "bad.onnx")


def test_meta_needs_declared_columns(aptos_dir, tmp_path):
    from kaggle_transfer.competitions.custom import check_spec

    result = CliRunner().invoke(main, ["train", "aptos", "--data-dir", str(aptos_dir), "--arch", "test_resnet",
                                       "--runs-root", str(tmp_path), "--set", "meta=true"])
    assert result.exit_code == 2 and "declares no metadata columns" in result.output
    base = {"name": "x", "task": "binary", "train_csv": "t.csv", "id_column": "id", "target_column": "y",
            "image_pattern": "i/{id}.png", "sample_submission": "s.csv"}
    with pytest.raises(KtError, match="'meta_columns' needs 'test_csv'"):
        check_spec({**base, "meta_columns": {"age": "numeric"}}, "x.yaml")
    with pytest.raises(KtError, match="has type 'text'"):
        check_spec({**base, "test_csv": "test.csv", "meta_columns": {"age": "text"}}, "x.yaml")


def test_values_outside_the_training_range_are_clipped_and_counted():
    train = pd.DataFrame({"age": ["30", "50", "70"]})
    spec = meta.fit({"age": "numeric"}, train)
    assert (spec["columns"][0]["min"], spec["columns"][0]["max"]) == (30.0, 70.0)
    test = pd.DataFrame({"age": ["1e30", "-1e30", "1e300", "inf", "-inf", "60", ""]})
    x, gaps = meta.encode(spec, test)
    top, bottom = meta.encode(spec, pd.DataFrame({"age": ["70", "30"]}))[0]
    assert np.isfinite(x).all() and np.allclose(x[[0, 2, 3]], top) and np.allclose(x[[1, 4]], bottom)
    assert gaps == {"age": 1} and meta.out_of_range(spec, test) == {"age": 5}
    old = {**spec, "columns": [{k: v for k, v in spec["columns"][0].items() if k not in ("min", "max")}]}
    z = meta.encode(old, pd.DataFrame({"age": ["1e30"]}))[0][0, 0]
    assert z == pytest.approx(10.0)  # files from before ranges were recorded: mean + 10 std


def test_kt_predict_reports_clipped_metadata(meta_run, tmp_path):
    run_dir, data, exported = meta_run
    hostile = tmp_path / "data"
    import shutil

    shutil.copytree(data, hostile)
    test_csv = pd.read_csv(hostile / "test.csv", dtype=str, keep_default_na=False)
    test_csv.loc[0, "age_approx"], test_csv.loc[1, "age_approx"] = "1e30", "-1e300"
    test_csv.to_csv(hostile / "test.csv", index=False)
    result = CliRunner().invoke(main, ["predict", "siim_isic", exported["path"], "--data-dir", str(hostile),
                                       "--out-root", str(tmp_path / "subs"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "were clipped to it (age_approx 2 rows" in result.output
    manifest = json.loads(next((tmp_path / "subs").rglob("manifest.json")).read_text())
    assert manifest["meta_clipped"] == {"age_approx": 2}
