"""kt bundle: the offline notebook bundle runs its script where torch cannot be imported."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from kaggle_transfer.cli import main
from kaggle_transfer.competitions import APTOS, submission

PY = f"{sys.version_info[0]}.{sys.version_info[1]}"


@pytest.fixture(scope="module")
def bundle_dir(onnx_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("b") / "bundle"
    result = CliRunner().invoke(main, ["bundle", "aptos", str(onnx_model), "-o", str(out), "--tta", "flip",
                                       "--user", "kt-tester", "--no-fetch-wheels", "--fp16", "--image-has-onnxruntime",
                                       "--cpu-fallback", "--python", PY])
    assert result.exit_code == 0, result.output
    return out


def test_bundle_layout_and_metadata(bundle_dir):
    names = sorted(p.name for p in bundle_dir.iterdir())
    assert [n for n in names if not n.endswith((".onnx", ".whl"))] == [
        "bundle.json", "dataset-metadata.json", "kernel-metadata.json", "kt_predict.py"]
    assert all(p.is_file() for p in bundle_dir.iterdir())  # flat: dataset uploads skip sub-folders
    kernel = json.loads((bundle_dir / "kernel-metadata.json").read_text())
    assert kernel["enable_internet"] is False and kernel["enable_gpu"] is True and kernel["is_private"] is True
    assert kernel["docker_image_pinning_type"] == "original"  # the image the wheels were built for
    assert kernel["competition_sources"] == ["aptos2019-blindness-detection"]
    assert kernel["dataset_sources"] == ["kt-tester/kt-bundle-aptos"] and kernel["code_file"] == "kt_predict.py"
    assert (bundle_dir / kernel["code_file"]).is_file() and len(kernel["id"].split("/")[1]) >= 5
    dataset = json.loads((bundle_dir / "dataset-metadata.json").read_text())
    assert dataset["id"] == "kt-tester/kt-bundle-aptos" and 6 <= len(dataset["title"]) <= 50
    assert [p.name.split("-")[0] for p in bundle_dir.glob("*.whl")] == ["kaggle_transfer"]
    assert len(list(bundle_dir.glob("*.onnx"))) == 1


def run_script(script, data, tmp_path):
    blocker = tmp_path / "blocker" / "torch"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('torch is blocked in this test')\n")
    env = {**os.environ, "PYTHONPATH": str(blocker.parent), "KT_BUNDLE_DATA": str(data),
           "KT_BUNDLE_OUT": str(tmp_path / "working"), "KT_SITE": str(tmp_path / "site"), "PIP_NO_INDEX": "1",
           "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "working").mkdir()
    (tmp_path / "tmp").mkdir()
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, cwd=tmp_path,
                         timeout=300)
    # however the script ended, its scratch (the predictions before they are copied out) is gone
    assert not any((tmp_path / "tmp").iterdir()), sorted(p.name for p in (tmp_path / "tmp").iterdir())
    return out


def test_bundle_script_predicts_offline_without_torch(bundle_dir, aptos_dir, tmp_path):
    data = shutil.copytree(aptos_dir, tmp_path / "data")
    # one hidden test image that cannot be decoded is answered with the mean, not the end of the run
    first = pd.read_csv(data / "test.csv")["id_code"][0]
    truncated = data / "test_images" / f"{first}.png"
    truncated.write_bytes(truncated.read_bytes()[:200])
    out = run_script(bundle_dir / "kt_predict.py", data, tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "skipped 1 unreadable image(s), answered with the mean" in out.stdout
    assert f"from {tmp_path / 'site' / 'kaggle_transfer'}" in out.stdout  # the bundled wheel, not the checkout
    csv = tmp_path / "working" / "submission.csv"
    assert submission.problems(APTOS, csv, aptos_dir) == []
    manifest = json.loads((tmp_path / "working" / "kt_manifest.json").read_text())
    assert manifest["bad_images"]["ids"] == [first]
    assert sorted(p.name for p in (tmp_path / "working").iterdir()) == ["kt_manifest.json", "submission.csv"]
    assert manifest["models"][0]["precision"] == "fp16"  # bundle.json's precision, converted without torch
    # this machine has no GPU: the GPU bundle says so, and --cpu-fallback let it predict on the CPU
    assert "kt: warning:" in out.stdout and "predicting on the CPU (--cpu-fallback)" in out.stdout
    info = json.loads((bundle_dir / "bundle.json").read_text())
    assert manifest["bundle_id"] == info["bundle_id"] and manifest["providers"] == ["CPUExecutionProvider"]
    assert manifest["seconds_per_image"] > 0 and manifest["rows"] == len(pd.read_csv(csv))


def test_a_gpu_bundle_without_cuda_stops_before_predicting(onnx_model, aptos_dir, tmp_path):
    """No CUDA provider (no GPU here, like a notebook whose CUDA the runtime does not link): the script
    exits non-zero and writes no submission, so kt submit spends nothing on a run that would time out."""
    out_dir = tmp_path / "gpu"
    result = CliRunner().invoke(main, ["bundle", "aptos", str(onnx_model), "-o", str(out_dir), "--no-fetch-wheels",
                                       "--image-has-onnxruntime", "--python", PY])
    assert result.exit_code == 0, result.output
    out = run_script(out_dir / "kt_predict.py", aptos_dir, tmp_path)
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("kt: this GPU bundle got no CUDA provider") and "--cpu-fallback" in last
    assert list((tmp_path / "working").iterdir()) == []


def test_bundle_refuses_overwrite_and_non_kaggle(bundle_dir, onnx_model):
    result = CliRunner().invoke(main, ["bundle", "aptos", str(onnx_model), "-o", str(bundle_dir)])
    assert result.exit_code == 2 and "--overwrite" in result.output
    result = CliRunner().invoke(main, ["bundle", "cct20", str(onnx_model), "-o", str(bundle_dir) + "x"])
    assert result.exit_code == 2 and "not a Kaggle competition" in result.output


def test_fetch_asks_pip_for_the_pinned_runtime_on_the_notebooks_platform(monkeypatch, tmp_path):
    from kaggle_transfer.errors import KtError
    from kaggle_transfer.kaggle import runtime

    seen = {}

    def fake_run(cmd, **kwargs):
        seen["cmd"] = cmd
        return subprocess.CompletedProcess(cmd, 1, "", "No matching distribution")

    monkeypatch.setenv("KT_WHEEL_CACHE", str(tmp_path))
    monkeypatch.setattr(runtime.subprocess, "run", fake_run)
    with pytest.raises(KtError, match="--no-fetch-wheels with --wheels-from"):
        runtime.fetch(runtime.RUNTIMES["gpu"], "3.13")
    cmd = seen["cmd"]
    assert cmd[cmd.index("--python-version") + 1] == "3.13" and "manylinux_2_28_x86_64" in cmd
    assert cmd[-1] == "onnxruntime-gpu==1.26.0" and "--only-binary=:all:" in cmd


def test_the_script_carries_no_user_text_as_code():
    """Whatever the settings hold, kt_predict.py's code is the constant template: the settings are one
    string literal that json.loads reads at run time."""
    import ast

    from kaggle_transfer.kaggle.notebook import SCRIPT, render

    payload = '"""; import os; os.system("touch PWNED") # \\ ' + "'''{id}\n"

    script = render({"dataset": payload, "runtime": payload, "cpu_fallback": False})
    compile(script, "kt_predict.py", "exec")
    code_lines = [line for line in script.splitlines() if not line.startswith("SETTINGS = ")]
    assert code_lines == [line for line in SCRIPT.splitlines() if not line.startswith("SETTINGS = ")]
    settings = next(n for n in ast.parse(script).body if isinstance(n, ast.Assign)
                    and getattr(n.targets[0], "id", "") == "SETTINGS")
    literal = settings.value.args[0]
    assert isinstance(literal, ast.Constant) and json.loads(literal.value)["dataset"] == payload


