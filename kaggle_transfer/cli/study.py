"""`kt study NAME …` and `kt study report NAME`: the paper's experiment."""

from __future__ import annotations

import click

from .. import config, runs
from .. import recipes as shipped
from ..errors import KtError
from ..runs import runs_root as default_root
from ..study.archs import PAPER19, SETS, resolve_archs
from ..study.grid import load_grid
from ..study.status import study_status as read_status
from ..study.storage import default_storage
from ..training.weights import check_pretrained
from .common import Renamed, external_dir_option, external_dirs, progress_option


class StudyGroup(click.Group):
    """`kt study NAME …` runs a study; `kt study report NAME` reports it."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group(cls=StudyGroup)
def study() -> None:
    """The paper's experiment: ImageNet models × a hyperparameter grid, then ImageNet top-1 vs task score."""


def _trial_options(command):
    """The options every run of a study or an ablation shares."""
    options = [
        click.option("--data-dir", type=click.Path()),
        click.option(
            "--storage",
            help="Optuna storage URL (default: sqlite in runs/<name>/study.db); PostgreSQL etc. "
            "for several machines.",
        ),
        click.option(
            "--parallel",
            "--workers",
            "parallel",
            cls=Renamed,
            old=("--workers",),
            type=click.IntRange(min=1),
            default=1,
            show_default=True,
            help="Runs trained at once on this machine (one process each).",
        ),
        click.option("--runs-root", type=click.Path()),
        click.option(
            "--set",
            "sets",
            multiple=True,
            metavar="KEY=VALUE",
            help="Config for every run, e.g. epochs=5.",
        ),
        click.option(
            "--pretrained/--no-pretrained",
            default=True,
            show_default=True,
            help="ImageNet weights for every run (--no-pretrained: random init, e.g. offline).",
        ),
        click.option(
            "--time-limit",
            metavar="DURATION",
            help="Each run's training time at most, e.g. 2h, 45m (kt train --time-limit, per run).",
        ),
        external_dir_option,
        progress_option,
    ]
    for option in reversed(options):
        command = option(command)
    return command


@study.command("run")
@click.argument("competition")
@click.option(
    "--archs",
    default="paper19",
    show_default=True,
    help="paper19 (the study's 19 models), appendix-g (ResNet-50 with standard, AugMix and "
    "RandAugment pre-training; DeiT-Tiny/Small), clip (CLIP image towers, LP-FT) or timm / "
    "tv:torchvision names, comma-separated.",
)
@click.option(
    "--grid", "grid_spec", default="paper", show_default=True, help="paper, small or a YAML file."
)
@click.option(
    "--protocol",
    type=click.Choice(["kt", "paper"]),
    help="Override the grid's protocol (the paper grid: "
    "paper, the released code's preprocessing; kt: this package's).",
)
@_trial_options
def study_run(
    competition,
    archs,
    grid_spec,
    data_dir,
    storage,
    parallel,
    runs_root,
    protocol,
    sets,
    pretrained,
    time_limit,
    external_dir,
    progress,
) -> None:
    """Train every (arch × grid point) once, resumably, across any number of workers."""
    from .. import competitions
    from ..study.runner import StudyJob, run_study

    comp = competitions.get(competition)
    names = resolve_archs(archs)
    if archs in SETS and archs != "paper19":
        click.echo(f"{archs}: " + ", ".join(f"{a.paper_name} ({a.arch})" for a in SETS[archs]))
    if archs == "paper19":
        libraries = [a.library for a in PAPER19]
        click.echo(
            f"paper19: {libraries.count('torchvision')} models from torchvision, {libraries.count('timm')} "
            "from timm, as the study took them"
        )
    load_grid(grid_spec)
    sets, data, external = _preflight(
        comp, names, _trial_sets(sets, protocol, pretrained, time_limit), data_dir, external_dir
    )
    job = StudyJob(
        comp.name,
        tuple(names),
        grid_spec,
        str(data),
        root=str(default_root(runs_root)),
        storage_url=storage,
        sets=tuple(sets),
        external_dirs=external,
    )
    result = run_study(job, workers=parallel, progress=progress)
    click.echo(
        f"study {result['study']}: {result['points']} grid points, {result['trained_here']} trained by "
        f"this command; storage {result['storage']}"
    )
    click.echo(f"next: kt study report {comp.name}")


