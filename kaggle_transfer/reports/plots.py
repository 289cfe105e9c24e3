"""The PNGs people would rather look at than read: one matplotlib setup (Agg, no display; atomic
writes) for the plots of a run, a group, an ensemble and a study."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import metrics
from ..files import atomic_path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, dpi: int = 100) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    _plt().close(fig)
    return path


def confusion(y: np.ndarray, pred: np.ndarray, names: list[str], path: Path) -> Path:
    """The OOF confusion matrix in counts, beside it row-normalised (each true class sums to 1: the
    recall on the diagonal), so a rare class's errors show as plainly as a common one's."""
    from sklearn.metrics import confusion_matrix

    plt = _plt()
    labels = range(len(names))
    side = 1 + 0.6 * len(names)
    fig, axes = plt.subplots(1, 2, figsize=(2 * side, side * 0.85), layout="constrained")
    for ax, normalize, title in (
        (axes[0], None, "Confusion matrix (OOF counts)"),
        (axes[1], "true", "Each true class = 1 (recall on the diagonal)"),
    ):
        m = confusion_matrix(y, pred, labels=labels, normalize=normalize)
        ax.imshow(m, cmap="Blues", vmin=0, vmax=m.max() or 1)
        for (i, j), v in np.ndenumerate(m):
            text = f"{v:.2f}" if normalize else str(v)
            dark = v > (m.max() or 1) / 2
            ax.text(
                j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black"
            )
        ax.set(xticks=labels, yticks=labels, xlabel="predicted", ylabel="true", title=title)
        ax.set_xticklabels(names, rotation=45, ha="right")
        ax.set_yticklabels(names)
    return _save(fig, path)


def cut_shift(raw: np.ndarray, y: np.ndarray, cuts: list[float], path: Path) -> Path:
    """QWK as every cut point moves by the same offset: how sharp the fitted optimum is."""
    plt = _plt()
    offsets = np.linspace(-1, 1, 81)
    fitted = [metrics.qwk(y, metrics.apply_cutpoints(raw, np.asarray(cuts) + o)) for o in offsets]
    rounding = metrics.qwk(y, metrics.apply_cutpoints(raw, np.arange(len(cuts)) + 0.5))
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(offsets, fitted, label="fitted cut points + offset")
    ax.axhline(rounding, color="grey", linestyle="--", label=f"plain rounding {rounding:.4f}")
    ax.set(xlabel="offset added to every cut point", ylabel="QWK", title="QWK vs cut points (OOF)")
    ax.legend()
    return _save(fig, path)


def per_class_f1(
    prob: np.ndarray, y: np.ndarray, thresholds: list[float], names: list[str], *, path: Path
) -> Path:
    """F1 and threshold per class. A class with no positive among the validation rows has neither
    an F1 nor a fitted threshold (it keeps 0.5): it is drawn as a grey hatched slot, not a 0 bar."""
    from sklearn.metrics import f1_score

    plt = _plt()
    f1 = f1_score(y, prob >= np.asarray(thresholds), average=None, zero_division=0)
    present = np.asarray(y).sum(axis=0) > 0
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(names)), 4), layout="constrained")
    x = np.arange(len(names))
    ax.bar(x[present], f1[present], label="F1")
    ax.plot(x[present], np.asarray(thresholds)[present], "r.", label="fitted threshold")
    if not present.all():
        ax.bar(
            x[~present],
            np.ones((~present).sum()),
            color="0.9",
            hatch="//",
            edgecolor="0.6",
            label="no validation positive: no F1, threshold 0.5",
        )
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=90)
    for label, shown in zip(ax.get_xticklabels(), present, strict=True):
        label.set_color("black" if shown else "0.55")
    ax.set(
        ylim=(0, 1.3),
        yticks=np.linspace(0, 1, 6),
        title=f"Per-class F1 (macro {f1.mean():.4f} over all {len(names)} classes)",
    )
    ax.legend(loc="upper left", ncols=3, fontsize=8)
    return _save(fig, path)


def roc(prob: np.ndarray, y: np.ndarray, path: Path) -> Path:
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _plt()
    fpr, tpr, _ = roc_curve(y, prob)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(fpr, tpr, label=f"AUC {roc_auc_score(y, prob):.4f}")
    ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (OOF)")
    ax.legend()
    return _save(fig, path)


def ablation(table: pd.DataFrame, *, metric: str, title: str, path: Path) -> Path:
    """kt study ablate: each level's mean with its 95 % interval (left) and its paired difference to
    the baseline with that interval (right; the dashed line is no difference)."""
    plt = _plt()
    rows = len(table)
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(10, 1.2 + 0.45 * rows), sharey=True, gridspec_kw={"width_ratios": [1, 1]}
    )
    y = np.arange(rows)[::-1]
    mean = table["mean"].to_numpy(float)
    low, high = table["ci_low"].to_numpy(float), table["ci_high"].to_numpy(float)
    err = np.nan_to_num(np.vstack([mean - low, high - mean]))
    left.errorbar(mean, y, xerr=err, fmt="o", capsize=3)
    left.set(xlabel=f"{metric}: mean, 95% CI", yticks=y)
    left.set_yticklabels([textwrap.shorten(str(v), 48) for v in table["level"]], fontsize=8)
    compared = ~table["baseline"].to_numpy(bool)
    if compared.any():
        part = table[compared]
        diff = part["diff"].to_numpy(float)
        d_err = np.nan_to_num(np.vstack([diff - part["diff_low"], part["diff_high"] - diff]))
        right.errorbar(diff, y[compared], xerr=d_err, fmt="o", color="C1", capsize=3)
    for k in np.flatnonzero(~compared):
        right.annotate("baseline", (0, y[k]), ha="center", va="center", fontsize=8, color="grey")
    right.axvline(0, color="grey", linestyle="--", linewidth=1)
    right.set(xlabel="paired difference to the baseline, 95% CI")
    fig.suptitle(textwrap.fill(title, 100), fontsize=10)
    return _save(fig, path, dpi=110)


def budget_frontier(table: pd.DataFrame, record: dict[str, Any], path: Path) -> Path:
    """kt ensemble --budget: every blend's predicted hours against its OOF score, the frontier (no
    cheaper blend scores as well) joined, the budget as a line and the chosen blend marked."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter(table["hours"], table["score"], s=12, color="0.7", label="every blend")
    front = table[table["pareto"]] if "pareto" in table else table
    ax.plot(front["hours"], front["score"], "o-", color="C0", label="frontier")
    ax.axvline(record["budget_s"] / 3600, color="C3", linestyle="--", label="budget")
    pick = table[table["members"] == record.get("chosen")]
    if len(pick):
        ax.scatter(
            pick["hours"],
            pick["score"],
            s=90,
            facecolors="none",
            edgecolors="C3",
            zorder=3,
            label=textwrap.shorten(f"chosen: {record.get('chosen')}", 60),
        )
    ax.set_xscale("log")  # blends seconds apart and a budget of hours on one axis
    where = "this machine" if record["target"] == "here" else record["target"]
    ax.set(
        xlabel=f"predicted hours for {record['test_images']:,} images on {where} (log scale)",
        ylabel="OOF score (equal weights)",
    )
    ax.legend(fontsize=7, loc="lower right")
    fig.text(0.01, -0.02, textwrap.fill(record["note"], 120), fontsize=6, va="top")
    return _save(fig, path, dpi=110)


