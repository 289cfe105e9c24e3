"""The bundle's script where Kaggle runs it: a private mount and network namespace whose /kaggle is laid
out as Kaggle lays it (the 2026 layout and the older one), the notebook image's Python (3.12, and 3.13 for
the image that will likely follow), no torch, no network, no kt-specific environment variable, and a
hidden test set swapped in (other ids, more images, APTOS's real image sizes).

The "image" is a virtual environment of that Python holding what Kaggle's image ships and kt's prediction
needs (numpy, pandas, Pillow, OpenCV, PyYAML, tqdm, SciPy, scikit-learn, onnx; no onnxruntime, no torch),
kept in ~/.cache/kt-tests between runs, as are the fetched onnxruntime wheels. Needs pyenv's (or the
system's) Python 3.12/3.13, the package index for the first run, and root for `unshare -m -n`."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kaggle_transfer.competitions import APTOS, submission

IMAGE_PACKAGES = ["numpy", "pandas", "pillow", "opencv-python-headless", "pyyaml", "tqdm", "scipy", "scikit-learn",
                  "onnx"]
CACHE = Path(os.path.expanduser("~/.cache/kt-tests"))
APTOS_SIZES = [(3216, 2136), (2416, 1736), (1050, 1050), (819, 614)]  # sizes of APTOS fundus photos


def interpreter(version: str) -> str | None:
    """A real Python `version` (pyenv's first: its shims fail for a version that is not selected)."""
    candidates = sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}*/bin/python{version}")))
    candidates += [p for p in [shutil.which(f"python{version}")] if p and "shims" not in p]
    return candidates[0] if candidates else None


def namespaces_work() -> str | None:
    """None when `unshare -m -n` with a tmpfs mount works here, else why not."""
    if not shutil.which("unshare") or not shutil.which("chroot"):
        return "unshare or chroot is not installed"
    done = subprocess.run(["unshare", "-m", "-n", "sh", "-c", "mount -t tmpfs none /mnt"], capture_output=True,
                          text=True)
    return None if done.returncode == 0 else f"mount namespaces are refused here: {done.stderr.strip()[:200]}"


REFUSED = namespaces_work()
pytestmark = [pytest.mark.skipif(REFUSED is not None, reason=str(REFUSED)), pytest.mark.slow, pytest.mark.network]


def image_python(version: str) -> Path:
    """A virtual environment standing in for Kaggle's notebook image (made once, then reused)."""
    base = interpreter(version)
    if base is None:
        pytest.skip(f"no Python {version} on this machine (pyenv or python{version})")
    venv = CACHE / f"py{version.replace('.', '')}-image"
    marker = venv / ".kt-ready"
    if not marker.is_file() or marker.read_text() != "\n".join(IMAGE_PACKAGES):
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([base, "-m", "venv", str(venv)], check=True, capture_output=True)
        done = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--no-compile", *IMAGE_PACKAGES],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        marker.write_text("\n".join(IMAGE_PACKAGES))
    return venv / "bin" / "python"


@pytest.fixture(scope="module")
def wheel_cache():
    """Fetched wheels persist across test runs (the cache kt uses is redirected here)."""
    old = os.environ.get("KT_WHEEL_CACHE")
    os.environ["KT_WHEEL_CACHE"] = str(CACHE / "wheels")
    yield CACHE / "wheels"
    if old is None:
        os.environ.pop("KT_WHEEL_CACHE")
    else:
        os.environ["KT_WHEEL_CACHE"] = old


@pytest.fixture(scope="module")
def bundle(onnx_model, tmp_path_factory, wheel_cache) -> dict[str, Path]:
    """What kt submit pushes: the bundle and, beside it, the runtime dataset (onnxruntime for 3.12, 3.13)."""
    from kaggle_transfer.inference.predictor import Choice
    from kaggle_transfer.kaggle.bundle import NotebookTarget, Wheels, build, runtime_folder

    root = tmp_path_factory.mktemp("kaggle-bundle")
    target = NotebookTarget(python="3.12,3.13", accelerator="none")
    runtime = runtime_folder(target, root=root / "runtime")
    build("aptos", Choice(models=[onnx_model]), root / "bundle", target=target, wheels=Wheels(runtime_dir=runtime))
    assert {w.name.split("-")[2] for w in runtime.glob("onnxruntime-*.whl")} == {"cp312", "cp313"}
    return {"bundle": root / "bundle", "runtime": runtime}


