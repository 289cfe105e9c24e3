"""`kt lr-find`: the learning-rate range test, with kt train's options (less those only a training
run has)."""

from __future__ import annotations

import shlex

import click

from .. import config, runs
from .common import SectionedCommand
from .train import DEFAULTS_NOTE, train, train_request

# kt lr-find takes kt train's options, less those that only a training run has
_NOT_FOR_LR_FIND = {"resume_dir", "folds_arg", "seeds", "lr"}


def _lr_find(
    competition,
    recipe,
    data_dir,
    external_dir,
    sets,
    runs_root,
    label,
    skip_bad_images,
    progress,
    steps,
    start_lr,
    end_lr,
    **flags,
) -> None:
    """The learning-rate range test: the rate grows exponentially from --start-lr to --end-lr over
    --steps optimizer steps of the run kt train would make with the same flags; writes the loss
    curve, plots/lr_find.png and the suggested rates into runs/COMPETITION/lr_find/<stamp>_<name>/.
    kt train --lr auto runs it first and trains at its suggestion."""
    import shutil

    from ..training import plan
    from ..training.lr_find import RangeTest, find_lr

    test = RangeTest(start=start_lr, end=end_lr, steps=steps)
    test.check()
    given = (competition, recipe, data_dir, external_dir, sets, runs_root, label, flags)
    resolved = plan.resolve(train_request(*given, skip_bad_images))
    cfg = resolved.cfg
    click.echo(f"config: {config.describe(config.differences(cfg))}")
    out = runs.new_lr_find_dir(
        runs.runs_root(runs_root), cfg.competition, label or f"{cfg.arch}_{cfg.size}"
    )
    try:
        found = find_lr(cfg, plan.loop_inputs(resolved), out, test=test, progress=progress)
        runs.save_config(out, cfg)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    click.echo(
        f"lr range test over {found['steps_taken']} steps: {out}\n"
        f"suggested lr {found['chosen']:.2e} (minimum / 10); steepest descent at "
        f"{found['steep']:.2e}, lowest loss at {found['minimum']:.2e}\n"
        f"plot: {out / runs.PLOTS / 'lr_find.png'}\n"
        f"next: kt train {shlex.quote(competition)} (the same flags) --lr {found['chosen']:.2e}"
    )
    for warning in found["warnings"]:
        click.echo(f"warning: {warning}")


lr_find = SectionedCommand(
    "lr-find",
    callback=_lr_find,
    params=[p for p in train.params if p.name not in _NOT_FOR_LR_FIND]
    + [
        click.Option(
            ["--steps"],
            type=click.IntRange(min=5),
            default=200,
            show_default=True,
            help="Optimizer steps of the ramp (the test stops early once the loss diverges).",
        ),
        click.Option(
            ["--start-lr"],
            type=float,
            default=1e-7,
            show_default=True,
            help="The ramp's first rate.",
        ),
        click.Option(
            ["--end-lr"],
            type=float,
            default=10.0,
            show_default=True,
            help="The ramp's last rate (raise it when the loss is lowest at the end).",
        ),
    ],
    help=_lr_find.__doc__,
    epilog=DEFAULTS_NOTE,
)


COMMANDS = (lr_find,)
