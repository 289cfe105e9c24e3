"""fit(): artifacts, resume after an interruption, losses, amp/device choices."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from kaggle_transfer.errors import KtError
from kaggle_transfer.tasks import Task
from kaggle_transfer.training import loop as train
from kaggle_transfer.training.builders import build_scheduler

from .conftest import tiny_config


def test_run_folder_contract(aptos_dir, trained_run):
    for name in ("config.yaml", "run.json", "history.csv", "metrics.json", "oof.npz", "best.pt", "last.pt",
                 "plots/learning_curve.png"):
        assert (trained_run / name).is_file(), name
    history = pd.read_csv(trained_run / "history.csv")
    assert list(history["epoch"]) == [1, 2]
    assert {"train_loss", "val_loss", "score", "lr", "train_images_per_s"} <= set(history.columns)
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["score"] == pytest.approx(history["score"].max())
    # the paper split: 20% of each grade, rounded down per grade, of the 120 rows
    n_val = sum(int(0.2 * n) for n in pd.read_csv(aptos_dir / "train.csv")["diagnosis"].value_counts())
    assert metrics["n_val"] == n_val and metrics["n_train"] == 120 - n_val
    assert len(metrics["fitted"]["cutpoints"]) == 4
    oof = np.load(trained_run / "oof.npz")
    assert oof["raw"].shape == (n_val, 1) and len(oof["ids"]) == n_val and oof["targets"].shape == (n_val,)
    assert (trained_run / "plots/learning_curve.png").stat().st_size > 5000
    # best.pt is a plain state dict that loads with weights_only
    state = torch.load(trained_run / "best.pt", weights_only=True)
    assert any(k.startswith("head.") for k in state)


def test_oof_score_is_reproducible_from_the_saved_outputs(trained_run):
    oof = np.load(trained_run / "oof.npz")
    metrics = json.loads((trained_run / "metrics.json").read_text())
    task = Task("ordinal", 5, "qwk")
    assert task.score(oof["targets"], oof["raw"], json.loads(str(oof["fitted"]))) == pytest.approx(metrics["score"])


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_resume_after_interruption_finishes_the_run(aptos_dir, tmp_path, monkeypatch, workers):
    """With workers too: persistent workers are never re-initialised, yet the resumed run must see the
    augmentations the uninterrupted one saw in epochs 2 and 3; with dropout, the same masks."""
    cfg = tiny_config(epochs=3, workers=workers, augment="heavy", dropout=0.3)
    calls = {"n": 0}
    real = train.predict_raw

    def crash_on_second_validation(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the process is killed during epoch 2
        return real(*args, **kwargs)

    monkeypatch.setattr(train, "predict_raw", crash_on_second_validation)
    with pytest.raises(KeyboardInterrupt):
        train.fit(cfg, tmp_path, aptos_dir, progress=False)
    first = pd.read_csv(tmp_path / "history.csv")
    assert list(first["epoch"]) == [1]
    assert not (tmp_path / "metrics.json").exists()
    monkeypatch.setattr(train, "predict_raw", real)
    result = train.fit(cfg, tmp_path, aptos_dir, resume=True, progress=False)
    history = pd.read_csv(tmp_path / "history.csv")
    assert list(history["epoch"]) == [1, 2, 3]  # epoch 1 kept, not retrained
    assert history["train_loss"][0] == first["train_loss"][0]
    assert result["epochs_run"] == 3 and (tmp_path / "metrics.json").is_file()
    # optimizer, scheduler and data order were restored: the resumed run equals an uninterrupted one
    whole = train.fit(cfg, tmp_path / "whole", aptos_dir, progress=False)
    assert np.allclose(pd.read_csv(tmp_path / "whole/history.csv")["train_loss"], history["train_loss"], atol=1e-6)
    assert whole["score"] == pytest.approx(result["score"])


def test_resume_without_checkpoint_is_a_clear_error(aptos_dir, tmp_path):
    with pytest.raises(KtError, match="last.pt not found"):
        train.fit(tiny_config(), tmp_path, aptos_dir, resume=True, progress=False)


def test_same_seed_same_result(aptos_dir, tmp_path):
    a = train.fit(tiny_config(epochs=1), tmp_path / "a", aptos_dir, progress=False)
    b = train.fit(tiny_config(epochs=1), tmp_path / "b", aptos_dir, progress=False)
    assert a["score"] == b["score"]
    assert np.array_equal(np.load(tmp_path / "a/oof.npz")["raw"], np.load(tmp_path / "b/oof.npz")["raw"])


@pytest.mark.parametrize("name, kind, cls", [
    ("l1", "ordinal", torch.nn.L1Loss), ("smooth_l1", "ordinal", torch.nn.SmoothL1Loss),
    ("mse", "ordinal", torch.nn.MSELoss), ("ce", "multiclass", torch.nn.CrossEntropyLoss),
    ("bce", "multilabel", torch.nn.BCEWithLogitsLoss),
])
def test_build_loss(name, kind, cls):
    assert isinstance(train.build_loss(name, Task(kind, 5, "qwk")), cls)


def test_focal_loss_comes_from_smp():
    from segmentation_models_pytorch.losses import FocalLoss

    loss = train.build_loss("focal", Task("multilabel", 4, "macro_f1"))
    assert isinstance(loss, FocalLoss)
    logits, y = torch.tensor([[4.0, -4.0, 0.0, 0.0]]), torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    assert loss(logits, y) < loss(-logits, y)


def test_wrong_loss_for_the_task(aptos_dir, tmp_path):
    with pytest.raises(KtError, match="--loss bce does not fit an ordinal task"):
        train.fit(tiny_config(loss="bce"), tmp_path, aptos_dir, progress=False)


def test_amp_and_device_choices():
    cpu = torch.device("cpu")
    assert train.amp_dtype("auto", cpu) is None
    assert train.amp_dtype("off", cpu) is None
    assert train.amp_dtype("bf16", cpu) == torch.bfloat16
    if not torch.cuda.is_available():
        with pytest.raises(KtError, match="--device cpu"):
            train.pick_device("cuda")


def test_step_schedule_follows_the_study(aptos_dir, tmp_path):
    result = train.fit(tiny_config(epochs=1, schedule="step", optimizer="sgd", lr=0.01), tmp_path, aptos_dir,
                       progress=False)
    assert result["epochs_run"] == 1
    sched_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    scheduler = build_scheduler(tiny_config(epochs=30, schedule="step", lr=0.1), sched_opt, 10)
    lrs = {e: scheduler._get_lr(e * 10)[0] for e in (14, 15, 20, 25)}
    assert lrs[14] == pytest.approx(0.1) and lrs[15] == pytest.approx(0.01)
    assert lrs[20] == pytest.approx(0.001) and lrs[25] == pytest.approx(0.0001)


def test_skip_bad_images_counts_dropped_rows(aptos_copy, tmp_path):
    first = sorted((aptos_copy / "train_images").iterdir())[0]
    first.unlink()
    result = train.fit(tiny_config(epochs=1), tmp_path, aptos_copy, skip_bad_images=True, progress=False)
    assert result["skipped_images"] == 1 and result["n_train"] + result["n_val"] == 119


def test_ema_weights_are_what_gets_validated_and_saved(aptos_dir, tmp_path):
    result = train.fit(tiny_config(epochs=1, ema=True, ema_decay=0.5), tmp_path, aptos_dir, progress=False)
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert last["ema"] and result["epochs_run"] == 1
    # the saved best weights are the EMA copy, not the raw model's
    ema = {k.removeprefix("module."): v for k, v in last["ema"].items()}
    assert set(ema) == set(best)
    assert all(torch.equal(best[k], v) for k, v in ema.items())
    assert any(not torch.equal(best[k], last["model"][k]) for k in best if best[k].is_floating_point())


def test_augmentations_depend_on_seed_epoch_and_row_not_on_workers(aptos_dir):
    from kaggle_transfer.competitions import APTOS
    from kaggle_transfer.training.augment import build_train_transform
    from kaggle_transfer.training.dataset import ImageDataset, make_loader

    table = APTOS.read_train(aptos_dir).head(24)

    def epochs(workers: int, seed: int = 0, n: int = 2) -> list[dict[int, torch.Tensor]]:
        dataset = ImageDataset(table, 32, targets=np.zeros(len(table)), transform=build_train_transform("heavy", 32),
                               seed=seed)
        loader = make_loader(dataset, 8, workers, True, generator=torch.Generator().manual_seed(0), pin=False)
        out = []
        for epoch in range(n):
            loader.sampler.set_epoch(epoch)
            out.append({int(i): x for xs, _, rows in loader for x, i in zip(xs, rows, strict=True)})
        return out

    inline, pooled = epochs(0), epochs(2)
    for a, b in zip(inline, pooled, strict=True):  # same pixels whatever the number of workers
        assert a.keys() == b.keys() and all(torch.equal(a[i], b[i]) for i in a)
    first, second = inline
    assert sum(not torch.equal(first[i], second[i]) for i in first) >= 0.9 * len(first)  # a new draw per epoch
    other_seed = epochs(0, seed=1, n=1)[0]
    assert sum(not torch.equal(first[i], other_seed[i]) for i in first) >= 0.9 * len(first)


def test_kt_train_reads_the_training_csv_once(aptos_dir, tmp_path, monkeypatch):
    """The preflight's table is the one the loop trains on: one read of train.csv per run."""
    from click.testing import CliRunner

    from kaggle_transfer.cli import main
    from kaggle_transfer.competitions import aptos

    reads = []
    real = aptos.read_csv
    monkeypatch.setattr(aptos, "read_csv", lambda path, *a, **k: reads.append(path.name) or real(path, *a, **k))
    out = CliRunner().invoke(main, ["train", "aptos", "--data-dir", str(aptos_dir), "--arch", "test_resnet",
                                    "--no-pretrained", "--size", "32", "--epochs", "1", "--workers", "0",
                                    "--set", "max_steps=1", "--runs-root", str(tmp_path), "--no-progress"])
    assert out.exit_code == 0, out.output
    assert reads.count("train.csv") == 1


