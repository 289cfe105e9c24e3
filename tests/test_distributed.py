"""torchrun on CPU (gloo): two processes train one run with the same files as a single process, and the
OOF covers every validation row exactly once (shards are uneven here: 17 validation rows)."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kaggle_transfer.competitions import APTOS, synthetic
from kaggle_transfer.data.splits import assign_folds
from kaggle_transfer.training.export import export

pytestmark = pytest.mark.slow

ARGS = ["train", "aptos", "--arch", "test_resnet", "--no-pretrained", "--size", "32", "--epochs", "2", "--workers",
        "0", "--no-progress", "--set", "batch_size=8"]


def files(run: Path) -> set[str]:
    return {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()}


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
                    reason="torchrun is installed with torch")
def test_torchrun_two_processes(tmp_path):
    data = synthetic.make("aptos", tmp_path / "d", n_train=87, n_test=4, image_size=32)  # 15 validation rows
    torchrun = str(Path(sys.executable).parent / "torchrun")
    out = subprocess.run([torchrun, "--nproc_per_node", "2", "-m", "kaggle_transfer", *ARGS, "--data-dir", str(data),
                          "--runs-root", str(tmp_path / "ddp")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("run folder:") == 1 and "(2 processes)" in out.stdout  # rank 0 speaks, once
    runs = list((tmp_path / "ddp" / "aptos").iterdir())
    assert len(runs) == 1  # one folder for both ranks
    single = subprocess.run([sys.executable, "-m", "kaggle_transfer", *ARGS, "--data-dir", str(data), "--runs-root",
                             str(tmp_path / "one")], capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    assert files(runs[0]) == files(next((tmp_path / "one" / "aptos").iterdir()))
    table = APTOS.read_train(data)
    val_ids = table["id"][assign_folds(table, "paper", 5, 414) == 0]
    oof = np.load(runs[0] / "oof.npz")
    # an odd count over two ranks: each row once, none padded in
    assert len(val_ids) == 15 and sorted(oof["ids"]) == sorted(val_ids)
    assert export(runs[0])["max_abs_diff"] <= 1e-4  # rank 0 saved plain (unwrapped) weights


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
                    reason="torchrun is installed with torch")
def test_torchrun_on_data_smaller_than_a_batch_per_process(tmp_path):
    """24 training rows, batch 16, two processes: each rank sees 12 rows, fewer than a batch. The rank's
    last partial batch trains instead of the run dying in timm's scheduler with zero steps."""
    data = synthetic.make("aptos", tmp_path / "d", n_train=30, n_test=4, image_size=32)
    torchrun = str(Path(sys.executable).parent / "torchrun")
    args = [a if a != "batch_size=8" else "batch_size=16" for a in ARGS]
    out = subprocess.run([torchrun, "--nproc_per_node", "2", "-m", "kaggle_transfer", *args, "--data-dir", str(data),
                          "--runs-root", str(tmp_path / "ddp")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    run = next((tmp_path / "ddp" / "aptos").iterdir())
    assert (run / "metrics.json").is_file() and "AssertionError" not in out.stderr
