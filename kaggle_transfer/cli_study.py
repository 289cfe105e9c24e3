"""`kt study NAME …` and `kt study report NAME`: the paper's experiment."""

from __future__ import annotations

import click

from .cli import main
from .errors import KtError


class StudyGroup(click.Group):
    """`kt study NAME …` runs a study; `kt study report NAME` reports it."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@main.group(cls=StudyGroup)
def study() -> None:
    """The paper's experiment: ImageNet models × a hyperparameter grid, then ImageNet top-1 vs task score."""


@study.command("run")
@click.argument("competition")
@click.option("--archs", default="paper19", show_default=True, help="paper19 or timm names, comma-separated.")
@click.option("--grid", "grid_spec", default="paper", show_default=True, help="paper, small or a YAML file.")
@click.option("--data-dir", type=click.Path())
@click.option("--storage", help="Optuna storage URL (default: sqlite in runs/<name>/study.db); PostgreSQL etc. "
              "for several machines.")
@click.option("--workers", type=int, default=1, show_default=True, help="Worker processes on this machine.")
@click.option("--runs-root", type=click.Path())
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Config for every trial, e.g. epochs=5.")
def study_run(competition, archs, grid_spec, data_dir, storage, workers, runs_root, sets) -> None:
    """Train every (arch × grid point) once, resumably, across any number of workers."""
    from . import competitions
    from .runs import runs_root as default_root
    from .study.archs import PAPER19, resolve_archs
    from .study.runner import run_study

    comp = competitions.get(competition)
    names = resolve_archs(archs)
    if archs == "paper19":
        missing = [a.paper_name for a in PAPER19 if not a.timm]
        click.echo(f"paper19: {len(names)} models through timm; not available there: {', '.join(missing)}")
    from .models import check_arch

    for name in names:
        check_arch(name.split(".")[0])
    result = run_study(comp.name, names, grid_spec, competitions.find_data_dir(comp, data_dir),
                       default_root(runs_root), storage, workers, sets)
    click.echo(f"study {result['study']}: {result['points']} grid points, {result['trained_here']} trained by "
               f"this command; storage {result['storage']}")
    click.echo(f"next: kt study report {comp.name}")


@study.command("report")
@click.argument("competition", required=False)
@click.option("--storage", help="Optuna storage URL (default: runs/<name>/study.db).")
@click.option("--runs-root", type=click.Path())
@click.option("--all", "all_", is_flag=True, help="Every competition with a study: the cross-dataset view.")
@click.option("--top1", "top1_file", type=click.Path(), help="CSV arch,top1[,source] for archs outside paper19.")
def study_report(competition, storage, runs_root, all_, top1_file) -> None:
    """CSV and PNG like the paper's figure: ImageNet top-1 vs task score, correlations, normalised slope."""
    from .runs import runs_root as default_root
    from .study.report import report, report_all
    from .study.runner import default_storage

    root = default_root(runs_root)
    names = ([p.parent.name for p in sorted(root.glob("*/study.db"))] if all_ else [competition] if competition
             else [])
    if not names:
        raise KtError("name a competition (kt study report NAME) or pass --all")
    tables = {}
    for name in names:
        result = report(name, storage or default_storage(root, name), root / name / "study-report", top1_file)
        tables[name] = result["table"]
        s = result["stats"]
        click.echo(f"{name}: {s['models']} models; Pearson {s['pearson']:.3f}, Spearman {s['spearman']:.3f}, "
                   f"normalised slope {s['normalised_slope']:.3f}; wrote {', '.join(result['files'])}")
    if all_ and len(tables) > 1:
        click.echo(report_all(tables).to_string(index=False))