def test_a_training_step_does_not_wait_for_the_host(aptos_dir, tmp_path, monkeypatch):
    """kt's loop reads the loss every SYNC_EVERY steps, not once a step: each read stalls a GPU until the
    step is done. (torch's AdamW reads its own step counter, a CPU tensor: no device sync, not counted.)"""
    import sys

    reads = []
    real = torch.Tensor.item

    def item(t):  # the caller's file, without building a traceback (optimizers call item() often)
        if "kaggle_transfer" in sys._getframe(1).f_code.co_filename:
            reads.append(1)
        return real(t)

    monkeypatch.setattr(torch.Tensor, "item", item)
    result = train.fit(tiny_config(epochs=1, batch_size=2, max_steps=60), tmp_path, aptos_dir, progress=False)
    assert result["epochs_run"] == 1
    # 48 steps (96 rows, batch 2) < SYNC_EVERY: one finiteness check, one loss read, the epoch's mean loss
    assert 1 <= len(reads) <= 4, len(reads)
    assert np.isfinite(pd.read_csv(tmp_path / "history.csv")["train_loss"]).all()


def test_each_epoch_hands_freed_memory_back(aptos_dir, tmp_path, monkeypatch):
    """malloc_trim after every epoch; glibc's mmap threshold is left alone (a fixed 1 MiB threshold cut
    the peak memory by 11 % and cost 11 % of a CPU run's wall time in page faults)."""
    import ctypes

    calls = []
    monkeypatch.setattr(train, "trim_heap", lambda: calls.append("trim"))
    libc = ctypes.CDLL(None)
    if hasattr(libc, "mallopt"):
        monkeypatch.setattr(ctypes.CDLL, "__getattr__", lambda self, name: calls.append(name) or (lambda *a: 0))
    train.fit(tiny_config(epochs=2, max_steps=1), tmp_path, aptos_dir, progress=False)
    assert calls == ["trim", "trim"]  # trimmed after every epoch, nothing else asked of malloc
    from kaggle_transfer.training.builders import trim_heap

    trim_heap()  # the real call works on this platform (or is a no-op where glibc's is missing)


