"""kt study on several machines against a real PostgreSQL server (started and removed by the test).

"Machines" are worker processes with their own $KT_RUNS and working folder: they share nothing but
the database. No mock: the real server, the real driver, Optuna's RDB storage."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from kaggle_transfer.competitions import synthetic

from . import postgres

pytestmark = [pytest.mark.skipif(bool(postgres.available()), reason=postgres.available() or ""), pytest.mark.slow]

TINY = ["--set", "size=32", "--set", "workers=0", "--set", "pretrained=false", "--set", "batch_size=16",
        "--set", "epochs=3"]
ARCHS = "test_resnet,test_efficientnet"


def machine(tmp_path: Path, name: str) -> dict:
    home = tmp_path / name
    (home / "runs").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "KT_RUNS": str(home / "runs"), "KT_STUDY_HEARTBEAT": "1", "KT_STUDY_GRACE": "3"}
    return {"cwd": home, "env": env}


def kt(*args, where: dict, **kw):
    return [sys.executable, "-m", "kaggle_transfer", *map(str, args)], {**where, **kw}


def study(url: str, data: Path, where: dict) -> subprocess.Popen:
    cmd, opts = kt("study", "aptos", "--archs", ARCHS, "--grid", "small", "--data-dir", data, "--storage", url, *TINY,
                   where=where)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **opts)


def run(*args, where: dict) -> subprocess.CompletedProcess:
    cmd, opts = kt(*args, where=where)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, **opts)


def trials(url: str):
    import optuna

    summary = next(s for s in optuna.get_all_study_summaries(url) if ":claim:" not in s.study_name)
    return optuna.load_study(study_name=summary.study_name, storage=url).get_trials()


def test_two_machines_share_one_postgres_study(tmp_path):
    from optuna.trial import TrialState

    data = synthetic.make("aptos", tmp_path / "data", n_train=60, n_test=4, image_size=32)
    a, b, c = (machine(tmp_path, n) for n in ("a", "b", "c"))
    with postgres.server() as url:
        first_a, first_b = study(url, data, a), study(url, data, b)
        deadline = time.time() + 90
        while not list((a["cwd"] / "runs").rglob("last.pt")) and time.time() < deadline:
            time.sleep(0.1)
        first_a.send_signal(signal.SIGKILL)  # machine A dies mid-trial: its trial stays RUNNING in the database
        first_a.wait()
        killed = [p.parent for p in (a["cwd"] / "runs").rglob("last.pt") if not (p.parent / "metrics.json").exists()]
        restarted_a = study(url, data, a)
        outs = [p.communicate(timeout=180) for p in (first_b, restarted_a)]
        assert first_b.returncode == 0 and restarted_a.returncode == 0, [o[1][-1500:] for o in outs]

        done = [t for t in trials(url) if t.state == TrialState.COMPLETE]
        keys = [tuple(sorted(t.params.items())) for t in done]
        assert len(done) == 4 and len(set(keys)) == 4  # every grid point finished exactly once
        assert {t.user_attrs["host"] for t in done} and all(0 <= t.user_attrs["accuracy"] <= 1 for t in done)
        folders = [p.parent for m in ("a", "b") for p in (tmp_path / m / "runs").rglob("metrics.json")]
        assert len(folders) == 4  # no point trained to the end twice, on either machine
        for folder in folders:
            assert list(pd.read_csv(folder / "history.csv")["epoch"]) == [1, 2, 3]
        if killed:  # the point A was training was re-run: resumed on A, or from scratch on B
            point = killed[0].relative_to(a["cwd"] / "runs")
            redone = next(t for t in done if t.user_attrs["run_dir"].endswith(str(point)))
            where = "b" if "/b/runs/" in redone.user_attrs["run_dir"] else "a"
            assert redone.user_attrs["trained_from"] == ("scratch" if where == "b" else "resumed")

        status = run("study", "status", "aptos", "--storage", url, where=c)
        assert status.returncode == 0, status.stderr
        assert "4 points: 4 done, 0 running, 0 failed, 0 left" in status.stdout

        # a third machine with nothing but the storage URL: the report needs no run folder
        top1 = c["cwd"] / "top1.csv"
        pd.DataFrame({"arch": ["test_resnet", "test_efficientnet"], "top1": [60.0, 70.0]}).to_csv(top1, index=False)
        report = run("study", "report", "aptos", "--storage", url, "--top1", top1, where=c)
        assert report.returncode == 0, report.stderr
        out = c["cwd"] / "runs" / "aptos" / "study-report"
        table = pd.read_csv(out / "study.csv")
        assert sorted(table["arch"]) == ["test_efficientnet", "test_resnet"]
        assert table["score"].notna().all() and table["accuracy"].between(0, 1).all()
        assert (out / "study.png").stat().st_size > 5000
        assert not list((c["cwd"] / "runs").rglob("metrics.json"))  # it trained nothing, read no run folder


def test_storage_errors_are_one_line_with_the_password_masked(tmp_path):
    where = machine(tmp_path, "x")
    out = run("study", "status", "aptos", "--storage", "postgresql://kt:s3cret@127.0.0.1:1/kt", where=where)
    assert out.returncode == 2 and "s3cret" not in out.stdout + out.stderr
    assert out.stderr.startswith("error: cannot open the study storage postgresql://kt:***@127.0.0.1:1/kt")
    code = ("import sys; sys.modules['psycopg'] = None\nfrom kaggle_transfer.cli import main\n"
            "main(['study', 'status', 'aptos', '--storage', 'postgresql://kt:s3cret@127.0.0.1:1/kt'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, **where)
    assert out.returncode == 2 and "s3cret" not in out.stderr
    assert "pip install 'kaggle_transfer[postgres]'" in out.stderr and len(out.stderr.strip().splitlines()) == 1
