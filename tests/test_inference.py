"""Torch-free ONNX prediction: parity with the torch validation path, ensembles, TTA, streaming."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest

from kaggle_transfer.competitions import APTOS
from kaggle_transfer.data import images
from kaggle_transfer.errors import KtError
from kaggle_transfer.files import sha256
from kaggle_transfer.inference import tta
from kaggle_transfer.inference.predict import RunOptions, blend, combine_fitted, predict_models
from kaggle_transfer.inference.session import expand, load_ensemble, load_model
from kaggle_transfer.runs import new_output_dir
from tests.helpers import predict


def test_onnx_predictions_equal_torch_validation_outputs(onnx_model, trained_run, aptos_dir):
    """The same images through the training code's eval path (torch) and the ONNX path agree."""
    import torch

    from kaggle_transfer.training.dataset import ImageDataset
    from kaggle_transfer.training.export import load_run_model
    from kaggle_transfer.training.loop import predict_raw

    table = APTOS.read_test(aptos_dir)
    model, _ = load_run_model(trained_run)
    loader = torch.utils.data.DataLoader(ImageDataset(table, 32), batch_size=7)
    expected = predict_raw(model, loader, torch.device("cpu"), None, channels_last=False)
    got = predict_models([load_model(onnx_model)], list(table["paths"]), RunOptions(batch_size=4, threads=2, progress=False))
    assert got.shape == (1, 30, 1)
    assert np.abs(got[0] - expected).max() < 1e-4


def test_batching_does_not_change_results(onnx_model, aptos_dir):
    paths = list(APTOS.read_test(aptos_dir)["paths"])
    model = load_model(onnx_model)
    one = predict_models([model], paths, RunOptions(batch_size=1, threads=1, progress=False))
    many = predict_models([model], paths, RunOptions(batch_size=13, threads=3, progress=False))
    assert np.allclose(one, many, atol=1e-5)


def test_tta_views():
    x = np.arange(2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    d4 = [v(x) for v in tta.views("d4")]
    assert len({v.tobytes() for v in d4}) == 8  # eight distinct symmetries of a square
    assert np.array_equal(tta.views("flip")[1](x), x[..., ::-1])
    with pytest.raises(KtError, match="none, flip, d4"):
        tta.views("five-crop")


def test_flip_tta_averages_two_views(onnx_model, aptos_dir):
    paths = list(APTOS.read_test(aptos_dir)["paths"])[:6]
    model = load_model(onnx_model)
    plain = predict_models([model], paths, RunOptions(progress=False))
    batch = np.stack([images.to_chw(images.resize(images.read_image(p), 32)) for p in paths])
    flipped_only = model.run(np.ascontiguousarray(batch[..., ::-1]))
    with_tta = predict_models([model], paths, RunOptions(tta="flip", progress=False))
    assert np.allclose(with_tta[0], (plain[0] + flipped_only) / 2, atol=1e-5)


def test_blend_and_combined_thresholds(onnx_model):
    raws = np.array([[[1.0]], [[3.0]]])
    assert blend(raws).item() == 2.0
    assert blend(raws, [3, 1]).item() == 1.5
    with pytest.raises(KtError, match="weights"):
        blend(raws, [1])
    a, b = load_model(onnx_model), load_model(onnx_model)
    b.meta = {**b.meta, "fitted": {"cutpoints": [1.5, 2.5, 3.5, 4.5]}}
    expected = (np.array(a.meta["fitted"]["cutpoints"]) + [1.5, 2.5, 3.5, 4.5]) / 2
    assert np.allclose(combine_fitted([a, b], APTOS.task)["cutpoints"], expected)


def _retag(src: Path, dst: Path, **changes) -> Path:
    proto = onnx.load(str(src))
    for prop in proto.metadata_props:
        if prop.key == "kt":
            prop.value = json.dumps({**json.loads(prop.value), **changes})
    onnx.save(proto, str(dst))
    return dst


def test_ensemble_refuses_a_model_from_another_competition(onnx_model, tmp_path):
    recipe = json.loads(next(p.value for p in onnx.load(str(onnx_model)).metadata_props if p.key == "kt"))["recipe"]
    other = _retag(onnx_model, tmp_path / "cassava.onnx", competition="cassava",
                   recipe={**recipe, "competition": "cassava"})
    with pytest.raises(KtError, match="cassava.onnx was trained for 'cassava', not 'aptos'"):
        load_ensemble([onnx_model, other], "aptos")
    mixed = _retag(onnx_model, tmp_path / "x.onnx", task="binary", num_classes=2, class_names=["a", "b"],
                   fitted={})
    with pytest.raises(KtError, match="has task='binary'"):
        load_ensemble([onnx_model, mixed], None)
    # metadata that disagrees with its own graph is refused when the file is loaded
    liar = _retag(onnx_model, tmp_path / "liar.onnx", task="multiclass")
    with pytest.raises(KtError, match="'num_classes'.*wants 5 output.*graph gives 1"):
        load_ensemble([liar], None)


def test_models_without_metadata_or_missing(tmp_path, onnx_model):
    proto = onnx.load(str(onnx_model))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "bare.onnx"))
    with pytest.raises(KtError, match="no kt metadata"):
        load_model(tmp_path / "bare.onnx")
    with pytest.raises(KtError, match="not found"):
        load_model(tmp_path / "nope.onnx")
    with pytest.raises(KtError, match="no model matches"):
        expand([str(tmp_path / "runs/*/model.onnx")])


