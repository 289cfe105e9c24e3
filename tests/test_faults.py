"""The fault catalogue: what a hostile or unlucky user can do to kt, one case each.

Every case asserts exit code 2, one `error:` line naming the file, key or flag at fault, and the file
tree before and after: nothing written outside its root, nothing half-written left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
import torch
import yaml
from click.testing import CliRunner

from kaggle_transfer.cli import main
from kaggle_transfer.errors import KtError

TINY = ["--arch", "test_resnet", "--no-pretrained", "--size", "32", "--epochs", "1", "--workers", "0",
        "--set", "max_steps=1", "--set", "batch_size=16", "--no-progress"]


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in Path(root).rglob("*")} if Path(root).exists() else set()


def error(args, env=None) -> str:
    """Run kt in-process; it must fail with exit 2 and exactly one `error:` line. Returns that line."""
    result = CliRunner(env=env).invoke(main, [str(a) for a in args])
    assert result.exit_code == 2, (result.output, result.exception)
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.output, lines
    return errors[0]


def ok(args, env=None):
    result = CliRunner(env=env).invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def retag(src: Path, dst: Path, **changes) -> Path:
    proto = onnx.load(str(src))
    for prop in proto.metadata_props:
        if prop.key == "kt":
            meta = json.loads(prop.value)
            if "competition" in changes and "recipe" not in changes:  # a consistent file for another contest
                changes["recipe"] = {**meta["recipe"], "competition": changes["competition"]}
            prop.value = changes.pop("_raw") if "_raw" in changes else json.dumps({**meta, **changes})
    onnx.save(proto, str(dst))
    return dst


def bomb_png(path: Path, side: int = 20000) -> Path:
    """A 100-byte PNG whose header claims side x side RGB pixels (a decompression bomb's signature)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    idat = zlib.compress(b"\0" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


@pytest.fixture
def forest(tmp_path, aptos_dir):
    """A YAML-described competition over the APTOS files; tests edit the spec to attack."""
    def make(**changes) -> Path:
        spec = {"name": "forest", "task": "multiclass", "num_classes": 5, "train_csv": "train.csv",
                "id_column": "id_code", "target_column": "diagnosis", "image_pattern": "train_images/{id}.png",
                "test_image_pattern": "test_images/{id}.png", "test_csv": "test.csv", **changes}
        path = tmp_path / "forest.yaml"
        path.write_text(yaml.safe_dump(spec))
        return path
    return make


# --- 1. nothing escapes its folder ------------------------------------------------------------------

@pytest.mark.parametrize("changes, key", [
    ({"name": "../../x"}, "'name'"),
    ({"name": "/abs"}, "'name'"),
    ({"image_pattern": "../{id}.png"}, "'image_pattern'"),
    ({"train_csv": "/etc/passwd"}, "'train_csv'"),
    ({"test_image_pattern": "../../{id}"}, "'test_image_pattern'"),
])
def test_a_yaml_cannot_point_outside_the_data_or_runs_folder(forest, aptos_dir, tmp_path, changes, key):
    spec = forest(**changes)
    before = tree(tmp_path.parent)
    line = error(["train", spec, "--data-dir", aptos_dir, "--runs-root", tmp_path / "runs", *TINY])
    assert key in line
    assert tree(tmp_path.parent) == before


def test_an_id_in_a_csv_cannot_read_outside_the_data_folder(aptos_copy, tmp_path):
    df = pd.read_csv(aptos_copy / "train.csv")
    shutil.copy(aptos_copy / "train_images" / f"{df.loc[0, 'id_code']}.png", tmp_path / "secret.png")
    df.loc[0, "id_code"] = "../../secret"  # an existing file beside the data folder
    df.to_csv(aptos_copy / "train.csv", index=False)
    line = error(["train", "aptos", "--data-dir", aptos_copy, "--runs-root", tmp_path / "runs", *TINY])
    assert "leads outside" in line and "secret.png" in line
    assert not (tmp_path / "runs").exists() or tree(tmp_path / "runs") <= {"aptos"}


def test_a_model_cannot_name_a_folder_outside_the_submissions_root(onnx_model, aptos_dir, tmp_path):
    hostile = retag(onnx_model, tmp_path / "hostile.onnx", competition="../../../tmp/owned")
    before = tree(tmp_path)
    line = error(["predict", "custom", hostile, "--data-dir", aptos_dir, "--out-root", tmp_path / "subs"])
    assert "hostile.onnx" in line and "'competition'" in line
    assert tree(tmp_path) == before and not Path("/tmp/owned").exists()


# --- 2. nothing broken passes as valid ---------------------------------------------------------------

@pytest.mark.parametrize("flags, key", [
    (["--set", "lr=inf"], "lr=inf is not a finite number"),
    (["--lr", "nan"], "lr=nan is not a finite number"),
    (["--set", "dropout=2"], "dropout=2.0 is outside [0, 1)"),
    (["--set", "workers=-1"], "workers=-1 is outside [0, 256]"),
    (["--folds", "all", "--set", "folds=1"], "folds=1 is outside [2, 1000]"),
])
def test_impossible_settings_are_refused_before_a_run_folder_exists(aptos_dir, tmp_path, flags, key):
    line = error(["train", "aptos", "--data-dir", aptos_dir, "--runs-root", tmp_path, *TINY, *flags])
    assert key in line
    assert tree(tmp_path) == set()


def test_a_diverging_run_stops_instead_of_keeping_a_nan_model(aptos_dir, tmp_path, monkeypatch):
    """A model whose validation outputs turn NaN (a diverged run) is not kept as the best epoch."""
    from kaggle_transfer.training import loop

    real = loop.predict_raw
    monkeypatch.setattr(loop, "predict_raw", lambda *a, **k: real(*a, **k) * np.nan)
    line = error(["train", "aptos", "--data-dir", aptos_dir, "--runs-root", tmp_path, *TINY])
    assert "validation outputs became NaN or inf at epoch 1" in line and "lower --lr" in line
    assert not list(tmp_path.rglob("best.pt")) and tree(tmp_path) <= {"aptos"}


def test_export_refuses_a_nan_model(trained_run, tmp_path):
    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    weights = torch.load(run / "best.pt", weights_only=True)
    torch.save({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in weights.items()},
               run / "best.pt")
    (run / "model.onnx").unlink(missing_ok=True)
    line = error(["export", run])
    assert "differs from torch by nan" in line and "not written" in line
    assert not (run / "model.onnx").exists() and not list(run.glob(".*.tmp"))


@pytest.mark.parametrize("changes, key", [
    ({"fitted": {"cutpoints": [0.5, float("nan"), 2.5, 3.5]}}, "'fitted.cutpoints'"),
    ({"fitted": {"cutpoints": [0.5, 1.5]}}, "'fitted.cutpoints'"),
    ({"fitted": {"cutpoints": [3.5, 2.5, 1.5, 0.5]}}, "'fitted.cutpoints'"),
    ({"class_names": ["a", "b"]}, "'class_names'"),
    ({"num_classes": 3, "class_names": list("abc"), "fitted": {}}, "'num_classes'"),
    ({"task": "multiclass"}, "'num_classes'"),
    ({"size": 100000}, "'size'"),
    ({"tta": "spin"}, "'tta'"),
    ({"_raw": "{not json"}, "not valid JSON"),
])
def test_damaged_metadata_is_refused_with_its_key(onnx_model, aptos_dir, tmp_path, changes, key):
    bad = retag(onnx_model, tmp_path / "bad.onnx", **changes)
    line = error(["predict", "aptos", bad, "--data-dir", aptos_dir, "--out-root", tmp_path / "subs"])
    assert "bad.onnx" in line and key in line
    assert not (tmp_path / "subs").exists() or tree(tmp_path / "subs") <= {"aptos"}


def test_validate_rejects_non_finite_answers(aptos_dir, tmp_path):
    sample = pd.read_csv(aptos_dir / "sample_submission.csv")
    for value in ("nan", "inf"):
        sample.assign(diagnosis=value).to_csv(tmp_path / "sub.csv", index=False)
        assert "diagnosis" in error(["validate", "aptos", tmp_path / "sub.csv", "--data-dir", aptos_dir])


# --- 3. concurrent commands ---------------------------------------------------------------------------

def test_two_predicts_in_the_same_second_never_share_a_folder(onnx_model, aptos_dir, tmp_path):
    cmd = [sys.executable, "-m", "kaggle_transfer", "predict", "aptos", str(onnx_model), "--data-dir", str(aptos_dir),
           "--out-root", str(tmp_path / "subs"), "--label", "same", "--no-progress", "--workers", "1"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    folders = sorted((tmp_path / "subs" / "aptos").iterdir())
    succeeded = [r for r in results if r[0] == 0]
    assert len(folders) == len(succeeded) >= 1  # one folder per success: no result overwritten by another
    for code, err in results:
        assert code == 0 or (code == 2 and "already exists" in err), err
    for folder in folders:
        assert (folder / "submission.csv").is_file() and (folder / "manifest.json").is_file()


# --- 4. bad images and archives -----------------------------------------------------------------------

def test_a_decompression_bomb_is_a_bad_image(aptos_copy, tmp_path):
    victim = pd.read_csv(aptos_copy / "train.csv")["id_code"][0]
    bomb_png(aptos_copy / "train_images" / f"{victim}.png")
    line = error(["train", "aptos", "--data-dir", aptos_copy, "--runs-root", tmp_path / "runs", *TINY,
                  "--set", "cache=false", "--set", "max_steps=0"])
    assert f"{victim}.png" in line and "pixel budget" in line
    assert tree(tmp_path / "runs") <= {"aptos"}  # nothing produced, no folder kept
    out = ok(["train", "aptos", "--data-dir", aptos_copy, "--runs-root", tmp_path / "runs", *TINY,
              "--skip-bad-images"])
    assert "skipped 1 rows with missing or unreadable images" in out.output


def test_the_pixel_budget_is_configurable(aptos_dir, tmp_path):
    from kaggle_transfer.data import images

    path = str(next((aptos_dir / "train_images").iterdir()))
    assert images.probe(path) is None
    os.environ["KT_MAX_PIXELS"] = "100"
    try:
        assert "over the pixel budget of 100" in images.probe(path)
        with pytest.raises(KtError, match="pixel budget"):
            images.read_image([path])
    finally:
        del os.environ["KT_MAX_PIXELS"]


def test_predict_skips_bad_test_images_but_answers_every_id(onnx_model, aptos_copy, tmp_path):
    test_ids = pd.read_csv(aptos_copy / "test.csv")["id_code"]
    (aptos_copy / "test_images" / f"{test_ids[0]}.png").write_bytes(b"not an image")
    (aptos_copy / "test_images" / f"{test_ids[1]}.png").unlink()
    # its header reads, its pixels do not: found only when decoded, and skipped all the same
    truncated = aptos_copy / "test_images" / f"{test_ids[2]}.png"
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    line = error(["predict", "aptos", onnx_model, "--data-dir", aptos_copy, "--out-root", tmp_path / "subs",
                  "--no-progress"])
    assert "--skip-bad-images" in line
    assert tree(tmp_path / "subs") <= {"aptos"}  # no empty submission folder left
    result = ok(["predict", "aptos", onnx_model, "--data-dir", aptos_copy, "--out-root", tmp_path / "subs",
                 "--no-progress", "--skip-bad-images"])
    assert "3 test image(s) skipped" in result.output
    csv = next((tmp_path / "subs" / "aptos").glob("*/submission.csv"))
    assert set(pd.read_csv(csv)["id_code"]) == set(test_ids)
    manifest = json.loads((csv.parent / "manifest.json").read_text())
    assert manifest["bad_images"]["count"] == 3 and set(manifest["bad_images"]["ids"]) == set(test_ids[:3])
    assert any(truncated.name in why for why in manifest["bad_images"]["problems"])
    assert not any("--skip-bad-images" in why for why in manifest["bad_images"]["problems"])  # advice, not a fact
    for image in (aptos_copy / "test_images").iterdir():  # every one empty: one line, not a traceback
        image.write_bytes(b"")
    line = error(["predict", "aptos", onnx_model, "--data-dir", aptos_copy, "--out-root", tmp_path / "subs2",
                  "--no-progress", "--skip-bad-images"])
    assert "every test image in" in line and "skipped as bad" in line


def test_prepare_reports_bad_images_and_rebuilds_damaged_entries(aptos_copy, tmp_path):
    ids = pd.read_csv(aptos_copy / "train.csv")["id_code"]
    (aptos_copy / "train_images" / f"{ids[0]}.png").write_bytes(b"garbage")
    cache = tmp_path / "cache"
    first = ok(["prepare", "aptos", "--size", "32", "--data-dir", aptos_copy, "--cache-dir", cache, "--workers", "1",
                "--no-progress"])
    assert "0 failed" in first.output  # the corrupt image was left out by its header check, not crashed on
    entry = next((cache / "aptos" / "32").glob("*.kt.jpg"))  # the default format
    entry.write_bytes(entry.read_bytes()[:40])  # a truncated entry, as a full disk or a kill leaves it
    (cache / "aptos" / "32" / ".stale.kt.png.abc.tmp").write_bytes(b"half")
    again = ok(["prepare", "aptos", "--size", "32", "--data-dir", aptos_copy, "--cache-dir", cache, "--workers",
                "1", "--no-progress"])
    assert again.output.startswith("test images") or "1 cached" in again.output
    assert "1 cached" in again.output and not list((cache / "aptos" / "32").glob(".*.tmp"))
    from kaggle_transfer.data.cache import entry_intact

    assert entry_intact(entry)


def _fake_api(archive_bytes: bytes):
    class Api:
        def competition_download_files(self, slug, path, force, quiet):
            Path(path, f"{slug}.zip").write_bytes(archive_bytes)
    return Api()


def _zip(members: dict[str, bytes]) -> bytes:
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.mark.parametrize("archive, message", [
    (_zip({"train.csv": b"a,b\n", "big.bin": b"\0" * (8 << 20)}), "decompression bomb"),
    (b"PK\x03\x04 truncated", "not a readable zip"),
    (_zip({"../escape.txt": b"x"}), "outside"),
])
def test_download_refuses_bad_archives_and_leaves_nothing(tmp_path, archive, message):
    from kaggle_transfer.kaggle.client import download

    dest = tmp_path / "data" / "aptos"
    with pytest.raises(KtError, match=message):
        download("aptos2019-blindness-detection", dest, api=_fake_api(archive), quiet=True)
    assert not dest.exists() and not (tmp_path / "escape.txt").exists()
    assert not [p for p in tree(tmp_path / "data") if "extracting" in p]


def test_download_checks_free_space_first(tmp_path, monkeypatch):
    from kaggle_transfer.kaggle import archives
    from kaggle_transfer.kaggle import client as kaggle_client

    monkeypatch.setattr(archives.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10, 10, 10))
    dest = tmp_path / "data" / "aptos"
    with pytest.raises(KtError, match="GiB free"):
        kaggle_client.download("x-y", dest, api=_fake_api(_zip({"train.csv": b"a,b\n" * 100})), quiet=True)
    assert not dest.exists()


# --- 6. paths stored as typed ---------------------------------------------------------------------------

def test_resume_and_ensembles_work_from_another_folder(aptos_dir, tmp_path, monkeypatch):
    data = Path(shutil.copytree(aptos_dir, tmp_path / "work" / "data"))
    monkeypatch.chdir(tmp_path / "work")
    ok(["train", "aptos", "--data-dir", "data", "--runs-root", "runs", *TINY])
    run = next(Path("runs/aptos").iterdir())
    assert json.loads((run / "run.json").read_text())["data_dir"] == str(data.resolve())
    ok(["export", run])
    ok(["ensemble", "aptos", run, "-o", "spec.json", "--method", "mean"])
    monkeypatch.chdir(tmp_path)  # elsewhere: the recorded paths still lead to the data and the models
    ok(["train", "--resume", Path("work") / run])
    ok(["predict", "aptos", "--ensemble", "work/spec.json", "--data-dir", data, "--out-root", "subs",
        "--no-progress"])
    # the submission's manifest names the spec absolutely: kt submit reads it from any folder
    manifest = json.loads(next(Path("subs/aptos").glob("*/manifest.json")).read_text())
    assert manifest["ensemble"] == str((tmp_path / "work" / "spec.json").resolve())
    assert "--lr" in error(["train", "--resume", Path("work") / run, "--lr", "0.1"])
    assert "pass more to extend it" in error(["train", "--resume", Path("work") / run, "--epochs", "1"])
    moved = Path(shutil.move(str(data), tmp_path / "moved"))
    assert "pass --data-dir" in error(["train", "--resume", Path("work") / run])
    ok(["train", "--resume", Path("work") / run, "--data-dir", moved])  # honoured, and recorded
    assert json.loads((Path("work") / run / "run.json").read_text())["data_dir"] == str(moved.resolve())


# --- 7. one line, not a traceback ------------------------------------------------------------------------

def test_damaged_run_files_are_one_line(trained_run, tmp_path):
    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    (run / "last.pt").write_bytes(b"PK\x03\x04 not a checkpoint")
    assert "last.pt is damaged" in error(["train", "--resume", run])
    (run / "run.json").write_text("{oops")
    assert "run.json is not valid JSON" in error(["train", "--resume", run])
    (run / "best.pt").write_bytes(b"\x00" * 10)
    assert "best.pt is damaged" in error(["export", run])


def test_malformed_inputs_are_one_line(onnx_model, aptos_dir, tmp_path):
    (tmp_path / "spec.json").write_text(json.dumps({"members": "all of them"}))
    assert "not an ensemble spec" in error(["predict", "aptos", "--ensemble", tmp_path / "spec.json",
                                            "--data-dir", aptos_dir])
    (tmp_path / "recipe.yaml").write_bytes(bytes(range(256)) * 4)
    assert "recipe" in error(["train", "aptos", "-c", tmp_path / "recipe.yaml", "--data-dir", aptos_dir])
    (tmp_path / "a-file").write_text("x")
    line = error(["predict", "aptos", onnx_model, "--data-dir", aptos_dir, "--out-root", tmp_path / "a-file"])
    assert "a-file" in line and "not a folder" in line
    result = CliRunner().invoke(main, ["predict", "aptos", str(onnx_model), "--batch-size", "0"])
    assert result.exit_code == 2 and "--batch-size" in result.output and "Traceback" not in result.output


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (needs mount rights; root on these machines), unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (no mount rights): the disk-full and read-only cases need one")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_is_one_line_and_leaves_no_submission(onnx_model, aptos_dir, small_disk):
    (small_disk / "subs" / "aptos").mkdir(parents=True)
    fd = os.open(small_disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:  # fill the disk to the last byte
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    line = error(["predict", "aptos", onnx_model, "--data-dir", aptos_dir, "--out-root", small_disk / "subs",
                  "--no-progress"])
    assert "No space left on device" in line and "free some space" in line
    assert tree(small_disk / "subs") == {"aptos"}


def test_a_read_only_folder_is_one_line(aptos_dir, small_disk):
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    line = error(["train", "aptos", "--data-dir", aptos_dir, "--runs-root", small_disk / "runs", *TINY])
    assert "Read-only file system" in line and "writable folder" in line


# --- 8. leftovers --------------------------------------------------------------------------------------------

def test_a_failed_run_leaves_no_folder(aptos_dir, tmp_path):
    # fails after the preflight, inside fit (the external source's folder is missing)
    line = error(["train", "aptos", "--data-dir", aptos_dir, "--runs-root", tmp_path, *TINY, "--external", "dr2015",
                  "--external-dir", f"dr2015={tmp_path / 'nope'}"])
    assert "dr2015" in line
    assert tree(tmp_path) <= {"aptos"}


def test_an_invalid_submission_is_not_left_behind(onnx_model, aptos_copy, tmp_path):
    sample = pd.read_csv(aptos_copy / "sample_submission.csv")
    sample.iloc[:-1].to_csv(aptos_copy / "sample_submission.csv", index=False)  # test.csv has one more id
    line = error(["predict", "aptos", onnx_model, "--data-dir", aptos_copy, "--out-root", tmp_path / "subs",
                  "--no-progress"])
    assert "submission.csv" in line or "sample" in line
    assert not list((tmp_path / "subs").rglob("submission.csv"))


def test_stale_temp_files_are_cleaned_on_the_next_run(trained_run, aptos_dir, tmp_path):
    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    (run / ".last.pt.x1y2.tmp").write_bytes(b"half a checkpoint")  # what a kill -9 mid-save leaves
    ok(["train", "--resume", run, "--data-dir", aptos_dir])
    assert not list(run.glob(".*.tmp"))
    assert np.isfinite(json.loads((run / "metrics.json").read_text())["score"])


# --- 7. hostile inputs, third round: no code from a file, one schema per file ---------------------------

@pytest.mark.parametrize("changes, key", [
    ({"image_pattern": "train_images/{id:>100000000}.png"}, "'image_pattern' has the field '{id:>100000000}'"),
    ({"test_image_pattern": "test_images/{id!r}.png"}, "'test_image_pattern' has the field '{id!r}'"),
    ({"image_pattern": "train_images/{id.__class__}.png"}, "'image_pattern' has the field '{id.__class__}'"),
    ({"image_pattern": "train_images/{id[0]}.png"}, "'image_pattern'"),
    ({"image_pattern": "train_images/{id}{.png"}, "'image_pattern'"),
    ({"num_classes": "abc"}, "'num_classes' is 'abc'; it must be an integer"),
    ({"num_classes": True}, "'num_classes'"),
    ({"id_column": 5}, "'id_column' is '5'; it must be a string"),
    ({"channels": 3}, "'channels'"),
    ({"label_separator": 5}, "'label_separator'"),
    ({"metric": ["qwk"]}, "'metric'"),
    ({"slug": ["a", "b"]}, "'slug'"),
    ({"title": {"a": 1}}, "'title'"),
    ({"submission_columns": "id_code"}, "'submission_columns' is 'id_code'; it must be a list"),
])
def test_wrong_yaml_values_are_one_line_naming_the_key(forest, aptos_dir, tmp_path, changes, key):
    spec = forest(**changes)
    before = tree(tmp_path.parent)
    line = error(["train", spec, "--data-dir", aptos_dir, "--runs-root", tmp_path / "runs", *TINY])
    assert key in line and len(line) < 400
    assert tree(tmp_path.parent) == before


def test_a_binary_competition_file_is_one_line(tmp_path, aptos_dir):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    assert "is not a text file" in error(["train", path, "--data-dir", aptos_dir, *TINY])


def test_a_pattern_in_a_models_metadata_is_parsed_like_a_yamls(onnx_model, aptos_dir, tmp_path):
    """A model file carrying a YAML competition whose pattern has a format spec: refused before any row
    is read (it would allocate rows x 100 MB), with the key named."""
    spec = {"name": "forest", "task": "ordinal", "num_classes": 5, "train_csv": "train.csv", "id_column": "id_code",
            "target_column": "diagnosis", "image_pattern": "train_images/{id}.png", "test_csv": "test.csv",
            "test_image_pattern": "test_images/{id:>100000000}.png", "classes": list("01234")}
    bad = retag(onnx_model, tmp_path / "bad.onnx", competition="forest", competition_spec=spec)
    line = error(["predict", "forest", bad, "--data-dir", aptos_dir, "--out-root", tmp_path / "subs"])
    assert "'test_image_pattern' has the field '{id:>100000000}'" in line and len(line) < 400
    assert not (tmp_path / "subs").exists() or tree(tmp_path / "subs") <= {"forest"}


def _spec(tmp_path, onnx_model, weight=1.0, fitted=None):
    from kaggle_transfer.files import sha256

    path = tmp_path / "spec.json"
    path.write_text(json.dumps({
        "type": "ensemble", "competition": "aptos", "method": "greedy",
        "fitted": {"cutpoints": [0.5, 1.5, 2.5, 3.5]} if fitted is None else fitted,
        "members": [{"run": "r", "weight": weight,
                     "models": [{"path": str(onnx_model), "sha256": sha256(onnx_model)}]}]}, allow_nan=True))
    return path


@pytest.mark.parametrize("weight, fitted, key", [
    (float("nan"), None, "weights must be finite"),
    (-1.0, None, "weights must be finite, at least 0"),
    (0.0, None, "sum to more than 0"),
    (1.0, {"cutpoints": [3.5, 2.5, 1.5, 0.5]}, "'fitted.cutpoints' must be 4 finite increasing numbers"),
    (1.0, {"cutpoints": [1.5]}, "'fitted.cutpoints' must be 4"),
    (1.0, {"cutpoints": [0.5, float("nan"), 2.5, 3.5]}, "'fitted.cutpoints'"),
    (1.0, "a", "'fitted' is not a mapping"),
])
def test_hand_edited_ensemble_specs_are_refused(onnx_model, aptos_dir, tmp_path, weight, fitted, key):
    spec = _spec(tmp_path, onnx_model, weight, fitted)
    line = error(["predict", "aptos", "--ensemble", spec, "--data-dir", aptos_dir, "--out-root", tmp_path / "subs"])
    assert key in line and "spec.json" in line
    assert not (tmp_path / "subs").exists()


def test_a_split_file_listing_an_id_twice_is_refused(aptos_dir, tmp_path):
    train = pd.read_csv(aptos_dir / "train.csv")
    rows = pd.DataFrame({"id_code": train["id_code"], "Split": ["train"] * (len(train) - 20) + ["val"] * 20})
    rows = pd.concat([rows, pd.DataFrame({"id_code": [train["id_code"][0] + ".png"], "Split": ["val"]})])
    rows.to_csv(tmp_path / "split.csv", index=False)
    before = tree(tmp_path)
    line = error(["train", "aptos", "--data-dir", aptos_dir, "--runs-root", tmp_path / "runs", "--split",
                  "official", "--split-file", tmp_path / "split.csv", *TINY])
    assert f"id {train['id_code'][0]!r} is listed 2 times (as 'train', 'val')" in line
    assert tree(tmp_path) == before
    rows.iloc[:-1].to_csv(tmp_path / "split.csv", index=False)  # once each: accepted, ids meet by join key
    ok(["train", "aptos", "--data-dir", aptos_dir, "--runs-root", tmp_path / "runs", "--split", "official",
        "--split-file", tmp_path / "split.csv", *TINY])


def test_an_unfinished_run_is_not_trusted(trained_run, tmp_path):
    """A killed kt train (or kt average) has best.pt but no metrics.json: export, average and ensemble
    refuse it with the --resume hint instead of writing default cut points."""
    killed = Path(shutil.copytree(trained_run, tmp_path / "killed"))
    (killed / "metrics.json").unlink()
    (killed / "model.onnx").unlink(missing_ok=True)
    before = tree(tmp_path)
    for args in (["export", killed], ["average", killed, trained_run, "--runs-root", tmp_path / "runs"],
                 ["ensemble", "aptos", killed, trained_run, "-o", tmp_path / "spec.json"]):
        line = error(args)
        assert "did not finish" in line and f"kt train --resume {killed}" in line
    assert tree(tmp_path) == before


def test_kt_average_compares_the_members_validation_rows(trained_run, tmp_path):
    from kaggle_transfer import runs

    other = Path(shutil.copytree(trained_run, tmp_path / "other"))
    oof = runs.load_oof(other)
    runs.save_oof(other, oof["ids"][1:], oof["raw"][1:], oof["targets"][1:], fitted=oof["fitted"])  # one skipped
    before = tree(tmp_path)
    line = error(["average", trained_run, other, "--runs-root", tmp_path / "runs"])
    assert "validated on other rows" in line and "1 differ" in line
    assert tree(tmp_path) == before


@pytest.mark.parametrize("name", ["aptos", "cassava", "hpa", "siim_isic", "cct20"])  # EuroSAT has no test set
def test_skip_bad_images_drops_a_corrupt_test_image_for_every_competition(name, tmp_path):
    """--skip-bad-images goes through one place (Competition.read_test) whatever the adapter reads."""
    from kaggle_transfer import competitions
    from kaggle_transfer.competitions import synthetic

    comp = competitions.get(name)
    data = synthetic.make(name, tmp_path / name, n_train=30, n_test=6, image_size=32)
    table = comp.read_test(data)
    Path(table["paths"].iloc[0][0]).write_bytes(b"not an image")
    kept = comp.read_test(data, skip_bad_images=True)
    assert len(kept) == len(table) - 1 and kept.attrs["skipped_images"] == 1
    assert table["id"].iloc[0] not in set(kept["id"])


@pytest.mark.parametrize("flags, key", [
    (["--seed", "99999999999999999999"], "seed=99999999999999999999 is outside [0, 4294967295]"),
    (["--seed", "-5"], "seed=-5 is outside"),
    (["--set", "split_seed=-1"], "split_seed=-1 is outside"),
])
def test_seeds_outside_numpys_range_are_one_line(aptos_dir, tmp_path, flags, key):
    line = error(["train", "aptos", "--data-dir", aptos_dir, "--runs-root", tmp_path / "runs", *TINY, *flags])
    assert key in line and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("content, key", [(b"\x89PNG\r\n\x1a\n\x00\xff", "is not a readable CSV"),
                                          (b"", "is not a readable CSV: No columns")])
def test_a_binary_or_empty_sample_submission_is_one_line(aptos_copy, tmp_path, content, key):
    (aptos_copy / "sample_submission.csv").write_bytes(content)
    line = error(["validate", "aptos", aptos_copy / "test.csv", "--data-dir", aptos_copy])
    assert "sample_submission.csv" in line and key in line


@pytest.mark.parametrize("content, key", [(b"a: [\n", "is not valid YAML"), (b"\x89\x00\xff", "not a text file"),
                                          (b"- 1\n- 2\n", "keys must be")])
def test_a_malformed_grid_is_one_line(aptos_dir, tmp_path, content, key):
    (tmp_path / "grid.yaml").write_bytes(content)
    line = error(["study", "run", "aptos", "--grid", tmp_path / "grid.yaml", "--data-dir", aptos_dir,
                  "--storage", f"sqlite:///{tmp_path / 's.db'}"])
    assert "--grid" in line and key in line and len(line) < 400


def test_prepare_size_zero_is_one_line_and_makes_no_folder(aptos_dir, tmp_path):
    line = error(["prepare", "aptos", "--data-dir", aptos_dir, "--size", "0", "--cache-dir", tmp_path / "cache"])
    assert "--size 0 is outside 8..4096" in line and not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_prepare_workers_die_with_their_parent(tmp_path):
    """kill -9 of kt prepare: its pool workers end too instead of running on as orphans."""
    import time

    from kaggle_transfer.competitions import synthetic

    data = synthetic.make("aptos", tmp_path / "aptos", n_train=400, n_test=4, image_size=384)
    proc = subprocess.Popen([sys.executable, "-m", "kaggle_transfer", "prepare", "aptos", "--data-dir", str(data),
                             "--size", "64", "--workers", "2", "--cache-dir", str(tmp_path / "cache"),
                             "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, children = time.time() + 60, []
    while time.time() < deadline and len(children) < 2:
        time.sleep(0.2)
        found = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        children = [int(c) for c in found.read_text().split()] if found.exists() else []
    assert len(children) >= 2, "the pool did not start"
    proc.kill()
    proc.wait()

    def alive(pid: int) -> bool:
        status = Path(f"/proc/{pid}/status")
        return status.exists() and "State:\tZ" not in status.read_text()

    deadline = time.time() + 10
    while time.time() < deadline and any(map(alive, children)):
        time.sleep(0.2)
    orphans = [pid for pid in children if alive(pid)]
    for pid in orphans:  # leave nothing running, whatever the verdict
        os.kill(pid, 9)
    assert not orphans


def _graph_edit(src: Path, dst: Path, how: str) -> Path:
    from onnx import TensorProto, helper

    proto = onnx.load(str(src))
    graph = proto.graph
    if how == "two outputs":
        graph.node.append(helper.make_node("Identity", [graph.output[0].name], ["extra"]))
        graph.output.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, None))
    elif how == "unknown op":
        graph.node.append(helper.make_node("KtNoSuchOp", [graph.output[0].name], ["unused"]))
    elif how == "external data outside":
        tensor = max(graph.initializer, key=lambda t: len(t.raw_data))
        tensor.ClearField("raw_data")
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", "../../../../etc/passwd"), ("offset", "0"), ("length", "64")):
            tensor.external_data.append(onnx.StringStringEntryProto(key=key, value=value))
    onnx.save(proto, str(dst))
    return dst


@pytest.mark.parametrize("how, key", [
    ("size", "metadata 'size' is 48 but the graph takes 32x32"),
    ("two outputs", "'graph output' is 2 outputs"),
    ("unknown op", "onnxruntime cannot load it"),
    ("external data outside", "onnxruntime cannot load it"),
])
def test_a_graph_that_disagrees_or_cannot_load_is_one_line(onnx_model, aptos_dir, tmp_path, how, key):
    bad = retag(onnx_model, tmp_path / "bad.onnx", size=48) if how == "size" else \
        _graph_edit(onnx_model, tmp_path / "bad.onnx", how)
    line = error(["predict", "aptos", bad, "--data-dir", aptos_dir, "--out-root", tmp_path / "subs"])
    assert "bad.onnx" in line and key in line and len(line) < 500
    assert not (tmp_path / "subs").exists() or tree(tmp_path / "subs") <= {"aptos"}


@pytest.mark.parametrize("name, content, command, key", [
    ("oof.npz", b"garbage\x00\xff", ["ensemble", "aptos", "{run}", "{run}", "-o", "{tmp}/s.json"],
     "oof.npz is damaged"),
    ("oof.npz", b"garbage\x00\xff", ["report", "{run}"], "oof.npz is damaged"),
    ("history.csv", b"garbage\x00\xff", ["report", "{run}"], "history.csv is not a readable history"),
    ("run.json", b'{"data_dir": 5, "skip_bad_images": false, "external_dirs": {}}',
     ["average", "{run}", "{run}", "--runs-root", "{tmp}/runs"], "'data_dir' is 5, not a str"),
    ("run.json", b"[1, 2]", ["train", "--resume", "{run}"], "is not a run record"),
    ("metrics.json", b'{"score": "x"}', ["average", "{run}", "{run}", "--runs-root", "{tmp}/runs"],
     "metrics.json is not a run's metrics"),
    ("group.json", b'{"members": [{"dir": "fold0", "fold": "0"}]}', ["report", "{run}"],
     "group.json is not a run group's record"),
    ("group.json", b'{"members": [{"dir": "../../x", "fold": 0, "seed": 1, "score": 0.5}], "mean": 0.5, '
     b'"std": 0, "pooled_score": 0.5}', ["export", "{run}"], "group.json's member dir"),
])
def test_damaged_run_files_are_one_line_whoever_reads_them(trained_run, tmp_path, name, content, command, key):
    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    (run / name).write_bytes(content)
    before = tree(tmp_path)
    line = error([a.format(run=run, tmp=tmp_path) for a in command])
    assert key in line and name in line
    assert {p for p in tree(tmp_path) - before if not p.startswith("run/plots")} == set()


def test_training_onto_a_full_disk_is_one_line(aptos_dir, small_disk):
    """torch.save reports a full disk as a RuntimeError of its zip writer; it is one line like any ENOSPC."""
    fd = os.open(small_disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:  # leave a few KiB: config and run.json fit, the checkpoint does not
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    os.truncate(small_disk / "filler", os.path.getsize(small_disk / "filler") - 64 * 1024)
    line = error(["train", "aptos", "--data-dir", aptos_dir, "--runs-root", small_disk / "runs", *TINY])
    assert "No space left on device" in line and "free some space" in line
    assert not list((small_disk / "runs").rglob("*.pt")) and not list((small_disk / "runs").rglob("*.tmp*"))


# --- 8. hostile inputs, found by a fresh review of the third round -----------------------------------

@pytest.mark.parametrize("changes, key", [
    ({"submission_columns": ["id_code"]}, "'submission_columns' must name two columns"),
    ({"meta_columns": {5: "numeric"}}, "'meta_columns' must map column names"),
    ({"test_image_pattern": "test_images/734970d3dc26.png"}, "'test_image_pattern' must contain {id}"),
    ({"image_pattern": "train_images/{{id}}.png"}, "'image_pattern' must contain {id}"),
    ({"test_image_pattern": "test_images/{channel}.png"}, "'test_image_pattern' must contain {id}"),
    ({"channels": ["red", "green", "blue"]}, "and key 'channels' go together"),
    ({"meta_columns": {"diagnosis": "numeric"}}, "declares 'diagnosis', a label, id or group column"),
    ({"classes": ["a", "a", "b", "c", "d"], "num_classes": None}, "lists a name twice"),
    ({"task": "binary", "classes": ["a", "b", "c"], "num_classes": None}, "a binary task has two"),
    ({"slug": "../../../rh/aptos"}, "'slug' is '../../../rh/aptos'"),
    ({"recipe": {"competition_file": "/tmp/x.yaml"}}, "may not set competition or competition_file"),
])
def test_yaml_values_that_would_mislead_are_refused(forest, aptos_dir, tmp_path, changes, key):
    spec = forest(**{k: v for k, v in changes.items() if v is not None})
    if any(v is None for v in changes.values()):  # drop a key of the fixture
        data = yaml.safe_load(spec.read_text())
        spec.write_text(yaml.safe_dump({k: v for k, v in data.items() if changes.get(k, 0) is not None}))
    line = error(["train", spec, "--data-dir", aptos_dir, "--runs-root", tmp_path / "runs", *TINY])
    assert key in line and len(line) < 400


def test_a_models_recipe_never_chooses_the_competition(onnx_model, aptos_dir, tmp_path):
    """recipe.competition_file in a model's metadata would make kt read a YAML from anywhere."""
    bad = retag(onnx_model, tmp_path / "bad.onnx",
                recipe={**json.loads(next(p.value for p in onnx.load(str(onnx_model)).metadata_props
                                          if p.key == "kt"))["recipe"],
                        "competition": "mycomp", "competition_file": str(tmp_path / "mycomp.yaml")})
    line = error(["predict", "aptos", bad, "--data-dir", aptos_dir, "--out-root", tmp_path / "subs"])
    assert "'recipe.competition' is 'mycomp' but the file is for 'aptos'" in line
    assert not (tmp_path / "subs").exists() or tree(tmp_path / "subs") <= {"aptos"}


@pytest.mark.parametrize("edit, key", [
    (lambda s: s.update(competition="siim_isic", fitted={"cutpoints": [-1.0]}), "says competition 'siim_isic'"),
    (lambda s: s["members"][0].update(weight=1e308) or s["members"].append(
        {**s["members"][0], "weight": 1e308}), "weights must be finite"),
    (lambda s: s["members"][0]["models"][0].update(path=5), "not an ensemble spec"),
])
def test_an_ensemble_spec_cannot_bypass_the_cut_point_count(onnx_model, aptos_dir, tmp_path, edit, key):
    spec_path = _spec(tmp_path, onnx_model)
    spec = json.loads(spec_path.read_text())
    edit(spec)
    spec_path.write_text(json.dumps(spec))
    for command in (["predict", "aptos", "--ensemble", spec_path, "--data-dir", aptos_dir, "--out-root",
                     tmp_path / "subs"],
                    ["bundle", "aptos", "--ensemble", spec_path, "-o", tmp_path / "b", "--no-fetch-wheels"]):
        assert key in error(command)
    assert not (tmp_path / "subs").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize("edit, key", [
    (lambda b: b.update(fitted={"cutpoints": [9.0, 1.0, 2.0, 3.0]}), "are not 4 finite increasing numbers"),
    (lambda b: b.update(weights=[float("inf")]), "'weights' must be 1 finite numbers"),
    (lambda b: b.update(models=[]), "'models' must list the bundle's model files"),
    (lambda b: b["models"][0].update(file="../../etc/passwd"), "'models' must list the bundle's model files"),
])
def test_bundle_json_is_checked_when_the_notebook_runs(onnx_model, aptos_dir, tmp_path, edit, key):
    from kaggle_transfer.inference.bundle_run import run

    ok(["bundle", "aptos", onnx_model, "-o", tmp_path / "b", "--accelerator", "none", "--no-fetch-wheels",
        "--image-has-onnxruntime", "--python", f"{sys.version_info[0]}.{sys.version_info[1]}"])
    info = json.loads((tmp_path / "b" / "bundle.json").read_text())
    edit(info)
    (tmp_path / "b" / "bundle.json").write_text(json.dumps(info))
    with pytest.raises(KtError, match=key.replace("(", r"\(").replace("[", r"\[")):
        run(tmp_path / "b", str(aptos_dir), tmp_path / "out", echo=lambda line: None)


def test_run_files_that_lose_the_fitted_parameters_are_refused(trained_run, tmp_path):
    from kaggle_transfer import runs

    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    (run / "model.onnx").unlink(missing_ok=True)
    (run / "metrics.json").write_text("{}")
    assert "lacks the fitted cut points" in error(["export", run])
    (run / "metrics.json").write_text(json.dumps({"score": 0.5, "fitted": {"cutpoints": [3.0, 2.0, 1.0, 0.0]}}))
    assert "are not 4 finite increasing numbers" in error(["export", run])
    (run / "metrics.json").write_text(json.dumps({"score": float("nan"), "fitted": {}}))
    assert "is not a run's metrics" in error(["export", run])
    shutil.copy(trained_run / "metrics.json", run / "metrics.json")
    oof = runs.load_oof(run)
    runs.save_oof(run, oof["ids"], np.full_like(oof["raw"], np.nan), oof["targets"], fitted=oof["fitted"])
    assert "raw outputs are not all finite" in error(["ensemble", "aptos", run, run, "-o", tmp_path / "s.json"])
    assert not (run / "model.onnx").exists()


@pytest.mark.parametrize("content, key", [(b"", "is not a readable CSV"), (b"\x89\x00\xff\xfe", "not a readable"),
                                          (b"a:b:c\nroot:x:0:0::/root:/bin/bash\n", "needs a Split column")])
def test_a_damaged_split_file_is_one_line(aptos_dir, tmp_path, content, key):
    (tmp_path / "split.csv").write_bytes(content)
    line = error(["train", "aptos", "--data-dir", aptos_dir, "--runs-root", tmp_path / "runs", "--split-file",
                  tmp_path / "split.csv", *TINY])
    assert "--split-file" in line and key in line and not (tmp_path / "runs").exists()


def test_split_words_are_read_as_a_spreadsheet_writes_them(aptos_dir, tmp_path):
    from kaggle_transfer import config
    from kaggle_transfer.training.tables import load_tables

    train = pd.read_csv(aptos_dir / "train.csv")
    words = ["train "] * (len(train) - 20) + ["Val"] * 20
    pd.DataFrame({"id_code": train["id_code"], "Split": words}).to_csv(tmp_path / "split.csv", index=False)
    cfg = config.resolve(flags={"competition": "aptos", "split_file": str(tmp_path / "split.csv"), "cache": False})
    table = load_tables(cfg, aptos_dir, external_dirs={}, skip_bad_images=False)
    assert (table["fold"] == 1).sum() == len(train) - 20 and (table["fold"] == 0).sum() == 20


def test_huge_training_metadata_names_the_column(tmp_path):
    from kaggle_transfer.data import tabular as meta

    with pytest.raises(KtError, match="meta column 'age' holds '1e308' .*finite and within"):
        meta.fit({"age": "numeric"}, pd.DataFrame({"age": ["30", "1e308", "40"]}))
    with pytest.raises(KtError, match="meta column 'age' holds 'inf'"):
        meta.fit({"age": "numeric"}, pd.DataFrame({"age": ["30", "inf"]}))


def test_a_hard_linked_copy_of_a_training_image_keeps_no_pseudo_label(aptos_copy, tmp_path):
    from kaggle_transfer.competitions import APTOS
    from kaggle_transfer.inference.pseudo import folder_table
    from kaggle_transfer.training.targets import add_pseudo

    table = APTOS.read_train(aptos_copy).assign(source="competition")
    copies = tmp_path / "copies"
    copies.mkdir()
    for i, paths in enumerate(table["paths"][:5]):
        os.link(paths[0], copies / f"other_name_{i}.png")
    kept, dropped = add_pseudo(table, folder_table(copies, APTOS).assign(source="pseudo"))
    assert dropped == 5 and kept.empty


def test_prepare_workers_out_of_range_are_one_line(aptos_dir, tmp_path):
    for n in ("-3", "100000"):
        assert "--processes" in error(["prepare", "aptos", "--data-dir", aptos_dir, "--size", "32", "--processes", n,
                                     "--cache-dir", tmp_path / "cache"])


def test_a_damaged_config_yaml_is_refused_on_read_back(trained_run, tmp_path):
    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    with open(run / "config.yaml", "a") as f:
        f.write("lr: .inf\n")
    before = tree(tmp_path)
    for args in (["export", run, "-o", tmp_path / "x.onnx"], ["average", run, trained_run, "--runs-root",
                                                              tmp_path / "runs"]):
        line = error(args)
        assert "config.yaml" in line and "lr=inf is not a finite number" in line
    assert tree(tmp_path) == before


def _offline_env(tmp_path: Path) -> dict[str, str]:
    """No cached weights and a weights host that refuses connections (a closed loopback port): what a
    machine without internet looks like to timm and huggingface_hub."""
    return {**os.environ, "HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "torch"),
            "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_ETAG_TIMEOUT": "1", "HF_HUB_DOWNLOAD_TIMEOUT": "1"}


@pytest.mark.parametrize("command", [
    ["train", "aptos", "--arch", "resnet18", "--size", "32", "--epochs", "1", "--workers", "0"],
    ["study", "run", "aptos", "--archs", "resnet18", "--grid", "small", "--set", "epochs=1"],
])
def test_offline_without_cached_weights_is_one_line_in_seconds(aptos_dir, tmp_path, command):
    """The default (ImageNet weights) on a machine that cannot download them: seconds, one line naming
    --no-pretrained, --weights FILE and the cache folder; no run or trial folder left behind."""
    import time

    started = time.time()
    out = subprocess.run([sys.executable, "-m", "kaggle_transfer", *command, "--data-dir", str(aptos_dir),
                          "--runs-root", str(tmp_path / "runs")], capture_output=True, text=True,
                         env=_offline_env(tmp_path), timeout=120)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2 and len(lines) == 1, out.stderr[-2000:]
    assert "--no-pretrained" in lines[0] and "--weights FILE" in lines[0] and str(tmp_path / "hf") in lines[0]
    assert time.time() - started < 60  # timm's own retries took about a minute before its error
    assert not [p for p in tree(tmp_path / "runs") if not p.endswith(("study.db", "study.db.lock"))]


def test_an_external_source_without_a_folder_stops_before_the_run_folder(aptos_dir, tmp_path, monkeypatch):
    """-c top names dr2015: without --external-dir it is looked for beside the data (data/dr2015 or
    $KT_DATA/dr2015); when it is nowhere, one line before any folder exists (it used to fail in the
    first fold, leaving a group folder)."""
    from kaggle_transfer.competitions import synthetic

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KT_DATA", raising=False)
    args = ["train", "aptos", "--external", "dr2015", "--data-dir", aptos_dir, "--runs-root", "runs",
            "--folds", "0", "--set", "folds=2", *TINY]
    line = error(args)
    assert "--external dr2015: no folder for it (looked in data/dr2015)" in line and "--external-dir dr2015=DIR" in line
    assert not Path("runs").exists()
    assert "--external-dir dr2015=nowhere: no such folder" in error([*args, "--external-dir", "dr2015=nowhere"])
    synthetic.make("dr2015", Path("data") / "dr2015", n=12, image_size=32)
    ok(args)
    group = next(Path("runs/aptos").iterdir())
    assert json.loads((group / "fold0" / "run.json").read_text())["external_dirs"] == {
        "dr2015": str((tmp_path / "data" / "dr2015").resolve())}


# --- 9. found by a fresh review of this round ------------------------------------------------------------

def test_a_very_long_name_is_cut_not_a_traceback(aptos_dir, tmp_path):
    ok(["train", "aptos", "--data-dir", aptos_dir, "--runs-root", tmp_path, "--name", "a" * 300, *TINY])
    (run,) = (tmp_path / "aptos").iterdir()
    assert len(run.name) < 120 and run.name.endswith("a" * 20)


def test_resume_refuses_a_run_that_is_training_now(trained_run, tmp_path):
    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    (run / "metrics.json").unlink()
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "pid": os.getpid()}))  # this live process
    assert "another kt is training it now" in error(["train", "--resume", run])