def test_members_of_weight_zero_are_neither_bundled_nor_run(onnx_model, aptos_dir, tmp_path):
    """A greedy blend that gave a member weight 0: the bundle carries only the others, and kt predict
    --ensemble runs only them."""
    import shutil

    from kaggle_transfer.files import sha256
    from tests.helpers import predict

    unused = tmp_path / "unused.onnx"
    shutil.copy(onnx_model, unused)
    members = [{"run": "a", "weight": 1.0, "models": [{"path": str(onnx_model), "sha256": sha256(onnx_model)}]},
               {"run": "b", "weight": 0.0, "models": [{"path": str(unused), "sha256": sha256(unused)}]}]
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"type": "ensemble", "competition": "aptos", "method": "greedy", "members": members,
                                "fitted": {"cutpoints": [0.5, 1.5, 2.5, 3.5]}, "oof_score": 0.5}))
    out = tmp_path / "b"
    result = CliRunner().invoke(main, ["bundle", "aptos", "--ensemble", str(spec), "-o", str(out), "--accelerator",
                                       "none", "--no-fetch-wheels", "--image-has-onnxruntime", "--python", PY])
    assert result.exit_code == 0, result.output
    info = json.loads((out / "bundle.json").read_text())
    assert [m["source"] for m in info["models"]] == [str(onnx_model)] and info["weights"] == [1.0]
    manifest = predict("aptos", [], aptos_dir, ensemble=spec, out_root=tmp_path / "subs", progress=False)
    assert [m["file"] for m in manifest["models"]] == [str(onnx_model)]
    members[1]["weight"] = float("nan")
    spec.write_text(json.dumps({"type": "ensemble", "competition": "aptos", "method": "greedy", "members": members,
                                "fitted": {"cutpoints": [0.5, 1.5, 2.5, 3.5]}}))
    result = CliRunner().invoke(main, ["bundle", "aptos", "--ensemble", str(spec), "-o", str(tmp_path / "c")])
    assert result.exit_code == 2 and "weights must be finite" in result.output


