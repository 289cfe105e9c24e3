"""Shared fixtures: tiny synthetic competitions and one tiny trained run, reused across tests.

Everything is CPU-only, timm test models at 32-48 px, no network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# make test runs the suite in one process per core (pytest-xdist): each computes on one thread, and so
# do the processes a test starts. Measured on the 2-core CI machine, a second torch thread made a tiny
# model's training step 1.08x faster for 1.8x the CPU time, so one thread per worker costs nothing.
# (A worker inherits the controlling process's environment, so a worker sets it, not only defaults it.)
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
else:
    os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no test reaches beyond loopback

from kaggle_transfer import config  # noqa: E402
from kaggle_transfer.competitions import synthetic  # noqa: E402

TINY = {"arch": "test_resnet", "pretrained": False, "size": 32, "epochs": 2, "batch_size": 16, "lr": 3e-3,
        "workers": 0, "pool": "gem"}


def tiny_config(**overrides) -> config.RunConfig:
    return config.resolve(flags={"competition": "aptos", **TINY, **overrides})


@pytest.fixture(scope="session")
def aptos_dir(tmp_path_factory) -> Path:
    return synthetic.make("aptos", tmp_path_factory.mktemp("aptos"), n_train=120, n_test=30, image_size=48)


@pytest.fixture
def aptos_copy(aptos_dir, tmp_path) -> Path:
    """A private copy a test may damage."""
    import shutil

    return Path(shutil.copytree(aptos_dir, tmp_path / "aptos"))


@pytest.fixture(scope="session")
def trained_run(aptos_dir, tmp_path_factory) -> Path:
    from kaggle_transfer.training.loop import fit

    run_dir = tmp_path_factory.mktemp("run")
    fit(tiny_config(), run_dir, aptos_dir, progress=False)
    return run_dir


@pytest.fixture(scope="session")
def onnx_model(trained_run) -> Path:
    from kaggle_transfer.training.export import export

    return Path(export(trained_run)["path"])


@pytest.fixture
def fake():
    """A fake Kaggle on loopback (tests/fake_kaggle.py); fails the test if anything tried to leave it."""
    from .fake_kaggle import FakeKaggle

    server = FakeKaggle()
    yield server
    server.close()
    assert not any(r.get("refused") for r in server.requests), "a request tried to leave loopback"
