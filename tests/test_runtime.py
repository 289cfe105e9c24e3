"""onnxruntime options of kt predict: IO binding (one device copy per view for every model) and fp16."""

import json
import math
import shutil

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from kaggle_transfer.cli import main
from kaggle_transfer.competitions import APTOS
from kaggle_transfer.errors import KtError
from kaggle_transfer.inference import half
from kaggle_transfer.inference.predict import RunOptions, predict_models
from kaggle_transfer.inference.session import OnnxModel, load_model


def _images(n: int = 6, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3, size, size), dtype=np.uint8)


def test_io_binding_matches_plain_runs_and_copies_each_view_once(onnx_model, aptos_dir, monkeypatch):
    paths = list(APTOS.read_test(aptos_dir)["paths"])
    plain = [load_model(onnx_model, provider="cpu", io_binding="off") for _ in range(2)]
    bound = [load_model(onnx_model, provider="cpu", io_binding="on") for _ in range(2)]
    assert not plain[0].io_binding and bound[0].io_binding and bound[0].device == "cpu"
    uploads = []
    original = OnnxModel.upload
    monkeypatch.setattr(OnnxModel, "upload", lambda self, x: uploads.append(x.shape) or original(self, x))
    expected = predict_models(plain, paths, RunOptions(tta="flip", batch_size=8, progress=False))
    uploads.clear()
    got = predict_models(bound, paths, RunOptions(tta="flip", batch_size=8, progress=False))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    batches = math.ceil(len(paths) / 8)
    assert len(uploads) == batches * 2  # 2 views per batch, shared by both models, not 2 x 2


def test_io_binding_accepts_a_plain_array_too(onnx_model):
    x = _images()
    bound, plain = load_model(onnx_model, provider="cpu", io_binding="on"), load_model(onnx_model, provider="cpu",
                                                                                       io_binding="off")
    np.testing.assert_array_equal(bound.run(x[:, :, ::-1]), plain.run(np.ascontiguousarray(x[:, :, ::-1])))


def test_fp16_keeps_the_interface_and_stays_close_to_fp32(onnx_model):
    fp32, fp16 = load_model(onnx_model, provider="cpu"), load_model(onnx_model, provider="cpu", precision="fp16")
    assert fp16.precision == "fp16" and fp16.session.get_inputs()[0].type == "tensor(uint8)"
    assert fp16.session.get_outputs()[0].type == "tensor(float)"
    graph = onnx.load_from_string(half.to_fp16(onnx_model)).graph
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    types = [t.data_type for t in graph.initializer if t.data_type in floats]
    assert types.count(onnx.TensorProto.FLOAT16) > 0.9 * len(types)  # the weights really are half precision
    x = _images(8)
    a, b = fp32.run(x), fp16.run(x)
    assert b.dtype == np.float32 and np.isfinite(b).all()
    assert np.abs(a - b).max() <= 1e-2 * max(1.0, np.abs(a).max())


@pytest.fixture(scope="module")
def steep_gem_model(trained_run, tmp_path_factory):
    """The trained run with GeM's p set to 32: in fp16, x**p underflows below x ~ 0.6 and is inf above 1.41."""
    import torch

    from kaggle_transfer.training.export import export

    run = tmp_path_factory.mktemp("steep") / "run"
    shutil.copytree(trained_run, run)
    state = torch.load(run / "best.pt", weights_only=True)
    state["pool.raw_p"] = torch.tensor([math.log(math.expm1(32.0 - 1.0))])
    torch.save(state, run / "best.pt")
    return export(run)["path"]


def test_fp16_runs_the_gem_chain_in_fp32(steep_gem_model, monkeypatch):
    x = _images(8)
    reference = load_model(steep_gem_model, provider="cpu").run(x)
    got = load_model(steep_gem_model, provider="cpu", precision="fp16").run(x)
    assert np.isfinite(got).all()
    tolerance = 1e-2 * max(1.0, np.abs(reference).max())
    assert np.abs(got - reference).max() <= tolerance
    graph = onnx.load_from_string(half.to_fp16(steep_gem_model)).graph
    made_by = {out: node for node in graph.node for out in node.output}
    for node in graph.node:
        if node.op_type in ("ReduceMean", "Pow"):  # fed by fp32 ops or by a cast up to fp32, never via fp16
            source = made_by.get(node.input[0])
            assert source is not None and (source.op_type in half.FP32_OPS or half._cast_to(source) == 1), node.name
    # without the round-trip pass the converter sends x**32 through fp16 between Pow and ReduceMean,
    # where it underflows (x < ~0.6) or overflows (x > 1.41): the pooled features, and outputs, go wrong
    monkeypatch.setattr(half, "_drop_round_trips", lambda model, kept: 0)
    broken = load_model(steep_gem_model, provider="cpu", precision="fp16").run(x)
    error, broken_error = np.abs(got - reference).max(), np.abs(broken - reference).max()
    assert broken_error > max(10 * error, tolerance), (error, broken_error)


