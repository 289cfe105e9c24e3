"""The shipped recipes: every key valid, the paper and top recipes both train, and `-c NAME` finds them
from any folder."""

from pathlib import Path

import pytest

from kaggle_transfer import config
from kaggle_transfer.competitions import COMPETITIONS, synthetic
from kaggle_transfer.training.loop import fit

ROOT = Path(__file__).resolve().parents[1] / "kaggle_transfer" / "recipes"
RECIPES = sorted(p for p in ROOT.glob("*/*.yaml") if not p.name.startswith("_"))  # _next.yaml: kt next's
# what makes a recipe CPU-sized for a test; everything else is the recipe's own
TINY = ["arch=test_resnet", "pretrained=false", "size=32", "epochs=1", "batch_size=16", "workers=0", "max_steps=2",
        "warmup_epochs=0"]


def test_every_competition_has_paper_and_top():
    assert {p.parent.name for p in RECIPES} == set(COMPETITIONS)
    for name in COMPETITIONS:
        assert (ROOT / name / "paper.yaml").is_file() and (ROOT / name / "top.yaml").is_file()
        assert (ROOT / name / "README.md").is_file()


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recipe_resolves(recipe):
    cfg = config.resolve(recipe, {"competition": recipe.parent.name})
    comp = COMPETITIONS[recipe.parent.name]
    assert set(cfg.external) <= set(comp.external)
    comp.task.check_loss(cfg.loss or comp.task.default_loss)
    comp.select_channels(cfg.channels)
    # every line of a recipe carries its reason
    for line in recipe.read_text().splitlines():
        if line and not line.startswith("#") and ":" in line and line.split(":")[0] not in ("epochs", "batch_size"):
            assert "#" in line or line.split(":")[0] in ("optimizer", "schedule", "lr", "weight_decay",
                                                          "warmup_epochs", "loss", "pretrained"), line


@pytest.mark.parametrize("recipe", ["paper", "top"])
def test_aptos_recipes_train(aptos_dir, tmp_path, recipe):
    dr = synthetic.make("dr2015", tmp_path / "dr", n=16, image_size=32)
    cfg = config.resolve(ROOT / "aptos" / f"{recipe}.yaml", {"competition": "aptos"}, TINY)
    result = fit(cfg, tmp_path / "run", aptos_dir, external_dirs={"dr2015": str(dr)}, progress=False)
    assert result["epochs_run"] == 1
    if recipe == "top":
        assert result["n_external"] == 16 and result["loss"] == "smooth_l1"
    # the recipe's tta reaches prediction without repeating --tta: top.yaml says flip, paper.yaml nothing
    from kaggle_transfer.training.export import export
    from tests.helpers import predict

    onnx = export(tmp_path / "run")["path"]
    manifest = predict("aptos", [onnx], aptos_dir, out_root=tmp_path / "subs", progress=False)
    assert manifest["tta"] == ("flip" if recipe == "top" else "none")
    explicit = predict("aptos", [onnx], aptos_dir, out_root=tmp_path / "subs", label="d4", tta="d4",
                                  progress=False)
    assert explicit["tta"] == "d4"  # the flag wins


@pytest.mark.parametrize("recipe", sorted(ROOT.glob("*/paper.yaml")), ids=lambda p: p.parent.name)
def test_every_paper_recipe_is_a_point_of_the_study_grid(recipe):
    """paper.yaml is one point of the released grid: AdamW's decay is the grid value divided by the lr."""
    from kaggle_transfer.study.grid import GRIDS

    grid = GRIDS["paper"]
    cfg = config.resolve(recipe, {"competition": recipe.parent.name})
    assert cfg.optimizer in grid["optimizer"] and cfg.lr in grid["lr"][cfg.optimizer]
    raw_decay = cfg.weight_decay * cfg.lr if cfg.optimizer == "adamw" else cfg.weight_decay
    assert any(abs(raw_decay - wd) < 1e-12 for wd in grid["weight_decay"]), raw_decay
    assert cfg.schedule in grid["schedule"] and cfg.epochs == grid["run"]["epochs"]
    assert cfg.batch_size == grid["run"]["batch_size"]
    assert cfg.size == (224 if recipe.parent.name == "eurosat" else 256)  # the study's EuroSAT: 224
    # the study's protocol and what it implies for this dataset, as `kt study --grid paper` runs it
    from kaggle_transfer import competitions
    from kaggle_transfer.study.grid import trial_flags

    comp = competitions.get(recipe.parent.name)
    point = {"arch": cfg.arch, "optimizer": cfg.optimizer, "lr_index": grid["lr"][cfg.optimizer].index(cfg.lr),
             "weight_decay": min(grid["weight_decay"], key=lambda wd: abs(wd - raw_decay)), "schedule": cfg.schedule}
    study = config.resolve(flags=trial_flags(grid, point, comp))
    assert (cfg.split or comp.default_split) == (study.split or comp.default_split)
    for key in ("protocol", "loss", "size", "per_annotation", "augment", "weight_decay", "lr"):
        assert getattr(cfg, key) == pytest.approx(getattr(study, key)) if key in ("weight_decay", "lr") \
            else getattr(cfg, key) == getattr(study, key), key


def test_a_recipe_is_found_by_name_from_any_folder(aptos_dir, tmp_path, monkeypatch):
    """`-c top` resolves to the recipe kt ships for the competition (package data), wherever kt runs;
    an unknown name lists the shipped ones; a path still works."""
    from kaggle_transfer.errors import KtError
    from kaggle_transfer.training.plan import TrainRequest, new_run

    monkeypatch.chdir(tmp_path)  # not the checkout
    monkeypatch.delenv("KT_DATA", raising=False)
    (tmp_path / "data" / "dr2015").mkdir(parents=True)  # top adds dr2015: found beside the data
    flags = {"arch": "test_resnet", "pretrained": False}
    plan = new_run(TrainRequest("aptos", recipe="top", data_dir=str(aptos_dir), runs_root=str(tmp_path),
                                flags=flags))
    assert plan.cfg.size == 512 and plan.cfg.pool == "gem" and plan.cfg.arch == "test_resnet"
    with pytest.raises(KtError, match=r"-c tpo: no recipe of that name for aptos \(paper, top\)"):
        new_run(TrainRequest("aptos", recipe="tpo", data_dir=str(aptos_dir), runs_root=str(tmp_path)))
    (tmp_path / "mine.yaml").write_text("size: 40\n")
    plan = new_run(TrainRequest("aptos", recipe="mine.yaml", data_dir=str(aptos_dir),
                                runs_root=str(tmp_path / "r2"), flags=flags))
    assert plan.cfg.size == 40


def test_recipes_ship_in_the_wheel(tmp_path):
    """A pip-installed kt has them: the wheel carries every recipe and its README."""
    import subprocess
    import sys
    import zipfile

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                          "-w", str(tmp_path), str(root)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    names = zipfile.ZipFile(next(tmp_path.glob("*.whl"))).namelist()
    shipped = {f"kaggle_transfer/recipes/{p.parent.name}/{p.name}" for p in RECIPES}
    assert shipped <= set(names)
    assert {f"kaggle_transfer/recipes/{c}/README.md" for c in COMPETITIONS} <= set(names)