def test_predict_writes_a_valid_submission_and_manifest(onnx_model, aptos_dir, tmp_path):
    manifest = predict("aptos", [onnx_model, onnx_model], aptos_dir, out_root=tmp_path, label="two",
                                  tta="flip",
                                  progress=False)
    out = Path(manifest["submission"]).parent
    assert out.parent == tmp_path / "aptos" and out.name.endswith("_two")
    sub = pd.read_csv(out / "submission.csv")
    sample = pd.read_csv(aptos_dir / "sample_submission.csv")
    assert list(sub.columns) == list(sample.columns) and set(sub["id_code"]) == set(sample["id_code"])
    saved = json.loads((out / "manifest.json").read_text())
    assert saved["models"][0]["sha256"] == sha256(onnx_model)
    assert saved["tta"] == "flip" and saved["rows"] == 30 and saved["models"][0]["provider"] == "CPUExecutionProvider"
    # an existing folder is never overwritten without --overwrite
    with pytest.raises(KtError, match="already exists.*--overwrite"):
        new_output_dir(tmp_path, "aptos", out.name, overwrite=False)
    before = (out / "submission.csv").read_bytes()
    assert new_output_dir(tmp_path, "aptos", out.name, overwrite=True) == out
    assert (out / "submission.csv").read_bytes() == before


def test_refit_uses_blended_oof(onnx_model, aptos_dir, tmp_path):
    manifest = predict("aptos", [onnx_model], aptos_dir, out_root=tmp_path, refit=True, progress=False)
    oof = np.load(onnx_model.parent / "oof.npz")
    assert manifest["fitted_from"] == "blended OOF"
    assert manifest["oof_score"] == pytest.approx(APTOS.task.score(oof["targets"], oof["raw"], manifest["fitted"]))
    lonely = tmp_path / "elsewhere" / "model.onnx"
    lonely.parent.mkdir()
    shutil.copy(onnx_model, lonely)
    with pytest.raises(KtError, match="--refit needs .*oof.npz"):
        predict("aptos", [lonely], aptos_dir, out_root=tmp_path, label="x", refit=True, progress=False)


