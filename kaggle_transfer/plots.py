"""PNG plots people would rather look at than read. matplotlib with the Agg backend (no display)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .fsutil import atomic_path


def learning_curve(history: pd.DataFrame, metric: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_score) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(history["epoch"], history["train_loss"], marker="o", label="train")
    ax_loss.plot(history["epoch"], history["val_loss"], marker="o", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax_loss.legend()
    ax_score.plot(history["epoch"], history["score"], marker="o", color="tab:green")
    best = history["score"].idxmax()
    ax_score.scatter([history["epoch"][best]], [history["score"][best]], s=120, facecolors="none",
                     edgecolors="red", label=f"best {history['score'][best]:.4f}")
    ax_score.set(xlabel="epoch", ylabel=metric, title=f"Validation {metric}")
    ax_score.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