def test_resume_with_more_epochs_extends_a_finished_run_on_the_stretched_schedule(aptos_dir, tmp_path):
    """kt train --resume RUN --epochs N (as timm's --resume with a larger --epochs): the finished run
    trains on to N epochs, its first epochs kept, and its learning rate follows the cosine of N epochs
    from where the run stands: the added epoch's lr is a fresh N-epoch run's lr at that epoch."""
    from click.testing import CliRunner

    from kaggle_transfer.cli import main

    tiny = ["--arch", "test_resnet", "--no-pretrained", "--size", "32", "-b", "16", "-j", "0",
            "--set", "max_steps=2", "--no-progress", "--data-dir", str(aptos_dir)]
    runner = CliRunner()

    def kt(*args):
        result = runner.invoke(main, [str(a) for a in args])
        return result

    assert kt("train", "aptos", "--epochs", "2", "--runs-root", tmp_path / "a", *tiny).exit_code == 0
    run = next((tmp_path / "a/aptos").iterdir())
    before = pd.read_csv(run / "history.csv")
    extended = kt("train", "--resume", run, "--epochs", "4")
    assert extended.exit_code == 0, extended.output
    assert "config: " in extended.output and "epochs=4" in extended.output
    after = pd.read_csv(run / "history.csv")
    assert list(after["epoch"]) == [1, 2, 3, 4]
    assert after["train_loss"][:2].tolist() == before["train_loss"].tolist()  # kept, not retrained
    assert json.loads((run / "metrics.json").read_text())["epochs_run"] == 4
    assert "epochs: 4" in (run / "config.yaml").read_text()
    assert kt("train", "aptos", "--epochs", "4", "--runs-root", tmp_path / "b", *tiny).exit_code == 0
    fresh = pd.read_csv(next((tmp_path / "b/aptos").iterdir()) / "history.csv")
    assert after["lr"][2:].tolist() == pytest.approx(fresh["lr"][2:].tolist(), rel=1e-9)
    assert after["lr"][1] < fresh["lr"][1]  # the 2-epoch cosine had decayed further by then
    again = kt("train", "--resume", run, "--epochs", "3")
    assert again.exit_code == 2 and "has trained 4 epochs already" in again.output


