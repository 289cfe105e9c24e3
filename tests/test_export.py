import json

import numpy as np
import onnx
import pytest
import torch

from kaggle_transfer.errors import KtError
from kaggle_transfer.inference.session import load_model, read_metadata
from kaggle_transfer.training.export import export, load_run_model, parity


def test_metadata_describes_the_model(onnx_model, trained_run):
    meta = read_metadata(onnx_model)
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert meta["competition"] == "aptos" and meta["task"] == "ordinal" and meta["metric"] == "qwk"
    assert meta["arch"] == "test_resnet" and meta["size"] == 32 and meta["channels"] == ["red", "green", "blue"]
    assert meta["class_names"][4] == "Proliferative DR"
    assert meta["fitted"]["cutpoints"] == metrics["fitted"]["cutpoints"]
    assert meta["score"] == metrics["score"] and meta["recipe"]["pool"] == "gem"
    props = {p.key: p.value for p in onnx.load(str(onnx_model)).metadata_props}
    assert props["kt.arch"] == "test_resnet" and props["kt.size"] == "32"


def test_gem_model_onnx_matches_torch_with_dynamic_batch(onnx_model, trained_run):
    model, _ = load_run_model(trained_run)
    for batch in (1, 5):
        assert parity(model, onnx_model, 3, 32, batch=batch) <= 1e-4
    session = load_model(onnx_model)
    assert session.session.get_inputs()[0].type == "tensor(uint8)"


def test_export_only_writes_model_onnx(onnx_model):
    leftovers = [p.name for p in onnx_model.parent.iterdir() if p.name.startswith(".") or p.suffix == ".data"]
    assert leftovers == []


def test_parity_failure_writes_nothing(trained_run, tmp_path, monkeypatch):
    import kaggle_transfer.training.export as export_mod

    monkeypatch.setattr(export_mod, "parity", lambda *a, **k: 0.5)
    with pytest.raises(KtError, match="differs from torch by 5.00e-01"):
        export(trained_run, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_export_needs_a_run_folder(tmp_path):
    with pytest.raises(KtError, match="not a run folder"):
        export(tmp_path)
    (tmp_path / "config.yaml").write_text("arch: test_resnet\n")
    with pytest.raises(KtError, match="best.pt not found"):
        export(tmp_path)


@pytest.mark.slow
def test_vit_and_efficientnet_export(aptos_dir, tmp_path):
    from kaggle_transfer.training.loop import fit

    from .conftest import tiny_config

    for arch, pool in (("test_vit", "avg"), ("test_efficientnet", "gem")):
        run = tmp_path / arch
        fit(tiny_config(arch=arch, pool=pool, epochs=1, max_steps=2), run, aptos_dir, progress=False)
        result = export(run)
        assert result["max_abs_diff"] <= 1e-4
        x = np.random.default_rng(0).integers(0, 256, (2, 3, 32, 32), dtype=np.uint8)
        model, _ = load_run_model(run)
        with torch.no_grad():
            assert np.allclose(load_model(result["path"]).run(x), model(torch.from_numpy(x)).numpy(), atol=1e-4)