def ensemble_weights(spec: dict[str, Any], path: Path) -> Path:
    """Members' weights beside their OOF scores and the blend's, one row per member sharing the
    labels of the left panel (constrained layout leaves them room: no label runs into a panel)."""
    plt = _plt()
    members = spec["members"]
    labels = [Path(m["run"]).name for m in members] + ["blend"]
    scores = [m["oof_score"] for m in members] + [spec["oof_score"]]
    rows = np.arange(len(labels))[::-1]  # the first member on top, the blend at the bottom
    fig, (a, b) = plt.subplots(
        1, 2, figsize=(10, 0.4 * len(labels) + 1.5), sharey=True, layout="constrained"
    )
    a.barh(rows[:-1], [m["weight"] for m in members])
    fig.get_layout_engine().set(wspace=0.12)  # the panels' end tick labels kept apart
    a.set(
        title=f"weights ({spec['method']})",
        xlim=(0, 1.08),
        xticks=[0, 0.5, 1],
        yticks=rows,
        yticklabels=labels,
    )
    b.barh(rows, scores, color=["tab:blue"] * len(members) + ["tab:green"])
    low, high = min(scores), max(scores)
    pad = max(high - low, 1e-3) * 0.5
    b.set(title=f"OOF {spec['metric']} (gain {spec['gain']:+.4f})", xlim=(low - pad, high + pad))
    b.xaxis.set_major_locator(_plt().MaxNLocator(4))
    return _save(fig, path)