def test_a_time_limit_stops_before_an_epoch_that_would_end_past_it(aptos_dir, tmp_path, monkeypatch):
    """--time-limit (a Kaggle notebook's clock), on a fake clock where every epoch takes 10 minutes:
    with 25 minutes, epochs 1 and 2 run (the next would end at 30); the run finishes like any other
    (best epoch, OOF, metrics) and says why it stopped; resumed in a new session with the same limit it
    trains two more epochs."""
    from kaggle_transfer import config as config_mod

    now = {"t": 0.0}
    monkeypatch.setattr(train, "_clock", lambda: now["t"])
    real = train._epoch

    def ten_minutes(*args, **kwargs):
        real(*args, **kwargs)
        now["t"] += 600

    monkeypatch.setattr(train, "_epoch", ten_minutes)
    cfg = tiny_config(epochs=5, max_steps=1, time_limit="25m")
    result = train.fit(cfg, tmp_path, aptos_dir, progress=False)
    assert result["epochs_run"] == 2 and result["stopped"] == "time_limit" and now["t"] == 1200
    assert len(pd.read_csv(tmp_path / "history.csv")) == 2 and (tmp_path / "oof.npz").is_file()
    again = train.fit(cfg, tmp_path, aptos_dir, resume=True, progress=False)  # a new notebook session
    assert again["epochs_run"] == 4 and again["stopped"] == "time_limit"
    assert list(pd.read_csv(tmp_path / "history.csv")["epoch"]) == [1, 2, 3, 4]
    whole = train.fit(tiny_config(epochs=2, max_steps=1, time_limit="8h"), tmp_path / "b", aptos_dir,
                      progress=False)
    assert whole["epochs_run"] == 2 and whole["stopped"] is None
    assert config_mod.duration_s("1.5h") == 5400 and config_mod.duration_s("90") == 5400
    for bad in ("8x", "-1h", "soon", "0m"):
        with pytest.raises(KtError, match="give a duration such as 8h"):
            config_mod.resolve(flags={"time_limit": bad})