@pytest.mark.parametrize("extra, key", [
    (["--external", "nope"], "--external nope: aptos has no external source of that name (its sources: dr2015"),
    (["--external", "dr2015", "--external", "dr2015", "--external-dir", "dr2015=."], "is given twice"),
    (["--external-dir", "bogus=."], "--external-dir bogus=…: the run uses no source 'bogus'"),
    (["--fold", "9"], "--fold 9: fold ids are 0..4"),
])
def test_source_and_fold_mistakes_stop_before_the_run_folder(aptos_dir, tmp_path, extra, key):
    line = error(["train", "aptos", "--data-dir", aptos_dir, "--runs-root", tmp_path / "runs", *TINY, *extra])
    assert key in line and not (tmp_path / "runs").exists()


def test_kt_runs_lists_the_others_when_one_folder_is_damaged(trained_run, tmp_path):
    root = tmp_path / "runs" / "aptos"
    shutil.copytree(trained_run, root / "good")
    bad = Path(shutil.copytree(trained_run, root / "bad"))
    (bad / "config.yaml").write_text("arch: [unclosed\n")
    shutil.copytree(trained_run, root / "history")
    (root / "history" / "history.csv").write_bytes(b"garbage\x00\xff")
    out = ok(["runs", "aptos", "--runs-root", tmp_path / "runs"]).output
    assert any(line.lstrip().startswith("good") for line in out.splitlines())
    damaged = [line for line in out.splitlines() if "damaged" in line and not line.startswith("not finished")]
    assert {line.split()[0] for line in damaged} == {"bad", "history"}
    other = Path(shutil.copytree(trained_run, tmp_path / "elsewhere"))
    (other / "config.yaml").write_text((other / "config.yaml").read_text().replace("competition: aptos",
                                                                                   "competition: cassava"))
    assert "a cassava run, not aptos" in error(["runs", "aptos", "--runs-root", tmp_path / "runs", "--compare",
                                                "good", other])
