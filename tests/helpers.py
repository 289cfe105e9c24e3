"""Calling the predictor as the CLI does, with the flags' names, for tests that predict often."""

from __future__ import annotations

from kaggle_transfer.inference.evaluate import evaluate as evaluate_predictor
from kaggle_transfer.inference.pipeline import predict_submission
from kaggle_transfer.inference.predictor import Choice, RunOptions, load_predictor
from kaggle_transfer.inference.pseudo import pseudo_label

CHOICE = {"ensemble": "ensemble", "weights": "weights", "blend_method": "blend", "fitted": "fitted",
          "refit": "refit"}
OPTIONS = {"tta": "tta", "provider": "provider", "precision": "precision", "io_binding": "io_binding",
           "batch_size": "batch_size", "workers": "threads", "progress": "progress"}


def predictor(competition, models, **flags):
    choice = Choice(models=list(models), **{CHOICE[k]: flags.pop(k) for k in list(flags) if k in CHOICE})
    options = RunOptions(**{OPTIONS[k]: flags.pop(k) for k in list(flags) if k in OPTIONS})
    return load_predictor(competition, choice, options), flags


def predict(competition, models, data_dir, **flags):
    """kt predict COMPETITION MODELS --data-dir DATA_DIR, flags as keywords (blend_method, workers, …)."""
    loaded, rest = predictor(competition, models, **flags)
    return predict_submission(loaded, data_dir, **rest)


def pseudo(competition, models, **flags):
    loaded, rest = predictor(competition, models, **flags)
    return pseudo_label(loaded, **rest)


def evaluate(competition, models, data_dir, **flags):
    loaded, rest = predictor(competition, models, **flags)
    return evaluate_predictor(loaded, data_dir, **rest)