PAYLOAD = '"""\'\'\'; import os; os.system("touch PWNED"); x = """{id}\\n'


def test_a_hostile_competition_yaml_never_becomes_code(onnx_model, aptos_dir, tmp_path):
    """A YAML competition whose free-text fields (its title, every class name) are payloads: the bundle's
    script is the constant template, and running it predicts without executing any of them."""
    import onnx
    import yaml

    from kaggle_transfer.competitions.custom import check_spec
    from kaggle_transfer.kaggle.notebook import SCRIPT

    classes = [PAYLOAD + str(k) for k in range(5)]
    spec = {"name": "forest", "slug": "forest-payload", "title": PAYLOAD, "submit_via": "notebook",
            "task": "ordinal", "classes": classes, "train_csv": "train.csv", "id_column": "id_code",
            "target_column": "diagnosis", "image_pattern": "train_images/{id}.png",
            "test_image_pattern": "test_images/{id}.png", "test_csv": "test.csv"}
    (tmp_path / "forest.yaml").write_text(yaml.safe_dump(spec))
    model = tmp_path / "forest.onnx"
    proto = onnx.load(str(onnx_model))
    for prop in proto.metadata_props:
        if prop.key == "kt":
            meta = json.loads(prop.value)
            prop.value = json.dumps({**meta, "competition": "forest", "class_names": classes,
                                     "recipe": {**meta["recipe"], "competition": "forest"},
                                     "competition_spec": check_spec(spec, "forest.yaml")})
    onnx.save(proto, str(model))
    out = tmp_path / "bundle"
    result = CliRunner().invoke(main, ["bundle", str(tmp_path / "forest.yaml"), str(model), "-o", str(out),
                                       "--accelerator", "none", "--no-fetch-wheels", "--image-has-onnxruntime",
                                       "--python", PY])
    assert result.exit_code == 0, result.output
    script = (out / "kt_predict.py").read_text()
    assert "PWNED" not in script and "forest-payload" not in script.split("SETTINGS = ")[0]
    body = [line for line in script.splitlines() if not line.startswith("SETTINGS = ")]
    assert body == [line for line in SCRIPT.splitlines() if not line.startswith("SETTINGS = ")]
    ran = run_script(out / "kt_predict.py", aptos_dir, tmp_path)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert not list(tmp_path.rglob("PWNED")) and not (out / "PWNED").exists()
    assert len(pd.read_csv(tmp_path / "working" / "submission.csv")) == len(pd.read_csv(aptos_dir / "test.csv"))