def image_grid(pictures: list[np.ndarray], captions: list[str], path: Path, cols: int = 4) -> Path:
    """Images (HWC uint8, 1 or 3 channels) in a grid, each above its caption (each caption line
    wrapped to its tile's width: a multilabel row's classes make long lines)."""
    plt = _plt()
    cols = max(1, min(cols, len(pictures)))  # a gallery of one image is one tile wide
    rows = max(1, -(-len(pictures) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 3.0 * rows), layout="constrained")
    for ax in np.asarray(axes).reshape(-1):
        ax.axis("off")
    for ax, img, caption in zip(np.asarray(axes).reshape(-1), pictures, captions, strict=False):
        ax.imshow(
            img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None
        )
        lines = [part for line in caption.split("\n") for part in textwrap.wrap(line, 38) or [""]]
        ax.set_title("\n".join(lines), fontsize=7)
    return _save(fig, path)


def learning_curve(history: pd.DataFrame, metric: str, path: Path) -> Path:
    plt = _plt()
    fig, (ax_loss, ax_score) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(history["epoch"], history["train_loss"], marker="o", label="train")
    ax_loss.plot(history["epoch"], history["val_loss"], marker="o", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax_loss.legend()
    ax_score.plot(history["epoch"], history["score"], marker="o", color="tab:green")
    best = history["score"].idxmax()
    ax_score.scatter(
        [history["epoch"][best]],
        [history["score"][best]],
        s=120,
        facecolors="none",
        edgecolors="red",
        label=f"best {history['score'][best]:.4f}",
    )
    ax_score.set(xlabel="epoch", ylabel=metric, title=f"Validation {metric}")
    ax_score.legend()
    fig.tight_layout()
    return _save(fig, path)


def lr_curve(curve: pd.DataFrame, found: dict[str, Any], path: Path) -> Path:
    """The range test: loss against the learning rate (log axis), raw and smoothed, with the two
    suggested rates marked and the one kt chose named."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    ax.plot(curve["lr"], curve["loss"], color="0.75", lw=0.8, label="loss")
    ax.plot(curve["lr"], curve["smoothed"], color="tab:blue", label="smoothed")
    for key, color, name in (
        ("steep", "tab:orange", "steepest descent"),
        ("minimum_over_10", "tab:green", "minimum / 10"),
    ):
        chosen = " (chosen)" if found.get("rule") == key else ""
        ax.axvline(found[key], color=color, ls="--", label=f"{name} {found[key]:.1e}{chosen}")
    ax.scatter(
        [found["minimum"]],
        [curve["smoothed"].min()],
        color="tab:red",
        zorder=3,
        label=f"minimum {found['minimum']:.1e}",
    )
    low, high = curve["smoothed"].min(), curve["smoothed"].iloc[: max(len(curve) // 10, 1)].max()
    ax.set_ylim(low - 0.1 * abs(high - low), max(high, low) + 0.6 * abs(high - low) + 1e-9)
    ax.set(
        xscale="log",
        xlabel="learning rate",
        ylabel="training loss",
        title=f"Learning-rate range test: {found['arch']} @ {found['size']} px, "
        f"{found['optimizer']}, batch {found['batch_size']}",
    )
    ax.legend(fontsize=8)
    return _save(fig, path)


def transfer_scatter(
    known: pd.DataFrame, *, ylabel: str, title: str, footnote: str, path: Path
) -> Path:
    """A study's models: ImageNet top-1 against the reported task score, with the least-squares line."""
    plt = _plt()
    x, y = known["imagenet_top1"].to_numpy(float), known["reported"].to_numpy(float)
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.scatter(x, y)
    for _, row in known.iterrows():
        ax.annotate(
            row["arch"].split(".")[0],
            (row["imagenet_top1"], row["reported"]),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
        )
    if len(x) >= 2 and x.max() > x.min():
        a, b = np.polyfit(x, y, 1)
        xs = np.linspace(x.min(), x.max(), 50)
        ax.plot(xs, a * xs + b, "r--", linewidth=1)
    ax.set(xlabel="ImageNet top-1 (%)", ylabel=ylabel)
    ax.set_title(textwrap.fill(title, 90), fontsize=10)
    # wrapped to the axes' width: a footnote on one line widened the saved figure (bbox "tight")
    fig.text(0.01, -0.01, textwrap.fill(footnote, 140), fontsize=6, va="top")
    return _save(fig, path, dpi=110)