def hidden_test_set(folder: Path, public: Path) -> list[str]:
    """The competition's files as the scoring rerun sees them: train files kept, the test set replaced."""
    shutil.copytree(public, folder, ignore=shutil.ignore_patterns("test_images", "test.csv", "sample_submission.csv"))
    (folder / "test_images").mkdir()
    rng = np.random.default_rng(7)
    ids = [f"hidden{i:04d}" for i in range(14)]
    for i, image_id in enumerate(ids):
        w, h = APTOS_SIZES[i % len(APTOS_SIZES)] if i < 4 else (640, 480)
        y, x = np.mgrid[0:h, 0:w]
        disc = ((x - w / 2) ** 2 + (y - h / 2) ** 2 < (min(w, h) / 2.2) ** 2)[..., None]
        pixels = (disc * rng.integers(60, 200, size=3)).astype(np.uint8)
        Image.fromarray(pixels).save(folder / "test_images" / f"{image_id}.png")
    pd.DataFrame({"id_code": ids}).to_csv(folder / "test.csv", index=False)
    pd.DataFrame({"id_code": ids, "diagnosis": 0}).to_csv(folder / "sample_submission.csv", index=False)
    return ids


LAYOUTS = {
    "2026": {"competition": "competitions/aptos2019-blindness-detection",
             "bundle": "datasets/kt-tester/kt-bundle-aptos", "runtime": "datasets/kt-tester/{runtime}"},
    "legacy": {"competition": "aptos2019-blindness-detection", "bundle": "kt-bundle-aptos", "runtime": "{runtime}"},
}

CHROOT = r"""
set -e
R="$1"; K="$2"; shift 2
mount -t tmpfs tmpfs "$R"
for d in usr etc root; do mkdir -p "$R/$d"; mount --rbind "/$d" "$R/$d"; done
for l in bin lib lib64 sbin; do if [ -L "/$l" ]; then ln -s "$(readlink "/$l")" "$R/$l";
  elif [ -d "/$l" ]; then mkdir -p "$R/$l"; mount --rbind "/$l" "$R/$l"; fi; done
mkdir -p "$R/proc" "$R/dev" "$R/tmp" "$R/kaggle"
mount -t proc proc "$R/proc"; mount --rbind /dev "$R/dev"
mount --bind "$K" "$R/kaggle"
mount --bind "$K/input" "$R/kaggle/input"; mount -o remount,bind,ro "$R/kaggle/input"
exec chroot "$R" env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/tmp LANG=C.UTF-8 "$@"
"""


