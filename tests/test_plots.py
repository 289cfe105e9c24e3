"""Plot layouts: no text runs into another panel or another text (matplotlib's own layout boxes,
`get_window_extent`), the PNGs keep a sane size, and what a plot cannot show is drawn as such."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.text import Text
from PIL import Image

from kaggle_transfer.reports import plots
from kaggle_transfer.study.stats import SLOPE_DEFINITION


def _collisions(fig) -> list[str]:
    """Pairs that overlap: a text and a panel it does not belong to, or two texts."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    boxes = [(t, t.get_window_extent(renderer).shrunk(0.98, 0.9)) for t in texts]
    found = []
    for ax in fig.axes:
        panel = ax.get_window_extent(renderer)
        for t, box in boxes:
            owner = t.axes
            if owner is not None and owner is not ax and box.overlaps(panel):
                found.append(f"{t.get_text()!r} runs into the panel {ax.get_title()!r}")
    for i, (a, box_a) in enumerate(boxes):
        for b, box_b in boxes[i + 1:]:
            if box_a.overlaps(box_b):
                found.append(f"{a.get_text()!r} overlaps {b.get_text()!r}")
    return found


@pytest.fixture
def checked(monkeypatch):
    """Every figure saved through plots._save is checked for collisions before it is written."""
    seen = []
    real = plots._save

    def save(fig, path, dpi=100):
        seen.append(_collisions(fig))
        return real(fig, path, dpi)

    monkeypatch.setattr(plots, "_save", save)
    return seen


def test_ensemble_png_keeps_long_run_names_out_of_the_scores_panel(checked, tmp_path):
    names = [f"20261202-0045{i:02d}_tf_efficientnet_b4.ns_jft_in1k_512_heavy_gem_l1" for i in range(6)]
    spec = {"method": "greedy", "metric": "qwk", "oof_score": 0.912, "gain": 0.011,
            "members": [{"run": f"/runs/aptos/{n}", "weight": w, "oof_score": s}
                        for n, w, s in zip(names, [0.4, 0.2, 0.2, 0.1, 0.1, 0.0],
                                           [0.901, 0.897, 0.893, 0.889, 0.88, 0.87], strict=True)]}
    path = plots.ensemble_weights(spec, tmp_path / "ensemble.png")
    assert checked == [[]]
    width, height = Image.open(path).size
    assert width <= 1100 and height <= 600


def test_study_png_is_as_wide_as_its_figure_whatever_the_footnote(checked, tmp_path):
    known = pd.DataFrame({"arch": [f"model_{i}.tag" for i in range(8)],
                          "imagenet_top1": np.linspace(70, 85, 8), "reported": np.linspace(0.8, 0.9, 8)})
    title = "aptos: Pearson 0.99, Spearman 1.00, slope 0.67 [0.60, 0.70] (top-1 >= 70%)"
    path = plots.transfer_scatter(known, ylabel="aptos qwk", title=title, footnote=SLOPE_DEFINITION,
                                  path=tmp_path / "study.png")
    width, _ = Image.open(path).size
    assert width <= 7 * 110 + 60  # the figure's 7 inches at 110 dpi, not 1673 px of one footnote line
    assert checked == [[]]


def test_a_study_without_imagenet_top1_draws_no_empty_plot(tmp_path):
    from kaggle_transfer.study.report import figure, summary_line

    table = pd.DataFrame({"arch": ["a", "b"], "imagenet_top1": [np.nan, np.nan], "reported": [0.8, 0.9],
                          "metric": ["qwk", "qwk"]})
    (tmp_path / "study.png").write_bytes(b"an older report's plot")
    stats = figure(table, "aptos", tmp_path / "study.png")
    assert not (tmp_path / "study.png").exists()
    assert summary_line(stats).startswith("no correlation: 0 model(s) with an ImageNet top-1")
    assert "nan" not in summary_line(stats)


def test_per_class_plot_marks_classes_without_a_validation_positive(checked, tmp_path):
    rng = np.random.default_rng(0)
    y = (rng.random((60, 28)) < 0.3).astype(int)
    y[:, [8, 9, 27]] = 0  # HPA's rare classes: no positive in this fold
    prob = np.clip(y * 0.6 + rng.random(y.shape) * 0.5, 0, 1)
    captured = {}
    real = plots._save

    def keep(fig, path, dpi=100):
        ax = fig.axes[0]
        captured["hatched"] = [p.get_x() + p.get_width() / 2 for p in ax.patches if p.get_hatch()]
        captured["plain"] = len([p for p in ax.patches if not p.get_hatch()])
        captured["legend"] = [t.get_text() for t in ax.get_legend().get_texts()]
        captured["grey"] = [t.get_text() for t in ax.get_xticklabels() if t.get_color() != "black"]
        return real(fig, path, dpi)

    plots._save, saved = keep, plots._save
    try:
        plots.per_class_f1(prob, y, [0.5] * 28, [f"class{i}" for i in range(28)], path=tmp_path / "pc.png")
    finally:
        plots._save = saved
    assert captured["hatched"] == pytest.approx([8, 9, 27]) and captured["plain"] == 25
    assert captured["grey"] == ["class8", "class9", "class27"]
    assert any("no validation positive" in t for t in captured["legend"])


