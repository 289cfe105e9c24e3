"""`kt competitions`, `kt runs`, `kt report`: what kt knows and what the runs achieved."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import KtError
from .suggest import suggest_next, suggested_command
from .train import train


@click.command("competitions")
@click.argument("name", required=False)
def competitions_cmd(name) -> None:
    """List the competitions kt knows, with task, metric and how each is submitted; with NAME, its
    facts and the recipes kt ships for it (kt train NAME -c RECIPE)."""
    from ..competitions import COMPETITIONS, custom

    if name:
        _one_competition(name)
        return

    click.echo(
        f"{'name':<10} {'task':<11} {'metric':<9} {'submit':<9} {'ch':>2}  {'external':<12} kaggle slug"
    )
    for c in COMPETITIONS.values():
        s = c.summary()
        click.echo(
            f"{s['name']:<10} {s['task']:<11} {s['metric']:<9} {s['submit_via']:<9} {s['channels']:>2}  "
            f"{','.join(s['external']) or '-':<12} {s['slug'] or '-'}"
        )
    click.echo(
        "\nAny other image competition: describe it in a YAML and pass the YAML's path wherever a"
    )
    click.echo(
        "competition name goes (kt train FILE.yaml, kt validate FILE.yaml CSV, ...). The keys:"
    )
    click.echo("\n".join("  " + line for line in custom.__doc__.split("\n\n")[1].splitlines()))


def _one_competition(name: str) -> None:
    from .. import competitions, recipes

    comp = competitions.get(name)
    s = comp.summary()
    click.echo(f"{comp.name}: {comp.title}")
    click.echo(
        f"  task {s['task']}, metric {s['metric']}, submitted as {s['submit_via']}, "
        f"{s['channels']} channel(s), kaggle slug {s['slug'] or '-'}"
    )
    for source, about in comp.external.items():
        click.echo(f"  external {source}: {about}")
    shipped = recipes.available(comp.name)
    click.echo("recipes (kt train " + comp.name + " -c NAME):" if shipped else "no shipped recipes")
    for recipe, purpose in shipped.items():
        click.echo(f"  {recipe:<8} {purpose}")


@click.command("report")
@click.argument("target", type=click.Path())
@click.option("-o", "--out", type=click.Path(), help="Folder for the PNGs and report.md.")
@click.option(
    "--per-class",
    is_flag=True,
    help="Also one top-losses gallery per true class (plots/top_losses_<class>.png).",
)
def report_cmd(target, out, per_class) -> None:
    """PNG plots and a markdown summary of a run, a --folds group or an ensemble spec."""
    from ..reports.run import report

    result = report(target, out, per_class=per_class)
    click.echo(f"wrote {len(result['pngs'])} plot(s) and report.md to {result['dir']}")
    suggest_next(Path(target), train.params)


@click.command("next")
@click.argument("competition")
@click.option("--runs-root", type=click.Path(), help="Default: $KT_RUNS or runs/.")
def next_cmd(competition, runs_root) -> None:
    """What to try next: the interventions the study and the winners found worth it for this
    competition, the untried first in the order the evidence favours, each with the kt command that
    tries it on your best run so far; then those you tried, with what they measured on your runs."""
    from .. import competitions, runs
    from ..reports.next import advise

    comp = competitions.get(competition)
    if runs_root and not Path(runs_root).is_dir():
        raise KtError(f"--runs-root {runs_root} is not a folder; give the folder kt train wrote to")
    advice, skipped = advise(comp.name, runs_root)
    for line in skipped:
        click.echo(f"skipped (unreadable): {line}", err=True)
    if not advice:
        raise KtError(
            f"kt next has no evidence for {comp.name}; it knows "
            f"{', '.join(sorted(n for n in competitions.COMPETITIONS if n != 'custom'))}"
        )
    finished = runs.competition_runs(comp.name, runs_root)
    untried = [a for a in advice if not a.tried]
    click.echo(
        f"kt next {comp.name}: {len(advice)} interventions from the study and the winners; "
        f"{len(advice) - len(untried)} tried in your {len(finished)} finished run(s) and groups"
    )
    if not finished:
        click.echo(f"no finished run yet: a baseline first, e.g. kt train {comp.name} -c paper")
    if untried:
        click.echo("not tried yet, in the order the evidence favours:")
    for n, a in enumerate(untried, 1):
        i = a.intervention
        click.echo(f"  {n}. {i.name}: {i.why} ({i.source})")
        click.echo(f"     {suggested_command(comp.name, a, train.params, runs_root)}")
    tried = [a for a in advice if a.tried]
    if tried:
        click.echo(f"tried (best {comp.task.metric} with it minus best without, on your runs):")
    for a in tried:
        effect = "no run without it to compare" if a.effect is None else f"{a.effect:+.4f}"
        click.echo(f"  - {a.intervention.name}: {effect}")


@click.command("runs")
@click.argument("competition")
@click.option("--runs-root", type=click.Path(), help="Default: $KT_RUNS or runs/.")
@click.option(
    "--compare",
    nargs=2,
    metavar="A B",
    help="Two runs (names under the runs root, or folders) side by side: scores, then every config "
    "key that differs.",
)
def runs_cmd(competition, runs_root, compare) -> None:
    """A competition's run groups (CV mean ± std, pooled OOF) and runs, each kind best first, with what
    differs from the best; runs not finished last, running or stopped."""
    from .. import competitions
    from ..reports import table

    if compare:
        click.echo(table.format_compare(table.compare(competition, *compare, runs_root)))
        return
    metric = competitions.get(competition).task.metric
    click.echo(table.format_table(table.runs_table(competition, runs_root), metric))


COMMANDS = (competitions_cmd, report_cmd, runs_cmd, next_cmd)
