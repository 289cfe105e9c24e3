"""Every `kt …` line of README.md and docs/*.md parses against the CLI (commands, flags, choices),
and the README's own workflow runs offline on synthetic data with a tiny model."""

import contextlib
import io

import click
import pytest

from tests.docs_commands import DOCS, block_commands, inline_commands, parse


def _commands():
    for path in DOCS:
        for kind, found in (("example", block_commands(path)), ("mention", inline_commands(path))):
            for line, argv in found:
                yield pytest.param(argv, kind == "mention", id=f"{path.name}: {line[:70]}")


def test_the_docs_hold_commands_to_check():
    examples = [c for p in DOCS for c in block_commands(p)]
    assert len(examples) >= 40 and len([c for p in DOCS for c in inline_commands(p)]) >= 60


@pytest.mark.parametrize("argv, mention", list(_commands()))
def test_every_documented_command_parses(argv, mention):
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            parse(argv, mention=mention)
        except click.UsageError as e:
            pytest.fail(f"kt {' '.join(argv)}: {e.format_message()}")


@pytest.mark.parametrize("argv", [["train", "aptos", "--sizee", "32"], ["predict", "aptos", "--tta", "flipp"],
                                  ["frobnicate"], ["study", "run", "aptos", "--workerz", "2"]])
def test_the_check_catches_what_a_doc_could_get_wrong(argv):
    with contextlib.redirect_stdout(io.StringIO()), pytest.raises(click.UsageError):
        parse(argv)


# --- the README's workflow, run -------------------------------------------------------------------
# What each README command becomes offline: a tiny network at 32 or 48 px on synthetic data in each
# competition's own layout, one short epoch, two folds. The sizes keep their order (512 → 48, 384 → 32)
# so "the 512 group" and "the 384 group" stay two different groups.
TINY = ["--arch", "test_resnet", "--no-pretrained", "--epochs", "1", "-j", "0", "-b", "16", "--set", "max_steps=1",
        "--no-progress"]
SIZES = {"512": "48", "384": "32"}
KAGGLE = {"download", "submit"}  # they talk to Kaggle: tests/test_kaggle*.py run them against the client


def _recipe_size(competition: str, argv: list[str]) -> str:
    import yaml

    from kaggle_transfer import recipes

    if "-c" not in argv:
        return "256"
    recipe = yaml.safe_load(recipes.resolve(competition, argv[argv.index("-c") + 1]).read_text())
    return str(recipe.get("size", 256))


def _offline(argv: list[str], made: dict, external: dict) -> list[str]:
    """The README's command with its placeholders filled from what the earlier commands made."""
    import re
    from pathlib import Path

    out = []
    for i, token in enumerate(argv):
        previous = argv[i - 1] if i else ""
        if previous == "--size":
            token = SIZES.get(token, "32")
        elif previous == "--arch":
            token = "test_resnet"
        elif previous == "--seeds" and argv[0] == "study":
            token = "2"  # an ablation's levels x 2 seeds: the pairing is exercised, not the statistics
        elif previous == "--archs":
            token = "test_resnet,test_efficientnet"
        elif token.endswith("=DIR"):
            token = f"{token[:-4]}={external[token[:-4]]}"
        elif m := re.fullmatch(r"runs/(\w+)/<([\w-]+)>", token):
            token = str(made[m.group(1), m.group(2)])
        elif m := re.fullmatch(r"runs/(\w+)/ensembles/<stamp>_(\w+)\.json", token):
            token = str(sorted(Path(f"runs/{m.group(1)}/ensembles").glob(f"*_{m.group(2)}.json"))[-1])
        elif m := re.fullmatch(r"submissions/(\w+)/<stamp>_<label>(/submission\.csv)?", token):
            token = str(sorted(Path(f"submissions/{m.group(1)}").iterdir())[-1]) + (m.group(2) or "")
        assert "<" not in token and "DIR" != token, f"no stand-in for {token!r}"
        out.append(token)
    command, extra = out[0], []
    if command == "train":
        extra = TINY + ([] if "--size" in argv else ["--size", SIZES.get(_recipe_size(out[1], argv), "32")])
        extra += ["--set", "folds=2"] if "--folds" in argv else []
    elif command in ("predict", "prepare", "export", "average"):
        extra = ["--no-progress"]
    elif command == "study" and out[1] in ("run", "ablate"):
        varied = {v.split("=", 1)[0] for k, v in zip(out, out[1:], strict=False) if k == "--vary"}
        sets = ["epochs=1", "max_steps=1", "workers=0", "size=32", "batch_size=16"]
        extra = ["--no-pretrained", "--no-progress"]
        for value in sets:  # a varied key is the ablation's to set
            extra += [] if value.split("=")[0] in varied else ["--set", value]
    return out + extra


@pytest.mark.slow
def test_the_readmes_commands_run_offline(tmp_path, monkeypatch):
    """Each command of the README's code blocks, in order, as a reader would type them (data under
    data/<name>/, runs/ and submissions/ where it says), with only sizes, the network and the epochs
    made tiny: each one exits 0 and the outputs the README points at exist."""
    import shutil
    from pathlib import Path

    from click.testing import CliRunner

    from kaggle_transfer.cli import main
    from kaggle_transfer.competitions import synthetic
    from tests.docs_commands import ROOT

    monkeypatch.chdir(tmp_path)
    for env in ("KT_RUNS", "KT_SUBMISSIONS", "KT_DATA", "KT_CACHE"):
        monkeypatch.delenv(env, raising=False)
    small = {"aptos": {"n_train": 60, "n_test": 12}, "hpa": {"n_train": 60, "n_test": 12},
             "siim_isic": {"n_train": 80, "n_test": 16}, "cassava": {"n_train": 60, "n_test": 12},
             "eurosat": {"n_train": 100}}
    for name, sizes in small.items():
        synthetic.make(name, Path("data") / name, image_size=48, **sizes)
    # external sources where the README says kt looks (data/<source>), and elsewhere for --external-dir
    external = {n: synthetic.make(n, tmp_path / "external" / n, n=24, image_size=48) for n in ("dr2015", "hpav18", "isic2019")}
    for name in ("dr2015", "hpav18"):  # -c top adds them; the README's commands name no folder
        shutil.copytree(external[name], Path("data") / name)
    made, ran, skipped = {}, [], []
    for line, argv in block_commands(ROOT / "README.md"):
        if argv[0] in KAGGLE:
            skipped.append(line)
            continue
        args = _offline(argv, made, external)
        before = {p for p in Path("runs").glob("*/*") if p.is_dir()} if Path("runs").is_dir() else set()
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, f"kt {' '.join(args)}\n{result.output}"
        ran.append(line)
        for new in sorted({p for p in Path("runs").glob("*/*") if p.is_dir()} - before):
            kind = "group" if (new / "group.json").is_file() else "run-id"
            made[new.parent.name, kind] = new
            if argv[0] == "train":
                intended = argv[argv.index("--size") + 1] if "--size" in argv else _recipe_size(argv[1], argv)
                made[new.parent.name, f"{kind}-{intended}"] = new
    assert len(ran) >= 20 and all(line.split()[1] in KAGGLE for line in skipped)
    assert list(Path("submissions/aptos").glob("*/submission.csv")) and list(Path("runs/aptos/ensembles").glob("*"))
    assert (made["aptos", "group-512"] / "plots" / "report.md").is_file()
    assert list(Path("runs/eurosat").glob("study-report/study.md"))