def play_notebook(kaggle: Path, python: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run /kaggle/src/kt_predict.py as Kaggle would: own mounts, no network, a clean environment."""
    root = tmp_path / "root"
    root.mkdir()
    return subprocess.run(["unshare", "-m", "-n", "sh", "-c", CHROOT, "sh", str(root), str(kaggle), str(python),
                           "/kaggle/src/kt_predict.py"], capture_output=True, text=True, timeout=600)


def lay_out(kaggle: Path, layout: str, bundle: dict[str, Path], data: Path) -> None:
    paths = {k: v.format(runtime=bundle["runtime"].name) for k, v in LAYOUTS[layout].items()}
    for key, source in (("competition", data), ("bundle", bundle["bundle"]), ("runtime", bundle["runtime"])):
        shutil.copytree(source, kaggle / "input" / paths[key], symlinks=False)
    (kaggle / "working").mkdir()
    (kaggle / "src").mkdir()  # the notebook's code is not inside its dataset
    shutil.copy(bundle["bundle"] / "kt_predict.py", kaggle / "src" / "kt_predict.py")


@pytest.mark.parametrize("python", ["3.12", "3.13"])
@pytest.mark.parametrize("layout", ["2026", "legacy"])
def test_the_notebook_finds_its_files_and_answers_the_hidden_test_set(bundle, aptos_dir, tmp_path, layout, python):
    image = image_python(python)
    kaggle = tmp_path / "kaggle"
    data = tmp_path / "hidden"
    ids = hidden_test_set(data, aptos_dir)
    lay_out(kaggle, layout, bundle, data)
    out = play_notebook(kaggle, image, tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    paths = {k: v.format(runtime=bundle["runtime"].name) for k, v in LAYOUTS[layout].items()}
    assert f"kt: bundle: /kaggle/input/{paths['bundle']}" in out.stdout
    assert f"kt: runtime: /kaggle/input/{paths['runtime']}" in out.stdout
    assert f"kt: data: /kaggle/input/{paths['competition']}" in out.stdout
    csv = kaggle / "working" / "submission.csv"
    assert submission.problems(APTOS, csv, data) == []
    assert sorted(pd.read_csv(csv)["id_code"]) == ids  # the hidden ids, not the public ones
    manifest = json.loads((kaggle / "working" / "kt_manifest.json").read_text())
    assert manifest["python"].startswith(python) and manifest["onnxruntime"] == "1.26.0"
    assert manifest["rows"] == len(ids) and manifest["bundle_id"]
    assert manifest["png_decoder"] == "imagecodecs 2026.3.6"  # the runtime dataset's wheel
    assert sorted(p.name for p in (kaggle / "working").iterdir()) == ["kt_manifest.json", "submission.csv"]


def test_without_the_decoder_wheel_the_notebook_decodes_with_opencv_to_the_same_answers(bundle, aptos_dir, tmp_path):
    """The fast decoder's wheel removed from the runtime dataset: the notebook falls back to the image's
    OpenCV, says so in its manifest, and writes the same submission as with the wheel."""
    image = image_python("3.12")
    data = tmp_path / "hidden"
    hidden_test_set(data, aptos_dir)
    answers = {}
    for run, keep in (("with", True), ("without", False)):
        kaggle = tmp_path / run / "kaggle"
        lay_out(kaggle, "2026", bundle, data)
        for wheel in [] if keep else (kaggle / "input").rglob("imagecodecs-*.whl"):
            wheel.unlink()
        out = play_notebook(kaggle, image, tmp_path / run)
        assert out.returncode == 0, out.stderr[-3000:]
        manifest = json.loads((kaggle / "working" / "kt_manifest.json").read_text())
        assert manifest["png_decoder"].startswith("imagecodecs" if keep else "OpenCV"), manifest["png_decoder"]
        answers[run] = (kaggle / "working" / "submission.csv").read_text()
    assert answers["with"] == answers["without"]


def test_a_notebook_without_its_bundle_or_runtime_says_so(bundle, aptos_dir, tmp_path):
    image = image_python("3.12")
    kaggle = tmp_path / "kaggle"
    lay_out(kaggle, "2026", bundle, aptos_dir)
    shutil.rmtree(kaggle / "input" / "datasets" / "kt-tester" / bundle["runtime"].name)
    out = play_notebook(kaggle, image, tmp_path)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith(f"kt: the runtime dataset {bundle['runtime'].name} is "
                                                          "not attached")
    shutil.rmtree(kaggle / "input" / "datasets")
    (tmp_path / "root").rmdir()
    out = play_notebook(kaggle, image, tmp_path)
    assert out.returncode == 1 and out.stderr.strip().splitlines()[-1].startswith(
        "kt: the bundle dataset kt-bundle-aptos is not attached")


def test_a_bundle_without_a_wheel_for_the_interpreter_is_one_line(bundle, aptos_dir, tmp_path):
    image = image_python("3.12")
    kaggle = tmp_path / "kaggle"
    lay_out(kaggle, "2026", bundle, aptos_dir)
    for wheel in (kaggle / "input").rglob("onnxruntime-*cp312*.whl"):
        wheel.unlink()
    out = play_notebook(kaggle, image, tmp_path)
    last = out.stderr.strip().splitlines()[-1]
    assert out.returncode == 1 and last.startswith("kt: cannot install onnxruntime-") and "cp313" in last
    assert "kt bundle --python 3.12" in last


def test_the_pinned_gpu_runtime_links_the_images_cuda(wheel_cache):
    """The wheel kt ships for GPU notebooks: its CUDA provider's NEEDED entries name CUDA 12, the major
    of Kaggle's GPU image (read from the real wheel, fetched from the package index once)."""
    from kaggle_transfer.kaggle import runtime

    wheel = runtime.fetch(runtime.RUNTIMES["gpu"], "3.12")
    needed = runtime.elf_needed(wheel, "onnxruntime/capi/libonnxruntime_providers_cuda.so")
    assert "libcublasLt.so.12" in needed and "libcudart.so.12" in needed
    assert runtime.cuda_majors(wheel) == {runtime.IMAGE_CUDA_MAJOR} == {12}
    runtime.check_cuda(wheel)  # does not raise


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc builds the stand-in CUDA 13 provider")
def test_a_gpu_runtime_built_for_another_cuda_is_refused(onnx_model, tmp_path):
    """A wheel whose CUDA provider is a real ELF library linking libcublasLt.so.13 (what onnxruntime-gpu
    1.27+ ships): kt bundle refuses it before anything is uploaded."""
    from click.testing import CliRunner

    from kaggle_transfer.cli import main

    src = tmp_path / "x.c"
    src.write_text("int kt_stub(void) { return 0; }\n")
    for lib in ("cublasLt", "cudart"):
        subprocess.run(["gcc", "-shared", "-fPIC", f"-Wl,-soname,lib{lib}.so.13", "-o", str(tmp_path / f"lib{lib}.so"),
                        str(src)], check=True)
    provider = tmp_path / "libonnxruntime_providers_cuda.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(provider), str(src), f"-L{tmp_path}", "-Wl,--no-as-needed",
                    "-lcublasLt", "-lcudart"], check=True)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    import zipfile

    for tag in ("cp312", "cp313"):
        with zipfile.ZipFile(wheels / f"onnxruntime_gpu-1.27.0-{tag}-{tag}-manylinux_2_28_x86_64.whl", "w",
                             zipfile.ZIP_DEFLATED) as zf:
            zf.write(provider, "onnxruntime/capi/libonnxruntime_providers_cuda.so")
    result = CliRunner().invoke(main, ["bundle", "aptos", str(onnx_model), "-o", str(tmp_path / "b"),
                                       "--no-fetch-wheels", "--wheels-from", str(wheels)])
    assert result.exit_code == 2 and not (tmp_path / "b").exists()
    assert "links CUDA 13 but Kaggle's GPU image has CUDA 12" in result.output
    assert "onnxruntime-gpu==1.26.0" in result.output