def test_the_top_losses_gallery_lists_the_highest_loss_rows_computed_by_hand(trained_run, tmp_path):
    """kt report's gallery: exactly the out-of-fold ids with the highest loss, worked out here from
    oof.npz alone (APTOS regression: |output - grade|), highest first, drawn beside a row-normalised
    confusion matrix; a run whose images moved reports that instead of failing."""
    import json
    import shutil

    from kaggle_transfer.reports.run import report

    oof = np.load(trained_run / "oof.npz")
    loss = np.abs(oof["raw"].reshape(-1) - oof["targets"])
    expected = [str(oof["ids"][i]) for i in np.argsort(-loss, kind="stable")[:16]]
    result = report(trained_run, tmp_path / "r")
    assert (tmp_path / "r" / "top_losses.png").is_file()
    text = (tmp_path / "r" / "report.md").read_text()
    table = text.split("highest loss", 1)[1]
    assert [line.split(" | ")[0].strip("| ") for line in table.splitlines() if line.startswith("| ")
            and not line.startswith(("| id", "|---"))] == expected
    width, height = Image.open(tmp_path / "r" / "confusion.png").size
    assert width > 1.6 * height  # counts and the row-normalised matrix side by side
    assert any(p.endswith("top_losses.png") for p in result["pngs"])
    moved = Path(shutil.copytree(trained_run, tmp_path / "moved"))
    info = json.loads((moved / "run.json").read_text())
    (moved / "run.json").write_text(json.dumps({**info, "data_dir": str(tmp_path / "gone")}))
    report(moved, tmp_path / "m")
    assert "No top-losses gallery" in (tmp_path / "m" / "report.md").read_text()


def test_per_class_galleries_list_each_true_class_highest_loss_rows(trained_run, tmp_path):
    """kt report --per-class: for each grade, the rows whose true grade it is, highest loss first,
    computed by hand from oof.npz; a grade no validation row has says so."""
    from click.testing import CliRunner

    from kaggle_transfer.cli import main
    from kaggle_transfer.competitions import APTOS

    out = CliRunner().invoke(main, ["report", str(trained_run), "-o", str(tmp_path / "r"), "--per-class"])
    assert out.exit_code == 0, out.output
    oof = np.load(trained_run / "oof.npz")
    loss = np.abs(oof["raw"].reshape(-1) - oof["targets"])
    text = (tmp_path / "r" / "report.md").read_text()
    for k, name in enumerate(APTOS.class_names):
        rows = np.flatnonzero(oof["targets"] == k)
        section = text.split(f"## True class {name}", 1)[1].split("## ", 1)[0]
        if len(rows) == 0:
            assert "no out-of-fold row" in section
            continue
        expected = [str(oof["ids"][i]) for i in rows[np.argsort(-loss[rows], kind="stable")][:16]]
        listed = [line.split(" | ")[0].strip("| ") for line in section.splitlines()
                  if line.startswith("| ") and not line.startswith(("| id", "|---"))]
        assert listed == expected, name
        assert list((tmp_path / "r").glob(f"top_losses_*{name.split()[0]}*.png"))


def test_row_losses_for_classes_are_the_cross_entropy_of_the_label():
    from kaggle_transfer.reports.losses import row_losses
    from kaggle_transfer.tasks import Task

    raw = np.array([[2.0, 0.0, -1.0], [0.0, 3.0, 0.0]])
    p = np.exp(raw) / np.exp(raw).sum(axis=1, keepdims=True)
    assert row_losses(Task("multiclass", 3, "accuracy"), raw, np.array([2, 1])) == pytest.approx(
        [-np.log(p[0, 2]), -np.log(p[1, 1])])
    prob = 1 / (1 + np.exp(-np.array([1.0, -2.0])))
    assert row_losses(Task("binary", 2, "roc_auc"), np.array([1.0, -2.0]), np.array([0, 0])) == pytest.approx(
        -np.log(1 - prob))


def test_a_gallery_of_long_multilabel_captions_keeps_each_caption_over_its_own_tile(checked, tmp_path):
    """HPA's rows carry several long class names: each caption wraps to its tile instead of running
    into the next one; a gallery of one image is one tile wide."""
    names = "Nucleoplasm, Nuclear membrane, Nucleoli fibrillar center, Endoplasmic reticulum"
    pictures = [np.full((32, 32, 3), 80 * i, dtype=np.uint8) for i in range(3)]
    captions = [f"{i:012d}abcdef\n{names} → {names}\nloss 3.21{i}" for i in range(3)]
    plots.image_grid(pictures, captions, tmp_path / "g.png")
    assert checked == [[]], checked
    width, _ = Image.open(tmp_path / "g.png").size
    plots.image_grid(pictures[:1], captions[:1], tmp_path / "one.png")
    assert Image.open(tmp_path / "one.png").size[0] < width / 2