def test_a_relative_model_path_is_recorded_absolute(onnx_model, aptos_dir, tmp_path, monkeypatch):
    """kt predict runs/…/model.onnx from one folder, kt submit from another: the manifest names the file."""
    import os

    from tests.helpers import predict

    monkeypatch.chdir(onnx_model.parent)
    manifest = predict("aptos", [onnx_model.name], aptos_dir, out_root=tmp_path / "subs",
                                  progress=False)
    assert [m["file"] for m in manifest["models"]] == [str(onnx_model.resolve())]
    assert os.path.isabs(manifest["models"][0]["file"])


@pytest.mark.slow
def test_two_bundles_at_once_build_their_wheels_apart(tmp_path):
    """setuptools builds in the source folder: kt builds its wheel from a private copy, so two kt bundle
    commands at once (or two test processes) both get a whole wheel."""
    import zipfile
    from concurrent.futures import ThreadPoolExecutor

    from kaggle_transfer.kaggle.bundle import _kt_wheel
    from tests.docs_commands import ROOT

    def build_state():  # what setuptools writes when it builds in the source folder
        return {(str(p), p.stat().st_mtime_ns) for d in ("build", "kaggle_transfer.egg-info")
                if (ROOT / d).exists() for p in (ROOT / d).rglob("*")}

    before = build_state()
    dests = [tmp_path / "a", tmp_path / "b"]
    for d in dests:
        d.mkdir()
    with ThreadPoolExecutor(2) as pool:
        wheels = list(pool.map(_kt_wheel, dests))
    assert build_state() == before, "the wheel was built inside the source checkout"
    for wheel in wheels:
        names = zipfile.ZipFile(wheel).namelist()
        assert "kaggle_transfer/inference/bundle_run.py" in names and "kaggle_transfer/study/paper.csv" in names
        assert any(n.startswith("kaggle_transfer/recipes/aptos/") and n.endswith(".yaml") for n in names)
        assert not any("__pycache__" in n for n in names)


def test_the_kt_wheel_is_built_once_per_source(tmp_path, monkeypatch):
    """kt submit builds a bundle for every push: the wheel of an unchanged source comes from the cache
    (same bytes, no pip run); a changed source file builds a new one."""
    from kaggle_transfer.kaggle import bundle

    monkeypatch.setenv("KT_WHEEL_CACHE", str(tmp_path / "cache"))
    first, second, third = (tmp_path / d for d in ("a", "b", "c"))
    for d in (first, second, third):
        d.mkdir()
    a = bundle._kt_wheel(first)
    runs = []
    real = bundle.subprocess.run
    monkeypatch.setattr(bundle.subprocess, "run", lambda *args, **kw: runs.append(args) or real(*args, **kw))
    b = bundle._kt_wheel(second)
    assert runs == [] and a.read_bytes() == b.read_bytes()
    assert [d.name for d in (tmp_path / "cache" / "kaggle_transfer").iterdir()] == [
        bundle.source_digest(Path(bundle.__file__).resolve().parents[2])]
    # the digest follows the sources: a copy hashes alike, one changed byte does not
    source = Path(bundle.__file__).resolve().parents[2]
    copy = tmp_path / "copy"
    for f in bundle._source_files(source):
        (copy / f.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, copy / f.relative_to(source))
    assert bundle.source_digest(copy) == bundle.source_digest(source)
    (copy / "kaggle_transfer" / "errors.py").write_text((copy / "kaggle_transfer" / "errors.py").read_text() + "#")
    assert bundle.source_digest(copy) != bundle.source_digest(source)