def test_the_notebook_runs_its_own_build_when_an_older_one_is_attached(bundle, onnx_model, aptos_dir, tmp_path):
    """Two builds of the bundle dataset attached (an older version kept as an input): the script runs the
    build it was pushed with, by bundle_id, wherever the other sorts; with only the other, one line."""
    from kaggle_transfer.inference.predictor import Choice
    from kaggle_transfer.kaggle.bundle import NotebookTarget, Wheels, build

    image = image_python("3.12")
    old = tmp_path / "old"
    build("aptos", Choice(models=[onnx_model]), old, target=NotebookTarget(python="3.12,3.13", accelerator="none"),
          wheels=Wheels(runtime_dir=bundle["runtime"]))
    kaggle = tmp_path / "kaggle"
    lay_out(kaggle, "2026", bundle, aptos_dir)
    shutil.copytree(old, kaggle / "input" / "datasets" / "kt-tester" / "a-kt-bundle-aptos-old")  # searched first
    out = play_notebook(kaggle, image, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "kt: bundle: /kaggle/input/datasets/kt-tester/kt-bundle-aptos\n" in out.stdout
    ran = json.loads((kaggle / "working" / "kt_manifest.json").read_text())
    assert ran["bundle_id"] == json.loads((bundle["bundle"] / "bundle.json").read_text())["bundle_id"]
    shutil.rmtree(kaggle / "input" / "datasets" / "kt-tester" / "kt-bundle-aptos")
    for name in ("submission.csv", "kt_manifest.json"):
        (kaggle / "working" / name).unlink()
    (tmp_path / "root").rmdir()
    out = play_notebook(kaggle, image, tmp_path)
    last = out.stderr.strip().splitlines()[-1]
    assert out.returncode == 1 and "a-kt-bundle-aptos-old holds another build of it" in last