def test_prediction_runs_where_torch_and_onnx_cannot_be_imported(onnx_model, aptos_dir, tmp_path):
    """A notebook image with onnxruntime alone: no torch, no onnx package."""
    for name in ("torch", "onnx"):
        blocker = tmp_path / "blocker" / name
        blocker.mkdir(parents=True)
        (blocker / "__init__.py").write_text(f"raise ImportError('{name} is blocked in this test')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "blocker")}
    for name in ("torch", "onnx"):
        probe = subprocess.run([sys.executable, "-c", f"import {name}"], env=env, capture_output=True, text=True)
        assert f"{name} is blocked" in probe.stderr  # the blocker works
    out = subprocess.run([sys.executable, "-m", "kaggle_transfer", "predict", "aptos", str(onnx_model),
                          "--data-dir", str(aptos_dir), "--out-root", str(tmp_path / "subs"), "--tta", "flip",
                          "--no-progress"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "(valid)" in out.stdout
    check = subprocess.run([sys.executable, "-m", "kaggle_transfer", "validate", "aptos",
                            *map(str, (tmp_path / "subs").glob("aptos/*/submission.csv")), "--data-dir",
                            str(aptos_dir)], env=env, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    fp16 = subprocess.run([sys.executable, "-m", "kaggle_transfer", "predict", "aptos", str(onnx_model), "--data-dir",
                           str(aptos_dir), "--out-root", str(tmp_path / "subs16"), "--fp16", "--no-progress"], env=env,
                          capture_output=True, text=True)
    assert fp16.returncode == 2 and "--fp16 converts the models with the onnx package" in fp16.stderr


def test_models_that_recorded_different_tta_need_the_flag():
    from kaggle_transfer.errors import KtError
    from kaggle_transfer.inference.tta import VIEWS, recorded_tta

    assert recorded_tta([{"tta": "flip"}, {"recipe": {"tta": "flip"}}]) == "flip"
    assert recorded_tta([{}]) == "none"
    with pytest.raises(KtError, match="choose one with --tta"):
        recorded_tta([{"tta": "flip"}, {"tta": "d4"}])
    from kaggle_transfer.config import CHOICES

    assert set(VIEWS) == set(CHOICES["tta"])  # the flag's choices are the views that exist


def test_kt_predict_takes_a_run_folder_as_the_other_commands_do(onnx_model, trained_run, aptos_dir, tmp_path):
    from click.testing import CliRunner

    from kaggle_transfer.cli import main

    result = CliRunner().invoke(main, ["predict", "aptos", str(trained_run), "--data-dir", str(aptos_dir),
                                       "--out-root", str(tmp_path / "subs"), "--no-progress"])
    assert result.exit_code == 0, result.output
    manifest = json.loads(next((tmp_path / "subs").rglob("manifest.json")).read_text())
    assert [m["file"] for m in manifest["models"]] == [str((trained_run / "model.onnx").resolve())]
    empty = tmp_path / "unexported"
    empty.mkdir()
    result = CliRunner().invoke(main, ["predict", "aptos", str(empty), "--data-dir", str(aptos_dir)])
    assert result.exit_code == 2 and "has no model.onnx; run kt export" in result.output


def test_loading_a_model_and_predicting_leave_the_onnx_package_unimported(onnx_model, aptos_dir):
    """The metadata comes from onnxruntime (the session, or read alone as the notebook's bundle runner
    reads it first): importing onnx costs about a second on every kt predict and in the notebook."""
    code = ("import sys; from kaggle_transfer.inference.session import load_model, read_metadata\n"
            "assert read_metadata(sys.argv[1])['competition'] == 'aptos'\n"
            "from kaggle_transfer.inference.predict import RunOptions, predict_models\n"
            "m = load_model(sys.argv[1], provider='cpu')\n"
            "assert m.meta['competition'] == 'aptos', m.meta\n"
            "predict_models([m], [[sys.argv[2]]], RunOptions(progress=False))\n"
            "print(sorted(k for k in sys.modules if k == 'onnx' or k.startswith('onnx.')))")
    image = next((aptos_dir / "train_images").iterdir())
    out = subprocess.run([sys.executable, "-c", code, str(onnx_model), str(image)], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_sessions_do_not_spin_their_threads(onnx_model):
    """Spinning intra-op threads of an ensemble's idle members take the cores from the running one
    (benchmarks/predict_speed.py measures it); every kt session turns spinning off."""
    from kaggle_transfer.inference.session import load_model

    models = [load_model(onnx_model, provider="cpu") for _ in range(2)]
    assert all(m.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
               == "0" for m in models)


def test_onnxruntime_telemetry_is_off_unless_the_user_turns_it_on(onnx_model, tmp_path):
    """onnxruntime 1.29+ starts a telemetry uploader that writes a session file (.ses) and calls out, also in
    an offline notebook. kt sets its switch before onnxruntime loads; a user's own value is kept."""
    script = ("import numpy as np, kaggle_transfer, sys\n"
              "from kaggle_transfer.inference.session import load_model\n"
              "m = load_model(sys.argv[1], provider='cpu')\n"
              "m.run(np.zeros((1, 3, m.size, m.size), np.uint8))\n")
    ci = {"CI", "TF_BUILD", "GITHUB_ACTIONS", "GITLAB_CI", "CIRCLECI", "TRAVIS", "JENKINS_URL", "BUILDKITE"}

    def leftovers(run: str, **env) -> list[str]:
        root = tmp_path / run
        for folder in ("home", "tmp", "cwd"):
            (root / folder).mkdir(parents=True)
        base = {k: v for k, v in os.environ.items() if k not in ci and "TELEMETRY" not in k}
        done = subprocess.run([sys.executable, "-c", script, str(onnx_model)], cwd=root / "cwd", timeout=120,
                              env={**base, "HOME": str(root / "home"), "TMPDIR": str(root / "tmp"), **env},
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

    assert leftovers("kt") == []
    # the control: with the switch set off by the user, this onnxruntime writes its session file
    assert any(p.endswith(".ses") for p in leftovers("user", ORT_DISABLE_TELEMETRY="0", ORT_TELEMETRY_DISABLED="0"))