def _trial_sets(sets, protocol, pretrained, time_limit) -> tuple[str, ...]:
    """The options every trial shares, as --set values."""
    if protocol:
        sets = (*sets, f"protocol={protocol}")
    if not pretrained:
        sets = (*sets, "pretrained=false")
    if time_limit:
        sets = (*sets, f"time_limit={time_limit}")
    return tuple(sets)


def _preflight(comp, names, sets, data_dir, external_dir, recipe=None):
    """Every mistake before the first trial, the quick ones first: archs, --set keys and values, the
    data folder, then weights this machine cannot get. Returns (sets, data folder, external dirs)."""
    from .. import competitions
    from ..training.models import check_arch

    for name in names:
        check_arch(name.split(".")[0])
    resolved = config.resolve([shipped.resolve(comp.name, recipe)] if recipe else None, sets=sets)
    data = competitions.find_data_dir(comp, data_dir)
    external = competitions.find_external_dirs(comp, resolved.external, external_dirs(external_dir))
    if resolved.pretrained:
        for name in names:
            check_pretrained(name)
    return sets, data, external


@study.command("ablate")
@click.argument("competition")
@click.option("--arch", required=True, help="The one model every level trains (timm or tv: name).")
@click.option(
    "--vary",
    "vary",
    multiple=True,
    required=True,
    metavar="KEY=V1,V2",
    help="A factor and its levels, the first the baseline: any config key (kt train --list-keys), "
    "or recipe=paper,top. Repeat for more factors.",
)
@click.option(
    "--seeds",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Paired seeds per level (0..N-1, the same split): more narrow the intervals.",
)
@click.option(
    "--one-at-a-time",
    is_flag=True,
    help="The baseline and each factor changed alone, not every combination.",
)
@click.option("-c", "--recipe", help="A recipe for every level (top, paper or a YAML file).")
@_trial_options
def study_ablate(
    competition,
    arch,
    vary,
    seeds,
    one_at_a_time,
    recipe,
    data_dir,
    storage,
    parallel,
    runs_root,
    sets,
    pretrained,
    time_limit,
    external_dir,
    progress,
) -> None:
    """Which intervention is worth it on my data: every level over paired seeds, then each level's mean
    and its difference to the baseline with a 95% interval and p-value (ablation.csv/.md/.png)."""
    from .. import competitions
    from ..study import ablate
    from ..study.runner import StudyJob, run_study
    from ..training.tables import check_config

    comp = competitions.get(competition)
    factors = ablate.parse_vary(vary)
    ablate.check_sets(factors, sets)
    spec = ablate.Ablation(arch, factors, seeds, one_at_a_time, recipe)
    trial_sets, data, external = _preflight(
        comp,
        [arch],
        _trial_sets(sets, None, pretrained, time_limit),
        data_dir,
        external_dir,
        recipe,
    )
    levels = spec.labels()
    design = ablate.AblationDesign(comp.name, spec, trial_sets)
    # a level's bad value or unknown recipe fails now, not in its trial
    for k in range(len(levels)):
        try:
            cfg = design.config({"level": k, "seed": 0})
            check_config(cfg)
            competitions.find_external_dirs(comp, cfg.external, external_dirs(external_dir))
        except KtError as e:
            raise KtError(f"--vary level '{levels[k]}': {e}") from None
    click.echo(
        f"{len(levels)} levels x {seeds} seeds = {len(levels) * seeds} runs of {arch}; "
        f"baseline: {levels[0]}"
    )
    root = default_root(runs_root)
    job = StudyJob(
        comp.name,
        (arch,),
        "paper",
        str(data),
        root=str(root),
        storage_url=storage,
        sets=trial_sets,
        external_dirs=external,
        ablation=spec,
    )
    result = run_study(job, workers=parallel, progress=progress)
    click.echo(
        f"ablation {result['study']}: {result['points']} runs, {result['trained_here']} trained by "
        f"this command; storage {result['storage']}"
    )
    out = ablate.report(
        comp.name,
        result["storage"],
        result["study"],
        ablate.report_dir(root, comp.name, result["study"]),
    )
    for line in ablate.level_lines(out["table"]):
        click.echo(f"  {line}")
    click.echo(f"wrote {', '.join(out['files'])}")


