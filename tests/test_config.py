import pytest

from kaggle_transfer import config
from kaggle_transfer.errors import KtError


def test_precedence_defaults_recipe_flags_set(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("arch: resnet34\nsize: 384\nlr: 0.001\npool: gem\n")
    cfg = config.resolve(recipe, {"size": 512, "arch": None}, ["lr=5e-4", "ema=true", "external=dr2015,idrid"])
    assert cfg.arch == "resnet34"          # recipe over default; a flag left at None does not override
    assert cfg.size == 512                 # flag over recipe
    assert cfg.lr == 5e-4                  # --set over recipe
    assert cfg.pool == "gem" and cfg.ema is True and cfg.external == ["dr2015", "idrid"]
    assert cfg.epochs == config.RunConfig().epochs  # default kept


def test_unknown_key_lists_valid_keys_and_suggests(tmp_path):
    with pytest.raises(KtError, match=r"unknown config key 'szie'.*did you mean size.*valid keys: competition"):
        config.resolve(sets=["szie=3"])
    recipe = tmp_path / "r.yaml"
    recipe.write_text("archh: resnet\n")
    with pytest.raises(KtError, match=r"in recipe .*r\.yaml"):
        config.resolve(recipe)


@pytest.mark.parametrize("item, message", [
    ("size=big", "wants int"),
    ("size=3.5", "wants int"),
    ("ema=maybe", "wants bool"),
    ("pool=max", "choose one of: avg, gem"),
    ("epochs=0", r"epochs=0 is outside \[1, 100000\]"),
    ("size", "key=value"),
    ("weights=", None),
])
def test_set_values_are_type_checked(item, message):
    if message is None:
        assert config.resolve(sets=[item]).weights is None  # Optional fields accept empty
        return
    with pytest.raises(KtError, match=message):
        config.resolve(sets=[item])


def test_bad_recipe_files(tmp_path):
    with pytest.raises(KtError, match="not found"):
        config.resolve(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("arch: [unclosed\n")
    with pytest.raises(KtError, match="not valid YAML"):
        config.resolve(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(KtError, match="mapping"):
        config.resolve(listy)


def test_save_load_round_trip(tmp_path):
    cfg = config.resolve(sets=["arch=test_vit", "external=dr2015", "weights=/w.pt", "lr=0.02"])
    config.save(cfg, tmp_path / "config.yaml")
    assert config.load(tmp_path / "config.yaml") == cfg


def test_every_field_has_a_section_a_meaning_and_roles():
    import dataclasses

    from kaggle_transfer.config import SECTIONS, RunConfig, keys_with, list_keys

    fields = dataclasses.fields(RunConfig)
    assert all(f.metadata["section"] in SECTIONS and f.metadata["doc"] for f in fields)
    listed = [line.split()[0] for line in list_keys().splitlines() if line.startswith("  ")]
    assert sorted(listed) == sorted(f.name for f in fields)  # each key once, under its section
    # what kt average must agree on and what kt runs leaves out of its differences come from the roles
    from kaggle_transfer.training.averaging import SAME

    assert SAME == keys_with("same") and {"arch", "size", "fold", "split"} <= set(SAME)
    assert "lr" not in SAME and "seed" not in keys_with("diff") and "lr" in keys_with("diff")


def test_kt_train_list_keys_prints_the_sections_and_exits():
    from click.testing import CliRunner

    from kaggle_transfer.cli import main

    out = CliRunner().invoke(main, ["train", "--list-keys"])
    assert out.exit_code == 0
    assert [line for line in out.output.splitlines() if not line.startswith(" ")] == [
        "data:", "model:", "optimisation:", "augmentation:", "interventions:", "evaluation:", "runtime:"]
    assert "swa_epochs" in out.output and "resnet50" in out.output