def test_bad_runtime_options_are_named(onnx_model):
    with pytest.raises(KtError, match="precision 'fp8' is not valid"):
        load_model(onnx_model, precision="fp8")
    with pytest.raises(KtError, match="--io-binding 'yes' is not valid"):
        load_model(onnx_model, io_binding="yes")


def test_cli_predict_fp16_with_io_binding_records_both(onnx_model, aptos_dir, tmp_path):
    out = CliRunner().invoke(main, ["predict", "aptos", str(onnx_model), "--data-dir", str(aptos_dir), "--fp16",
                                    "--io-binding", "on", "--out-root", str(tmp_path), "--no-progress"])
    assert out.exit_code == 0, out.output
    assert "(fp16 with IO binding)" in out.output and "slower than fp32" in out.output
    manifest = json.loads(next(tmp_path.glob("aptos/*/manifest.json")).read_text())
    assert manifest["models"][0]["precision"] == "fp16" and manifest["models"][0]["io_binding"] is True
    out = CliRunner().invoke(main, ["predict", "aptos", str(onnx_model), "--io-binding", "maybe"])
    assert out.exit_code == 2 and "maybe" in out.output


def test_last_batch_padding_keeps_one_shape_and_the_results(onnx_model, aptos_dir, monkeypatch):
    paths = list(APTOS.read_test(aptos_dir)["paths"])  # 30 rows: batches of 8, 8, 8, 6
    model = load_model(onnx_model, provider="cpu")
    plain = predict_models([model], paths, RunOptions(tta="flip", batch_size=8, progress=False))
    assert model.device == "cpu"  # on a CPU the default is not to pad
    shapes = []
    original = OnnxModel.run
    monkeypatch.setattr(OnnxModel, "run", lambda self, x: shapes.append(len(x)) or original(self, x))
    padded = predict_models([model], paths, RunOptions(tta="flip", batch_size=8, progress=False), pad_last=True)
    assert set(shapes) == {8} and len(shapes) == 4 * 2  # 4 batches x 2 views, all of 8 rows
    assert padded.shape == plain.shape == (1, 30, 1)
    np.testing.assert_allclose(padded, plain, rtol=0, atol=1e-6)


def test_provider_lists(monkeypatch, tmp_path):
    import onnxruntime as ort

    from kaggle_transfer.inference import session

    gpu_build = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: gpu_build)
    monkeypatch.setattr(ort, "preload_dlls", lambda *a, **k: None, raising=False)
    monkeypatch.setenv("KT_TRT_CACHE", str(tmp_path / "trt"))
    monkeypatch.setattr(session, "_gpu_present", lambda: True)  # a GPU machine with a GPU build
    trt = session.provider_list("tensorrt")  # TensorRT, then CUDA and CPU for the nodes it cannot take
    assert trt[0] == ("TensorrtExecutionProvider", {"trt_engine_cache_enable": True,
                                                    "trt_engine_cache_path": str(tmp_path / "trt")})
    assert trt[1:] == ["CUDAExecutionProvider", "CPUExecutionProvider"] and (tmp_path / "trt").is_dir()
    assert session.provider_list("cuda") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert session.provider_list("cpu") == ["CPUExecutionProvider"]
    assert session.provider_list("auto") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(session, "_gpu_present", lambda: False)  # the GPU build on a CPU machine
    assert session.provider_list("auto") == ["CPUExecutionProvider"]
    with pytest.raises(KtError, match="--provider tensorrt: this machine has no NVIDIA GPU"):
        session.provider_list("tensorrt")
    monkeypatch.setattr(session, "_gpu_present", lambda: True)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(KtError, match="--provider cuda: this onnxruntime has only CPUExecutionProvider"):
        session.provider_list("cuda")
    with pytest.raises(KtError, match="--provider 'gpu' is not valid"):
        session.provider_list("gpu")