@study.command("report")
@click.argument("competition", required=False)
@click.option("--storage", help="Optuna storage URL (default: runs/<name>/study.db).")
@click.option("--runs-root", type=click.Path())
@click.option(
    "--all", "all_", is_flag=True, help="Every competition with a study: the cross-dataset view."
)
@click.option(
    "--top1",
    "top1_file",
    type=click.Path(),
    help="CSV arch,top1[,source] for archs outside paper19.",
)
@click.option(
    "--min-top1",
    type=float,
    help="Only models at or above this ImageNet top-1 (the paper's >70%% view).",
)
@click.option(
    "--grid",
    "grid_name",
    help="Which grid's studies, where one storage holds studies of several (paper, small, a YAML's name).",
)
@click.option(
    "--compare-paper",
    is_flag=True,
    help="Print the paper's published figures beside the measured ones "
    "(always written to compare.csv).",
)
def study_report(
    competition, storage, runs_root, all_, top1_file, min_top1, grid_name, compare_paper
) -> None:
    """CSV and PNG like the paper's figure: ImageNet top-1 vs task score, correlations, normalised slope."""
    from ..study.report import report_studies, summary_line

    results, across = report_studies(
        competition,
        every=all_,
        root=runs.runs_root(runs_root),
        storage_url=storage,
        top1_file=top1_file,
        min_top1=min_top1,
        grid=grid_name,
    )
    for name, result in results.items():
        if result["warning"] and compare_paper:
            raise KtError(f"--compare-paper refused: {result['warning']}")
        if result["warning"]:
            click.echo(f"warning: {result['warning']}", err=True)
        click.echo(
            f"{name}: {result['stats']['models']} models; {summary_line(result['stats'])}; "
            f"wrote {', '.join(result['files'])}"
        )
        if compare_paper:
            versus = result["compare"]
            click.echo(
                versus.drop(columns=["source"]).to_string(index=False)
                if len(versus)
                else f"{name}: no figures of the paper to compare"
            )
    if across is not None:
        click.echo(across.to_string(index=False))


@study.command("status")
@click.argument("competition")
@click.option("--storage", help="Optuna storage URL (default: sqlite in $KT_RUNS/<name>/study.db).")
@click.option("--runs-root", type=click.Path())
def study_status(competition, storage, runs_root) -> None:
    """Grid points done, running (where, since when), failed and left, with an ETA; from the storage alone."""
    from .. import competitions

    name = competitions.get(competition).name
    for s in read_status(name, storage or default_storage(runs.runs_root(runs_root), name)):
        eta = (
            f"; ETA {s['eta_minutes']} min ({s['mean_trial_minutes']} min a trial)"
            if s["eta_minutes"] is not None
            else ""
        )
        click.echo(f"{s['study']} ({s['what']})")
        click.echo(
            f"  {s['points']} points: {s['done']} done, {len(s['running'])} running, "
            f"{s['failed']} failed, {s['left']} left{eta}"
        )
        for r in s["running"]:
            click.echo(
                f"  running {r['point']} on {r['host']} since {r['since']:%Y-%m-%d %H:%M:%S} "
                f"({r['minutes']} min)"
            )


COMMANDS = (study,)
