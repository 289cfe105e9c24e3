"""`kt download / submit / submissions` with the real kaggle client against a fake server on loopback."""

import json
import os
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from kaggle_transfer.data import synthetic

from .fake_kaggle import FakeKaggle

SECRET = "s3cret-key-do-not-print"
SLUG = "siim-isic-melanoma-classification"


@pytest.fixture
def home(tmp_path):
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


def kt(fake, home, *args, cwd=None, env_extra=None, drop=()):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE") and k.lower() not in (
        "http_proxy", "https_proxy", "all_proxy", "no_proxy")}
    env.update(fake.env(str(home)))
    env["KT_POLL_S"] = "0.2"
    (Path(home) / "tmp").mkdir(exist_ok=True)
    env["TMPDIR"] = str(Path(home) / "tmp")  # the client's resumable-upload state: one per test
    env.update(env_extra or {})
    for key in drop:
        env.pop(key, None)
    out = subprocess.run([sys.executable, "-m", "kaggle_transfer", *map(str, args)], env=env, capture_output=True,
                         text=True, cwd=cwd or home, timeout=120)
    assert SECRET not in out.stdout + out.stderr
    return out


def test_download_extracts_and_is_idempotent(fake, home):
    fake.files[f"{SLUG}.zip"] = fake.zip_of({"train.csv": b"image_name,target\n", "jpeg/train/a.jpg": b"x"})
    out = kt(fake, home, "download", "siim_isic", "--dest", home / "data")
    assert out.returncode == 0, out.stderr
    assert (home / "data" / "jpeg" / "train" / "a.jpg").read_bytes() == b"x"
    assert fake.rpcs == ["DownloadDataFiles"]
    again = kt(fake, home, "download", "siim_isic", "--dest", home / "data")
    assert again.returncode == 0 and "already holds" in again.stdout and fake.rpcs == ["DownloadDataFiles"]
    assert kt(fake, home, "download", "siim_isic", "--dest", home / "data", "--force").returncode == 0
    assert fake.rpcs == ["DownloadDataFiles"] * 2
    assert not list(home.glob(".data.download"))  # the partial folder is cleaned up


def test_archive_escaping_the_target_is_refused(fake, home):
    fake.files[f"{SLUG}.zip"] = fake.zip_of({"train.csv": b"ok", "../../evil.txt": b"pwned"})
    out = kt(fake, home, "download", "siim_isic", "--dest", home / "data")
    assert out.returncode == 2 and "would be written outside" in out.stderr
    assert not list(home.rglob("evil.txt")) and not (home.parent / "evil.txt").exists()
    assert not (home / "data" / "train.csv").exists()  # checked before anything is written


def test_symlink_member_is_refused(fake, home, tmp_path):
    buf = tmp_path / "link.zip"
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
    fake.files[f"{SLUG}.zip"] = buf.read_bytes()
    out = kt(fake, home, "download", "siim_isic", "--dest", home / "data")
    assert out.returncode == 2 and "symbolic link" in out.stderr


@pytest.mark.parametrize("status, message", [
    (401, "rejected the credentials"), (403, f"https://www.kaggle.com/competitions/{SLUG}/rules"),
    (500, "HTTP 500"), (429, "rate-limiting")])
def test_http_errors_are_one_line(fake, home, status, message):
    fake.fail["DownloadDataFiles"] = [status]
    out = kt(fake, home, "download", "siim_isic", "--dest", home / "data")
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and message in lines[-1] and "Traceback" not in out.stderr


def test_server_down(home):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = FakeKaggle()
    dead.close()
    dead.port = port
    out = kt(dead, home, "download", "siim_isic", "--dest", home / "data")
    assert out.returncode == 2 and "cannot reach Kaggle" in out.stderr


def test_missing_and_world_readable_credentials(fake, home):
    out = kt(fake, home, "download", "siim_isic", "--dest", home / "d", drop=("KAGGLE_USERNAME", "KAGGLE_KEY"))
    assert out.returncode == 2 and "no Kaggle credentials found" in out.stderr and "chmod 600" in out.stderr
    (home / ".kaggle").mkdir(exist_ok=True)  # the client may have made it
    (home / ".kaggle" / "kaggle.json").write_text(json.dumps({"username": "kt-tester", "key": SECRET}))
    os.chmod(home / ".kaggle" / "kaggle.json", 0o644)
    fake.files[f"{SLUG}.zip"] = fake.zip_of({"train.csv": b"x"})
    out = kt(fake, home, "download", "siim_isic", "--dest", home / "d", drop=("KAGGLE_USERNAME", "KAGGLE_KEY"))
    assert out.returncode == 0, out.stderr
    assert "readable by other users" in out.stderr and "chmod 600" in out.stderr


