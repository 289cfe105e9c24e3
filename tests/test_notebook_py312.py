"""The bundle's script on the Python of Kaggle's notebook image (3.12), without torch, with wheels fetched
for 3.12: what `kt submit` pushes must run there, not only on the interpreter that built it.

The "image" is a 3.12 virtual environment holding what Kaggle's image ships and kt's prediction needs
(numpy, pandas, Pillow, OpenCV, PyYAML, tqdm, SciPy, scikit-learn, onnx; no onnxruntime, no torch), kept
in ~/.cache/kt-tests between runs. Needs a Python 3.12 (pyenv or python3.12) and the package index."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from kaggle_transfer import submission
from kaggle_transfer.cli import main
from kaggle_transfer.competitions import APTOS
from kaggle_transfer.data import synthetic

IMAGE_PACKAGES = ["numpy", "pandas", "pillow", "opencv-python-headless", "pyyaml", "tqdm", "scipy", "scikit-learn",
                  "onnx"]


def python312() -> str | None:
    found = shutil.which("python3.12")
    candidates = [found] if found else []
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python3.12")))
    return candidates[-1] if candidates else None


PY312 = python312()
pytestmark = pytest.mark.skipif(PY312 is None, reason="no Python 3.12 on this machine (pyenv or python3.12)")


@pytest.fixture(scope="module")
def image() -> Path:
    """A Python 3.12 environment standing in for Kaggle's notebook image (made once, then reused)."""
    venv = Path(os.path.expanduser("~/.cache/kt-tests/py312-image"))
    marker = venv / ".kt-ready"
    if not marker.is_file() or marker.read_text() != "\n".join(IMAGE_PACKAGES):
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([PY312, "-m", "venv", str(venv)], check=True, capture_output=True)
        done = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", *IMAGE_PACKAGES],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        marker.write_text("\n".join(IMAGE_PACKAGES))
    return venv / "bin" / "python"


@pytest.fixture(scope="module")
def bundle312(onnx_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("b312") / "bundle"
    result = CliRunner().invoke(main, ["bundle", "aptos", str(onnx_model), "-o", str(out), "--python", "3.12",
                                       "--accelerator", "none"])  # fetches onnxruntime for cp312
    assert result.exit_code == 0, result.output
    assert any("cp312" in p.name for p in out.glob("onnxruntime-*.whl"))
    return out


def run_script(image: Path, script: Path, tmp_path: Path, data: Path, **env_extra) -> subprocess.CompletedProcess:
    blocker = tmp_path / "blocker" / "torch"
    blocker.mkdir(parents=True, exist_ok=True)
    (blocker / "__init__.py").write_text("raise ImportError('no torch in the notebook image')\n")
    (tmp_path / "working").mkdir(exist_ok=True)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHONPATH": str(blocker.parent),
           "KT_BUNDLE_DATA": str(data), "KT_BUNDLE_OUT": str(tmp_path / "working"), "PIP_NO_INDEX": "1",
           **env_extra}
    return subprocess.run([str(image), str(script)], env=env, capture_output=True, text=True, cwd=tmp_path,
                          timeout=300)


def test_the_bundle_predicts_on_python_312_without_torch(image, bundle312, tmp_path):
    data = synthetic.make("aptos", tmp_path / "aptos", n_train=20, n_test=8, image_size=48)
    out = run_script(image, bundle312 / "kt_predict.py", tmp_path, data)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "kaggle_transfer" in out.stdout and "/kaggle/working" not in out.stdout.split("from")[-1]
    csv = tmp_path / "working" / "submission.csv"
    assert submission.problems(APTOS, csv, data) == []
    # wheels were installed into a temp folder, not into the notebook's output
    assert sorted(p.name for p in (tmp_path / "working").iterdir()) == ["kt_manifest.json", "submission.csv"]


def test_a_wheel_for_another_python_is_one_line_in_the_log(image, bundle312, tmp_path):
    broken = Path(shutil.copytree(bundle312, tmp_path / "bundle"))
    cp311 = next(Path(p) for p in glob.glob(str(bundle312 / "onnxruntime-*.whl")))
    shutil.copy(cp311, broken / cp311.name.replace("cp312-cp312", "cp311-cp311"))
    out = run_script(image, broken / "kt_predict.py", tmp_path, tmp_path)
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("kt: cannot install onnxruntime-") and "cp311" in last and "on Python 3.12" in last
    assert "kt bundle --python 3.12" in last


def test_a_notebook_without_its_bundle_says_so(image, bundle312, tmp_path):
    lonely = tmp_path / "script" / "kt_predict.py"
    lonely.parent.mkdir()
    shutil.copy(bundle312 / "kt_predict.py", lonely)
    out = run_script(image, lonely, tmp_path, tmp_path, KT_BUNDLE_DIR=str(tmp_path / "nowhere"))
    assert out.returncode != 0 and "StopIteration" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("kt: the bundle dataset is not attached")
