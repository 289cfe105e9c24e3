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

from kaggle_transfer.competitions import synthetic

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


@pytest.fixture
def dead():
    """A fake whose port nobody listens on: Kaggle unreachable."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = FakeKaggle()
    server.close()
    server.port = port
    return server


def test_server_down(home, dead):
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


@pytest.mark.slow
def test_training_makes_no_network_request(fake, home, tmp_path):
    """Nothing in kt train may reach out (albumentations' update check would, unless switched off)."""
    data = synthetic.make("aptos", tmp_path / "aptos", n_train=30, n_test=4, image_size=32)
    out = kt(fake, home, "train", "aptos", "--data-dir", data, "--arch", "test_resnet", "--no-pretrained", "--size",
             32, "--epochs", 1, "--workers", 0, "--no-progress", "--set", "max_steps=1")
    assert out.returncode == 0, out.stderr
    assert fake.requests == []


def test_an_interrupted_download_resumes_where_it_stopped(fake, home):
    """kt download killed mid-archive: the next run continues with a Range request from the bytes on disk
    (the client's resume), not from zero; --force starts over."""
    import time

    payload = {"train.csv": b"image_name,target\n", "blob.bin": os.urandom(3 << 20)}  # incompressible
    archive = fake.zip_of(payload)
    fake.files[f"{SLUG}.zip"] = archive
    fake.cut_download_after = (1 << 20) + 1234
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE") and "proxy" not in k.lower()}
    env.update(fake.env(str(home)))
    (home / "tmp").mkdir(exist_ok=True)
    env["TMPDIR"] = str(home / "tmp")
    first = subprocess.Popen([sys.executable, "-m", "kaggle_transfer", "download", "siim_isic", "--dest",
                              str(home / "data")], env=env, cwd=home, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    partial = home / ".data.download" / f"{SLUG}.zip"
    deadline = time.time() + 60
    while time.time() < deadline and not (partial.is_file() and partial.stat().st_size >= 1 << 20):
        time.sleep(0.1)
    first.kill()
    first.communicate()
    fake.hang.set()
    on_disk = partial.stat().st_size
    assert on_disk >= 1 << 20 and not (home / "data").exists()
    out = kt(fake, home, "download", "siim_isic", "--dest", home / "data")
    assert out.returncode == 0, out.stderr
    gets = [r for r in fake.requests if r["method"] == "GET"]
    assert gets[-1]["range"] == f"bytes={on_disk}-"  # continued from the bytes the killed run left
    assert (home / "data" / "blob.bin").read_bytes() == payload["blob.bin"]
    assert not (home / ".data.download").exists()
    out = kt(fake, home, "download", "siim_isic", "--dest", home / "data", "--force")
    assert out.returncode == 0 and [r for r in fake.requests if r["method"] == "GET"][-1]["range"] is None


def test_leaderboard_compares_public_with_public_and_private_with_private(fake, home):
    from .fake_kaggle import _now

    fake.leaderboard = [0.95 - i * 0.001 for i in range(300)]         # public
    fake.private_leaderboard = [0.90 - i * 0.001 for i in range(300)]  # the server's default: private
    fake.submissions = [{"ref": 1, "date": _now(), "description": "a", "status": "COMPLETE", "publicScore": "0.8905",
                         "privateScore": "0.8805", "polls": 0}]
    out = kt(fake, home, "leaderboard", "aptos")
    assert out.returncode == 0, out.stderr
    asked = [r["body"] for r in fake.requests if r.get("rpc") == "GetLeaderboard"]
    assert asked and all(b.get("overridePublic") is True for b in asked)
    assert "300 teams on the public leaderboard" in out.stdout and "rank 61 of 300" in out.stdout
    out = kt(fake, home, "leaderboard", "aptos", "--board", "private")
    assert out.returncode == 0, out.stderr
    # the private score 0.8805 against the private board: 0.900 ... 0.881 are better, rank 21
    assert "your best private score 0.88050: rank 21 of 300" in out.stdout


def test_submissions_are_read_from_every_page(fake, home, siim):
    from .fake_kaggle import _now

    fake.submissions = [{"ref": i, "date": "2026-01-01T00:00:00.000Z", "description": f"s{i}", "status": "COMPLETE",
                         "publicScore": "0.9", "polls": 0} for i in range(230)]
    fake.submissions += [{"ref": 900 + i, "date": _now(), "description": "today", "status": "COMPLETE",
                          "publicScore": "0.9", "polls": 0} for i in range(5)]
    out = kt(fake, home, "submissions", "siim_isic")
    assert out.returncode == 0 and out.stdout.count("COMPLETE") == 235
    assert fake.rpcs.count("ListSubmissions") == 3  # pages of 100
    data, folder = siim
    out = kt(fake, home, "submit", "siim_isic", folder, "-m", "x", "--data-dir", data)
    assert out.returncode == 2 and "daily limit is 5" in out.stderr


def test_a_csv_dry_run_checks_sign_in_and_todays_limit(fake, home, siim):
    data, folder = siim
    out = kt(fake, home, "submit", "siim_isic", folder, "-m", "x", "--data-dir", data, "--dry-run",
             drop=("KAGGLE_USERNAME", "KAGGLE_KEY"))
    assert out.returncode == 2 and "no Kaggle credentials found" in out.stderr.strip().splitlines()[-1]
    assert "Authentication required" not in out.stdout + out.stderr  # the client's banner stays out
    fake.limits = {"numToday": 5, "numTotal": 9, "numAllowedNow": 0}
    out = kt(fake, home, "submit", "siim_isic", folder, "-m", "x", "--data-dir", data, "--dry-run")
    assert out.returncode == 2 and "no more submissions" in out.stderr
    fake.limits = {"numToday": 1, "numTotal": 9, "numAllowedNow": 4}
    out = kt(fake, home, "submit", "siim_isic", folder, "-m", "x", "--data-dir", data, "--dry-run")
    assert out.returncode == 0 and "signed in and may submit today" in out.stdout
    assert "StartSubmissionUpload" not in fake.rpcs


def test_a_code_submission_checks_credentials_before_building_a_bundle(fake, home, tmp_path, onnx_model, aptos_dir):
    from tests.helpers import predict

    manifest = predict("aptos", [onnx_model], aptos_dir, out_root=tmp_path / "subs", label="c",
                                  progress=False)
    folder = Path(manifest["submission"]).parent
    out = kt(fake, home, "submit", "aptos", folder, "-m", "x", "--data-dir", aptos_dir,
             drop=("KAGGLE_USERNAME", "KAGGLE_KEY"))
    assert out.returncode == 2 and "no Kaggle credentials found" in out.stderr
    assert not (folder / "bundle").exists() and not list((home / "tmp").glob("pip-*"))


def test_a_token_while_offline_is_one_line(home, dead):
    """KAGGLE_API_TOKEN is checked with a request at sign-in: offline, that is one line, not a traceback."""
    out = kt(dead, home, "submissions", "aptos", env_extra={"KAGGLE_API_TOKEN": "kt-test-token"},
             drop=("KAGGLE_USERNAME", "KAGGLE_KEY"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == ("error: cannot reach Kaggle to check the Kaggle credentials "
                                                   "(offline, blocked, or it timed out)")
    assert "kt-test-token" not in out.stdout + out.stderr


def test_polls_back_off_to_two_minutes_unless_the_interval_is_fixed(monkeypatch):
    from kaggle_transfer.errors import KtError
    from kaggle_transfer.kaggle.client import next_poll

    monkeypatch.delenv("KT_POLL_S", raising=False)
    intervals = [10.0]
    for _ in range(12):
        intervals.append(next_poll(intervals[-1]))
    assert intervals[1] == 15.0 and intervals[-1] == 120.0 and intervals == sorted(intervals)
    monkeypatch.setenv("KT_POLL_S", "0.2")
    assert next_poll(0.2) == 0.2 and next_poll(30.0) == 0.2
    for bad in ("abc", "0", "-1", "nan", "inf"):
        monkeypatch.setenv("KT_POLL_S", bad)
        with pytest.raises(KtError, match="KT_POLL_S"):
            next_poll(1.0)
