"""kt next: the evidence files ship valid and their commands parse; after a baseline it suggests an
intervention with a command that runs, and once that command ran it no longer suggests it."""

import shlex

import click
import pytest
from click.testing import CliRunner

from kaggle_transfer import recipes
from kaggle_transfer.cli import main
from kaggle_transfer.competitions import COMPETITIONS
from kaggle_transfer.errors import KtError
from kaggle_transfer.reports.next import advise, evidence
from tests.docs_commands import parse

BUILT_IN = sorted(n for n in COMPETITIONS if n != "custom")


@pytest.mark.parametrize("name", BUILT_IN)
def test_each_competition_ships_evidence_whose_flags_parse(name):
    found = evidence(name)
    assert len(found) >= 4 and all(i.source and i.why for i in found)
    for i in found:
        argv = shlex.split(i.command)[1:] if i.command else ["train", name, *shlex.split(i.flags)]
        try:
            parse(argv)
        except click.UsageError as e:
            pytest.fail(f"{name}: {i.name}: kt {' '.join(argv)}: {e.format_message()}")
    assert "_next" not in recipes.available(name)  # not offered as a recipe


@pytest.mark.parametrize("text, message", [
    ("- {name: a, when: {sizee: 512}, try: --size 512, why: w, source: s}", "'sizee' is not a config key"),
    ("- {name: a, when: {size: 512}, try: --size 512, command: kt x, why: w, source: s}", "one of try"),
    ("- {name: a, when: {size: {above: 3}}, try: --size 512, why: w, source: s}", "only comparison is at_least"),
    ("- {name: a, when: {run: stack}, try: --folds all, why: w, source: s}", "run must be one of"),
    ("name: a", "expected a list"),
])
def test_a_broken_evidence_file_is_one_line_naming_it(tmp_path, text, message):
    path = tmp_path / "_next.yaml"
    path.write_text(text)
    with pytest.raises(KtError, match=message) as e:
        evidence("aptos", path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


TINY = ["--arch", "test_resnet", "--no-pretrained", "--size", "32", "--epochs", "1", "-j", "0", "-b", "16",
        "--set", "max_steps=1", "--no-progress"]


@pytest.mark.slow
def test_after_a_baseline_it_suggests_an_intervention_until_that_is_run(aptos_dir, tmp_path):
    runner, root = CliRunner(), ["--runs-root", str(tmp_path)]
    baseline = runner.invoke(main, ["train", "aptos", "--data-dir", str(aptos_dir), *TINY, *root])
    assert baseline.exit_code == 0, baseline.output
    last = baseline.output.strip().splitlines()[-1]
    assert last.startswith("try next (512 px inputs): kt train aptos --arch test_resnet")

    first = advise("aptos", tmp_path)[0][0]
    assert first.intervention.name == "512 px inputs" and not first.tried
    shown = runner.invoke(main, ["next", "aptos", *root])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    command = lines[lines.index(next(line for line in lines if line.startswith("  1. 512 px"))) + 1].strip()
    assert "--size 512" in command and "--arch test_resnet" in command and "--no-pretrained" in command
    assert f"--runs-root {tmp_path}" in command  # the runs are not in the default root: it says where

    # the user runs the suggested command as printed (only pointed at the data)
    argv = shlex.split(command)[1:] + ["--data-dir", str(aptos_dir), "--no-progress"]
    tried = runner.invoke(main, argv)
    assert tried.exit_code == 0, tried.output

    after, skipped = advise("aptos", tmp_path)
    assert skipped == []
    assert "512 px inputs" not in [a.intervention.name for a in after if not a.tried]
    [size] = [a for a in after if a.intervention.name == "512 px inputs"]
    assert size.tried and size.effect is not None  # measured: the 512 px run against the baseline
    again = runner.invoke(main, ["next", "aptos", *root])
    assert "  - 512 px inputs: " in again.output and "1. 512 px" not in again.output
    assert "1. external data (dr2015)" in again.output

    # a damaged run folder is skipped with a line naming it; the others still count
    broken = tmp_path / "aptos" / "20990101-000000_broken"
    broken.mkdir()
    (broken / "config.yaml").write_text("arch: [unclosed")
    (broken / "metrics.json").write_text('{"score": 0.5}')
    damaged = runner.invoke(main, ["next", "aptos", *root])
    assert damaged.exit_code == 0 and "skipped (unreadable): 20990101-000000_broken" in damaged.output
    assert "  - 512 px inputs: " in damaged.output
    missing = runner.invoke(main, ["next", "aptos", "--runs-root", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "is not a folder" in missing.output


def test_without_runs_it_says_to_start_from_a_baseline(tmp_path):
    out = CliRunner().invoke(main, ["next", "cassava", "--runs-root", str(tmp_path)])
    assert out.exit_code == 0 and "a baseline first, e.g. kt train cassava -c paper" in out.output
    assert f"kt train cassava --runs-root {tmp_path} --size 512" in out.output