@pytest.fixture
def siim(tmp_path):
    data = synthetic.make("siim_isic", tmp_path / "siim", n_train=20, n_test=10, image_size=32)
    sub = pd.read_csv(data / "sample_submission.csv").assign(target=0.25)
    folder = tmp_path / "subs" / "x"
    folder.mkdir(parents=True)
    sub.to_csv(folder / "submission.csv", index=False)
    (folder / "manifest.json").write_text(json.dumps({"competition": "siim_isic"}))
    return data, folder


def test_submit_uploads_the_csv_and_waits_for_the_score(fake, home, siim):
    data, folder = siim
    out = kt(fake, home, "submit", "siim_isic", folder, "-m", "kt test run", "--data-dir", data, "--wait")
    assert out.returncode == 0, out.stderr
    # the client's own limits first (404 on this server: an older one), then today's count, then the upload
    assert fake.rpcs[:4] == ["GetSubmissionLimits", "ListSubmissions", "StartSubmissionUpload", "CreateSubmission"]
    assert list(fake.uploads.values()) == [(folder / "submission.csv").read_bytes()]  # the bytes, exactly
    create = next(r for r in fake.requests if r.get("rpc") == "CreateSubmission")
    assert create["body"]["submissionDescription"] == "kt test run" and create["auth"] == "Basic"
    assert "public score 0.91234" in out.stdout
    record = json.loads((folder / "manifest.json").read_text())["kaggle"][0]
    assert record["ref"] == 1000 and record["status"] == "COMPLETE" and record["public"] == "0.91234"


def test_invalid_submission_is_refused_before_any_request(fake, home, siim):
    data, folder = siim
    pd.read_csv(folder / "submission.csv").assign(target=2.0).to_csv(folder / "submission.csv", index=False)
    out = kt(fake, home, "submit", "siim_isic", folder, "-m", "bad", "--data-dir", data)
    assert out.returncode == 2 and "not a valid siim_isic submission" in out.stderr
    assert fake.requests == []


def test_failed_upload_is_reported_not_submitted(fake, home, siim):
    data, folder = siim
    fake.broken_upload = True
    out = kt(fake, home, "submit", "siim_isic", folder, "-m", "x", "--data-dir", data)
    assert out.returncode == 2 and "upload of submission.csv" in out.stderr and "failed" in out.stderr
    assert "CreateSubmission" not in fake.rpcs


def test_listing_retries_429_and_the_daily_limit_is_respected(fake, home, siim):
    data, folder = siim
    fake.fail["ListSubmissions"] = [429]
    out = kt(fake, home, "submissions", "siim_isic")
    assert out.returncode == 0 and fake.rpcs == ["ListSubmissions", "ListSubmissions"]
    assert "no submissions yet" in out.stdout
    from .fake_kaggle import _now

    fake.submissions = [{"ref": i, "date": _now(), "description": f"s{i}", "status": "COMPLETE",
                         "publicScore": "0.9", "polls": 0} for i in range(5)]
    out = kt(fake, home, "submit", "siim_isic", folder, "-m", "x", "--data-dir", data)
    assert out.returncode == 2 and "daily limit is 5" in out.stderr
    assert "StartSubmissionUpload" not in fake.rpcs
    listing = kt(fake, home, "submissions", "siim_isic")
    assert listing.stdout.count("COMPLETE") == 5


def test_code_competition_without_models_and_local_datasets_say_what_to_do(fake, home, tmp_path):
    aptos = synthetic.make("aptos", tmp_path / "aptos", n_train=20, n_test=5, image_size=32)
    sample = aptos / "sample_submission.csv"
    out = kt(fake, home, "submit", "aptos", sample, "-m", "x", "--data-dir", aptos)
    assert out.returncode == 2 and "no manifest.json naming the models" in out.stderr and fake.requests == []
    out = kt(fake, home, "download", "cct20")
    assert out.returncode == 2 and "lila.science" in out.stderr


def test_training_makes_no_network_request(fake, home, tmp_path):
    """Nothing in kt train may reach out (albumentations' update check would, unless switched off)."""
    data = synthetic.make("aptos", tmp_path / "aptos", n_train=30, n_test=4, image_size=32)
    out = kt(fake, home, "train", "aptos", "--data-dir", data, "--arch", "test_resnet", "--no-pretrained", "--size",
             32, "--epochs", 1, "--workers", 0, "--no-progress", "--set", "max_steps=1")
    assert out.returncode == 0, out.stderr
    assert fake.requests == []
