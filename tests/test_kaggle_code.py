"""Code competitions end to end against the fake Kaggle: the real client, credentials from kaggle.json
only, and a notebook that really runs the pushed bundle (torch blocked) where Kaggle would run it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from .fake_kaggle import _now

pytestmark = pytest.mark.slow

SECRET = "s3cret-key-do-not-print"
PY = f"{sys.version_info[0]}.{sys.version_info[1]}"  # the fake notebook image is this interpreter


@pytest.fixture
def home(tmp_path):
    """A home whose only credentials are ~/.kaggle/kaggle.json, as most users have them."""
    (tmp_path / "home" / ".kaggle").mkdir(parents=True)
    path = tmp_path / "home" / ".kaggle" / "kaggle.json"
    path.write_text(json.dumps({"username": "kt-tester", "key": SECRET}))
    os.chmod(path, 0o600)
    return tmp_path / "home"


def kt_env(fake, home) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE") and k.lower() not in (
        "http_proxy", "https_proxy", "all_proxy", "no_proxy")}
    env.update({k: v for k, v in fake.env(str(home)).items() if k not in ("KAGGLE_USERNAME", "KAGGLE_KEY")})
    env["KT_POLL_S"] = "0.2"
    # the client keeps resumable-upload state in TMPDIR (and keeps it after a failed push): one per test,
    # or a later test's client would "resume" uploads this fake never saw
    (home / "tmp").mkdir(exist_ok=True)
    env["TMPDIR"] = str(home / "tmp")
    return env


def kt(fake, home, *args):
    out = subprocess.run([sys.executable, "-m", "kaggle_transfer", *map(str, args)], env=kt_env(fake, home),
                         capture_output=True, text=True, cwd=home, timeout=300)
    assert SECRET not in out.stdout + out.stderr
    return out


def notebook(data_dir: Path, *, edit=None):
    """What Kaggle does with a pushed notebook: its dataset mounted, the script run, /kaggle/working kept."""
    def run(files: dict[str, bytes]):
        root = Path(tempfile.mkdtemp(prefix="kaggle-notebook-"))
        try:
            bundle, working, blocker, tmp = root / "input", root / "working", root / "blocker" / "torch", root / "tmp"
            for folder in (bundle, working, blocker, tmp):
                folder.mkdir(parents=True)
            for name, data in files.items():
                (bundle / name).write_bytes(data)
            (blocker / "__init__.py").write_text("raise ImportError('no torch in this notebook')\n")
            env = {**os.environ, "PYTHONPATH": str(blocker.parent), "KT_BUNDLE_DIR": str(bundle),
                   "KT_BUNDLE_DATA": str(data_dir), "KT_BUNDLE_OUT": str(working), "PIP_NO_INDEX": "1",
                   "TMPDIR": str(tmp)}
            for key in [k for k in env if k.lower().endswith("_proxy")]:
                env.pop(key)  # the notebook runs with the internet off
            done = subprocess.run([sys.executable, str(bundle / "kt_predict.py")], env=env, capture_output=True,
                                  text=True, cwd=working, timeout=300)
            if edit:
                edit(working)
            log = json.dumps([{"stream_name": "stdout", "time": 1.0, "data": done.stdout},
                              {"stream_name": "stderr", "time": 2.0, "data": done.stderr}])
            outputs = {p.name: p.read_bytes() for p in working.iterdir() if p.is_file()}
            return ("COMPLETE" if done.returncode == 0 else "ERROR"), outputs, log
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return run


@pytest.fixture
def submission_dir(onnx_model, aptos_dir, tmp_path):
    from tests.helpers import predict

    manifest = predict("aptos", [onnx_model], aptos_dir, out_root=tmp_path / "subs", label="code",
                                  progress=False, precision="fp16")
    return Path(manifest["submission"]).parent


@pytest.fixture(scope="module")
def bundle(onnx_model, tmp_path_factory):
    from click.testing import CliRunner

    from kaggle_transfer.cli import main

    out = tmp_path_factory.mktemp("bundle") / "b"
    result = CliRunner().invoke(main, ["bundle", "aptos", str(onnx_model), "-o", str(out), "--no-fetch-wheels",
                                       "--image-has-onnxruntime", "--python", PY, "--accelerator", "none"])
    assert result.exit_code == 0, result.output
    return out


def order(fake, *rpcs) -> list[int]:
    return [fake.rpcs.index(r) for r in rpcs]


def test_the_careful_flow_runs_checks_and_only_then_submits(fake, home, aptos_dir, submission_dir):
    fake.notebook = notebook(aptos_dir)
    fake.dataset_pending_polls = 1
    out = kt(fake, home, "submit", "aptos", submission_dir, "-m", "kt code run", "--data-dir", aptos_dir, "--wait",
             "--no-fetch-wheels", "--image-has-onnxruntime", "--python", PY, "--accelerator", "none")
    assert out.returncode == 0, out.stderr[-3000:]
    rpcs = fake.rpcs
    # dataset → ready → notebook → its run finished → its output fetched → only then the submission
    created, pushed = rpcs.index("CreateDataset"), rpcs.index("SaveKernel")
    ready = max(i for i, r in enumerate(rpcs[:pushed]) if r == "GetDatasetStatus")
    finished = max(i for i, r in enumerate(rpcs) if r == "GetKernelSessionStatus")
    fetched, submitted = rpcs.index("ListKernelSessionOutput"), rpcs.index("CreateCodeSubmission")
    assert created < ready < pushed < finished < fetched < submitted
    assert "notebook kt-tester/kt-aptos-predict: running" in out.stderr  # progress while it runs
    kernel = next(r["body"] for r in fake.requests if r.get("rpc") == "SaveKernel")
    # the owner is the authenticated user from kaggle.json (no KAGGLE_USERNAME), never a placeholder
    assert kernel["datasetDataSources"] == ["kt-tester/kt-bundle-aptos"] and "YOUR" not in json.dumps(kernel)
    assert kernel["enableInternet"] is False and kernel["dockerImagePinningType"].lower().endswith("original")
    assert kernel["competitionDataSources"] == ["aptos2019-blindness-detection"]
    code = next(r["body"] for r in fake.requests if r.get("rpc") == "CreateCodeSubmission")
    assert code["kernelSlug"] == "kt-aptos-predict" and code["submissionDescription"] == "kt code run"
    record = json.loads((submission_dir / "manifest.json").read_text())["kaggle"]
    assert len(record) == 1 and record[0]["status"] == "COMPLETE" and record[0]["public"] == "0.91234"
    assert "public score 0.91234" in out.stdout
    bundle_info = json.loads((submission_dir / "bundle" / "bundle.json").read_text())
    assert bundle_info["python"] == PY and bundle_info["precision"] == "fp16"


def test_a_failed_notebook_prints_its_log_and_spends_no_submission(fake, home, aptos_dir, submission_dir, bundle):
    def crash(files):
        return "ERROR", {}, json.dumps([{"stream_name": "stderr", "time": 1, "data": "Traceback\nMemoryError: CUDA\n"}])
    fake.notebook, fake.failure_message = crash, "Your notebook hit an error"
    out = kt(fake, home, "submit", "aptos", submission_dir, "-m", "x", "--data-dir", aptos_dir, "--bundle", bundle)
    assert out.returncode == 2 and "Traceback" not in out.stderr.split("error:")[0]
    line = out.stderr.strip().splitlines()[-1]
    assert "ended ERROR: Your notebook hit an error" in line and "MemoryError: CUDA" in line
    assert "nothing was submitted" in line and "CreateCodeSubmission" not in fake.rpcs


def test_a_notebook_writing_an_invalid_csv_spends_no_submission(fake, home, aptos_dir, submission_dir, bundle):
    def break_csv(working: Path):
        pd.read_csv(working / "submission.csv").assign(diagnosis=7).to_csv(working / "submission.csv", index=False)
    fake.notebook = notebook(aptos_dir, edit=break_csv)
    out = kt(fake, home, "submit", "aptos", submission_dir, "-m", "x", "--data-dir", aptos_dir, "--bundle", bundle)
    assert out.returncode == 2 and "not a valid aptos submission" in out.stderr
    assert "CreateCodeSubmission" not in fake.rpcs


@pytest.mark.parametrize("setup, message", [
    (lambda f: f.invalid_sources.update(competition=["aptos2019-blindness-detection"]), "competition source"),
    (lambda f: f.fail.update(CreateCodeSubmission=[400]), "HTTP 400 while trying to submit the notebook: fake failure"),
    (lambda f: setattr(f, "broken_upload", True), "could not create the dataset kt-tester/kt-bundle-aptos"),
    (lambda f: setattr(f, "limits", {"numToday": 2, "numTotal": 9, "numAllowedNow": 0}), "no more submissions"),
    (lambda f: f.fail.update(CreateDataset=[403]), "kt-tester/kt-bundle-aptos must belong to the signed-in user"),
])
def test_faults_are_one_line_and_nothing_is_submitted_twice(fake, home, aptos_dir, submission_dir, bundle, setup,
                                                            message):
    fake.notebook = notebook(aptos_dir)
    setup(fake)
    out = kt(fake, home, "submit", "aptos", submission_dir, "-m", "x", "--data-dir", aptos_dir, "--bundle", bundle)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and message in lines[-1] and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert len([r for r in fake.rpcs if r == "CreateCodeSubmission"]) <= 1
    if "no more submissions" in message:
        assert "StartBlobUpload" not in fake.rpcs  # refused before anything was uploaded


def test_dry_run_stops_before_the_submission(fake, home, aptos_dir, submission_dir, bundle):
    fake.notebook = notebook(aptos_dir)
    out = kt(fake, home, "submit", "aptos", submission_dir, "-m", "x", "--data-dir", aptos_dir, "--bundle", bundle,
             "--dry-run")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ran and its submission.csv is valid; nothing submitted" in out.stdout
    assert "SaveKernel" in fake.rpcs and "CreateCodeSubmission" not in fake.rpcs


def test_a_submission_scored_error_exits_non_zero_and_is_recorded(fake, home, aptos_dir, submission_dir, bundle):
    fake.notebook = notebook(aptos_dir)
    fake.scored = {"status": "ERROR", "errorDescription": "Submission scoring error: wrong row count"}
    out = kt(fake, home, "submit", "aptos", submission_dir, "-m", "x", "--data-dir", aptos_dir, "--bundle", bundle,
             "--wait")
    assert out.returncode == 2 and "scored submission 2000 as ERROR: Submission scoring error" in out.stderr
    record = json.loads((submission_dir / "manifest.json").read_text())["kaggle"]
    assert [(r["ref"], r["status"]) for r in record] == [(2000, "ERROR")]


def test_a_polling_failure_after_submitting_names_the_ref(fake, home, aptos_dir, submission_dir, bundle):
    fake.notebook = notebook(aptos_dir)
    fake.fail["ListSubmissions"] = [401]  # fallback daily check passes through limits; polling then fails
    fake.limits = {"numToday": 0, "numTotal": 1, "numAllowedNow": 5}
    out = kt(fake, home, "submit", "aptos", submission_dir, "-m", "x", "--data-dir", aptos_dir, "--bundle", bundle,
             "--wait")
    line = out.stderr.strip().splitlines()[-1]
    assert out.returncode == 2 and "submission 2000 was created" in line and "kt submissions" in line
    assert json.loads((submission_dir / "manifest.json").read_text())["kaggle"][0]["ref"] == 2000
    # --resume after that failure follows ref 2000: the ref was recorded before the wait began
    again = kt(fake, home, "submit", "aptos", submission_dir, "-m", "x", "--data-dir", aptos_dir, "--resume")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "already submitted as ref 2000" in again.stderr and "was already submitted" in again.stdout
    assert fake.rpcs.count("CreateCodeSubmission") == 1


def test_bundles_are_built_for_the_notebooks_pythons(onnx_model, tmp_path):
    from click.testing import CliRunner

    from kaggle_transfer.cli import main

    out = tmp_path / "b"
    result = CliRunner().invoke(main, ["bundle", "aptos", str(onnx_model), "-o", str(out), "--no-fetch-wheels"])
    assert result.exit_code == 2 and "no onnxruntime wheel for Python 3.12" in result.output and not out.exists()
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    cp311 = wheels / "onnxruntime-1.26.0-cp311-cp311-manylinux_2_28_x86_64.whl"
    cp311.write_bytes(b"not used")
    args = ["bundle", "aptos", str(onnx_model), "-o", str(out), "--no-fetch-wheels", "--wheels-from", str(wheels),
            "--accelerator", "none"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "onnxruntime-1.26.0-cp311" in result.output
    assert "Python 3.12,3.13" in result.output
    cp311.rename(wheels / "onnxruntime-1.26.0-cp312-cp312-manylinux_2_28_x86_64.whl")
    result = CliRunner().invoke(main, args)  # the default carries 3.12 and 3.13: one is not enough
    assert result.exit_code == 2 and "no onnxruntime wheel for Python 3.13" in result.output
    (wheels / "onnxruntime-1.26.0-cp313-cp313-manylinux_2_28_x86_64.whl").write_bytes(b"not used")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    info = json.loads((out / "bundle.json").read_text())
    assert info["pythons"] == ["3.12", "3.13"] and not (out / "kernel-metadata.json").exists()  # owner: at push
    script = (out / "kt_predict.py").read_text()
    assert "tempfile.mkdtemp" in script and "/kaggle/working/kt-site" not in script


def test_leaderboard_places_the_best_public_score(fake, home):
    fake.leaderboard = [0.95 - i * 0.001 for i in range(300)]  # 300 teams
    fake.submissions = [{"ref": 1, "date": _now(), "description": "a", "status": "COMPLETE", "publicScore": "0.8905",
                         "polls": 0},
                        {"ref": 2, "date": _now(), "description": "b", "status": "COMPLETE", "publicScore": "0.7",
                         "polls": 0}]
    out = kt(fake, home, "leaderboard", "aptos")
    assert out.returncode == 0, out.stderr
    assert "300 teams" in out.stdout
    # 0.8905 beats 0.950 - 0.060 = 0.8900 and below: 60 teams are better (0.950 ... 0.891) → rank 61
    assert "rank 61 of 300 (top 20.3%)" in out.stdout and "bronze zone" in out.stdout
    assert "gold   top    10" in out.stdout and "silver top    50" in out.stdout
    assert fake.rpcs.count("GetLeaderboard") == 2  # two pages of 200


def test_slugs_are_normalised_and_length_checked():
    from kaggle_transfer.errors import KtError
    from kaggle_transfer.kaggle.bundle import names

    assert names("My_Forest 2026") == {"dataset": "kt-bundle-my-forest-2026", "kernel": "kt-my-forest-2026-predict"}
    with pytest.raises(KtError, match="must have 6-50 characters"):
        names("x" * 60)


def test_run_time_estimate_warns_near_the_notebook_limit(tmp_path):
    from kaggle_transfer.competitions import APTOS
    from kaggle_transfer.kaggle.submit import runtime_estimate

    (tmp_path / "manifest.json").write_text(json.dumps({"images_per_s": 2.0}))  # 13,000 images: 1.8 h
    line = runtime_estimate(APTOS, tmp_path / "submission.csv")
    assert line.startswith("estimated notebook run: 1.8 h for ~13,000 hidden test images")
    (tmp_path / "manifest.json").write_text(json.dumps({"images_per_s": 0.4}))  # 9.0 h
    assert runtime_estimate(APTOS, tmp_path / "submission.csv").startswith("warning:")


def _http_error(code: int, retry_after: str | None = None):
    import requests

    response = requests.Response()
    response.status_code = code
    if retry_after:
        response.headers["Retry-After"] = retry_after
    return requests.HTTPError(f"{code}", response=response)


def test_the_wait_survives_dropped_connections_timeouts_and_a_minute_of_503():
    """A stub client on a fake clock: the connection drops, a read times out, then the server answers 503
    (asking for 7 s each time) for a minute and 429 once; the wait goes on and sees the run finish."""
    from types import SimpleNamespace

    import requests

    from kaggle_transfer.errors import KtError
    from kaggle_transfer.kaggle.submit import Waiting, wait_for_run

    now, sleeps, lines = [0.0], [], []

    def sleep(seconds):
        sleeps.append(seconds)
        now[0] += seconds

    class Api:
        calls = 0

        def kernels_status(self, kernel):
            self.calls += 1
            if self.calls == 1:
                raise requests.ConnectionError("connection dropped")
            if self.calls == 2:
                raise requests.ReadTimeout("read timed out")
            if self.calls == 3:
                raise requests.exceptions.ChunkedEncodingError("the body was cut short")
            if now[0] < 62:
                raise _http_error(503, "7")
            if self.calls < 14:
                raise _http_error(429)
            return SimpleNamespace(status="COMPLETE", failure_message="")

    api = Api()
    waiting = Waiting(echo=lines.append, poll_s=1, timeout_s=3600, sleep=sleep, clock=lambda: now[0]).start()
    assert wait_for_run(api, "kt-tester/kt-aptos-predict", waiting) == ("COMPLETE", "")
    assert sleeps.count(7.0) >= 8 and now[0] > 60  # Retry-After honoured through a minute of 503
    assert any("cannot reach Kaggle" in line and "retrying" in line for line in lines)
    assert any("HTTP 503" in line for line in lines) and any("429" in line for line in lines)
    # the patience has a bound: the wait's own deadline
    now[0], api.calls = 0.0, 2
    short = Waiting(echo=lines.append, poll_s=1, timeout_s=30, sleep=sleep, clock=lambda: now[0]).start()
    with pytest.raises(KtError, match="HTTP 503"):
        wait_for_run(api, "kt-tester/kt-aptos-predict", short)


def test_resume_after_a_kill_follows_the_same_notebook_version(fake, home, aptos_dir, submission_dir):
    """kt submit killed while the notebook runs: --resume follows the recorded kernel version (no new
    upload, no new run) and submits it; a second --resume finds the ref and submits nothing."""
    import threading
    import time

    gate, real = threading.Event(), notebook(aptos_dir)

    def slow(files):
        gate.wait(120)
        return real(files)

    fake.notebook = slow
    args = ["submit", "aptos", str(submission_dir), "-m", "resumed", "--data-dir", str(aptos_dir), "--python", PY,
            "--no-fetch-wheels", "--image-has-onnxruntime", "--accelerator", "none"]
    first = subprocess.Popen([sys.executable, "-m", "kaggle_transfer", *args], env=kt_env(fake, home), cwd=home,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    manifest = submission_dir / "manifest.json"
    deadline = time.time() + 120
    while time.time() < deadline and "notebook_run" not in json.loads(manifest.read_text()):
        time.sleep(0.2)
    first.kill()
    first.communicate()
    recorded = json.loads(manifest.read_text())["notebook_run"]
    assert recorded["kernel"] == "kt-tester/kt-aptos-predict" and recorded["kernel_version"] == 1
    gate.set()
    fake.run.join(300)
    pushes = (fake.rpcs.count("SaveKernel"), fake.rpcs.count("StartBlobUpload"))
    out = kt(fake, home, *args, "--resume", "--wait")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resuming notebook kt-tester/kt-aptos-predict v1" in out.stderr
    assert (fake.rpcs.count("SaveKernel"), fake.rpcs.count("StartBlobUpload")) == pushes  # nothing pushed again
    code = [r["body"] for r in fake.requests if r.get("rpc") == "CreateCodeSubmission"]
    assert len(code) == 1 and code[0]["kernelVersion"] == 1
    again = kt(fake, home, *args, "--resume")
    assert again.returncode == 0 and "already submitted as ref 2000" in again.stderr
    assert fake.rpcs.count("CreateCodeSubmission") == 1


@pytest.mark.parametrize("edit, message", [
    (lambda w: (w / "kt_manifest.json").unlink(), "kt_manifest.json (kt-tester/kt-aptos-predict v1) is missing"),
    (lambda w: _edit_manifest(w, bundle_id="an-older-push"), "is from another bundle"),
    (lambda w: _edit_manifest(w, rows=3), "rows were answered but its submission.csv has"),
    (lambda w: _edit_manifest(w, models=[{"sha256": "0" * 64, "provider": "CPUExecutionProvider"}]),
     "the models it ran are not the bundle's"),
    (lambda w: _edit_manifest(w, models=["a"]), "is not a kt manifest"),
    (lambda w: _edit_manifest(w, models=[None]), "is not a kt manifest"),
    (lambda w: _edit_manifest(w, rows="8"), "is not a kt manifest"),
    (lambda w: (w / "kt_manifest.json").write_bytes(b"\x00garbage"), "is not a kt manifest"),
])
def test_what_the_notebook_ran_is_checked_before_a_submission_is_spent(fake, home, aptos_dir, submission_dir,
                                                                       bundle, edit, message):
    fake.notebook = notebook(aptos_dir, edit=edit)
    out = kt(fake, home, "submit", "aptos", submission_dir, "-m", "x", "--data-dir", aptos_dir, "--bundle", bundle)
    line = out.stderr.strip().splitlines()[-1]
    assert out.returncode == 2 and message in line and "nothing was submitted" in line, out.stderr[-2000:]
    assert "CreateCodeSubmission" not in fake.rpcs


def _edit_manifest(working: Path, **changes) -> None:
    path = working / "kt_manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.slow
@pytest.mark.network
def test_the_runtime_dataset_is_uploaded_once_and_the_notebook_uses_it(fake, home, aptos_dir, submission_dir,
                                                                       monkeypatch):
    """kt submit fetches the pinned onnxruntime (from the package index, once) into a runtime dataset of its
    own; the notebook mounts it beside the bundle; a second submission uploads the bundle only."""
    from kaggle_transfer.kaggle import runtime as runtime_mod

    monkeypatch.setenv("KT_WHEEL_CACHE", os.path.expanduser("~/.cache/kt-tests/wheels"))
    for pinned in (runtime_mod.RUNTIMES["none"], runtime_mod.DECODER):  # here, not through the fake (it
        runtime_mod.fetch(pinned, PY)  # refuses the index)
    fake.notebook = notebook(aptos_dir)
    args = ["submit", "aptos", submission_dir, "-m", "x", "--data-dir", aptos_dir, "--python", PY,
            "--accelerator", "none", "--dry-run"]
    out = kt(fake, home, *args)
    assert out.returncode == 0, out.stderr[-3000:]
    runtime = f"kt-runtime-none-1-26-0-ic2026-3-6-cp{PY.replace('.', '')}"
    created = [r["body"] for r in fake.requests if r.get("rpc") == "CreateDataset"]
    assert sorted(b.get("slug") for b in created) == ["kt-bundle-aptos", runtime]
    kernel = next(r["body"] for r in fake.requests if r.get("rpc") == "SaveKernel")
    assert kernel["datasetDataSources"] == ["kt-tester/kt-bundle-aptos", f"kt-tester/{runtime}"]
    log = "".join(json.loads(fake.log)[i]["data"] for i in range(2))
    uploaded = " ".join(fake.blob_names.values())
    assert "kt: runtime:" in log and "onnxruntime-1.26.0" in uploaded and "imagecodecs-2026.3.6" in uploaded
    uploads = len(fake.blob_names)
    out = kt(fake, home, *args)
    assert out.returncode == 0, out.stderr[-3000:]
    again = list(fake.blob_names.values())[uploads:]
    assert again and not [n for n in again if n.startswith(("onnxruntime", "imagecodecs"))]  # not uploaded again
    assert [r["body"].get("datasetSlug") for r in fake.requests if r.get("rpc") == "CreateDatasetVersion"] == [
        "kt-bundle-aptos"]
