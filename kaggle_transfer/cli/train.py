"""`kt train` (one run, a --folds/--seeds run group, a resumed run; also under torchrun), `kt export`, `kt demo`."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from .. import config, runs
from ..config import list_keys
from ..errors import KtError
from .common import (
    Section,
    SectionedCommand,
    data_dir_option,
    external_dir_option,
    external_dirs,
    key_option,
    name_option,
    progress_option,
)
from .suggest import suggest_next

DEFAULTS_NOTE = (
    "Defaults shown are kt's own; the competition's recipe (kt competitions NAME) and -c recipes "
    "change some of them, and every run prints the values that differ."
)


class LearningRate(click.ParamType):
    """--lr: a number, or `auto` (the range test of kt lr-find picks it)."""

    name = "LR|auto"

    def convert(self, value, param, ctx):
        if isinstance(value, float) or value == "auto":
            return value
        try:
            return float(value)
        except ValueError:
            self.fail(f"{value!r} is neither a number nor 'auto'", param, ctx)


def train_request(
    competition,
    recipe,
    data_dir,
    external_dir,
    sets,
    runs_root,
    label,
    flags,
    skip_bad_images,
    **more,
):
    """kt train's (and kt lr-find's) flags as the plan's TrainRequest."""
    from ..training.plan import TrainRequest

    return TrainRequest(
        competition,
        recipe=recipe,
        data_dir=data_dir,
        external_dirs=external_dirs(external_dir),
        sets=sets,
        runs_root=runs_root,
        label=label,
        flags=flags,
        skip_bad_images=skip_bad_images,
        **more,
    )


def _list_keys(ctx: click.Context, _param, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(list_keys())
        ctx.exit()


@click.command(cls=SectionedCommand, epilog=DEFAULTS_NOTE)
@click.argument("competition", required=False)
@click.option(
    "--list-keys",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_list_keys,
    cls=Section,
    section="recipe",
    help="Print every config key (for -c recipes and --set) by section, with its default, and exit.",
)
@click.option(
    "-c",
    "--recipe",
    type=click.Path(),
    cls=Section,
    section="recipe",
    help="A shipped recipe by name (top, paper: kt competitions NAME lists them) or a YAML file of "
    "config keys; after a competition YAML's own recipe: section.",
)
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    cls=Section,
    section="recipe",
    help="Any config key, after the flags (repeatable; kt train --list-keys).",
)
@data_dir_option
@external_dir_option
@key_option(
    "external",
    "--external",
    multiple=True,
    help="External source added to training rows (repeatable).",
)
@key_option("split", "--split", help="Default: the competition's.")
@key_option(
    "split_file",
    "--split-file",
    type=click.Path(),
    help="CSV with id and Split (train/val/test) columns.",
)
@key_option("fold", "--fold", type=int)
@click.option(
    "--folds",
    "folds_arg",
    cls=Section,
    section="data",
    help="'all' or fold ids like 0,2: train those folds as one run group "
    "(the number of folds is --set folds=N, default 5).",
)
@click.option(
    "--seeds",
    type=int,
    default=1,
    show_default=True,
    cls=Section,
    section="data",
    help="Train N seeds: each --folds fold N times, or alone this run's own split and fold N times.",
)
@click.option(
    "--skip-bad-images",
    is_flag=True,
    cls=Section,
    section="data",
    help="Drop rows whose image is missing, and count them.",
)
@key_option(
    "arch",
    "--arch",
    help="timm model name, e.g. resnet50, inception_resnet_v2 (tv:NAME: torchvision's).",
)
@key_option("size", "--size", type=int, help="Input side in pixels (the study: 256; winners: 512).")
@key_option(
    "pretrained", "--pretrained/--no-pretrained", help="Load ImageNet weights through timm."
)
@key_option("weights", "--weights", type=click.Path(), help="Local backbone state dict (offline).")
@key_option("pool", "--pool", help="Global pooling of the head: avg, or gem (learnable p).")
@key_option("dropout", "--dropout", type=float, help="Dropout before the linear head.")
@key_option(
    "drop_path", "--drop-path", type=float, help="Stochastic depth rate of a timm backbone."
)
@key_option(
    "protocol",
    "--protocol",
    help="paper: the study's released preprocessing, channel order, "
    "flips, normalisation, weight decay and per-epoch schedule for this dataset.",
)
@key_option("loss", "--loss", help="ce, bce, focal, l1, smooth_l1, mse (default: the task's).")
@key_option(
    "epochs", "--epochs", type=int, help="Epochs; with --resume RUN, more extend a finished run."
)
@key_option("batch_size", "-b", "--batch-size", type=int)
@key_option(
    "lr",
    "--lr",
    type=LearningRate(),
    help="Peak learning rate, or auto: kt lr-find's range test first, then its suggestion.",
)
@key_option("optimizer", "--optimizer")
@key_option("weight_decay", "--weight-decay", type=float, help="Weight decay of the optimizer.")
@key_option("schedule", "--sched", help="Learning-rate schedule, stepped every optimizer step.")
@key_option("warmup_epochs", "--warmup-epochs", type=int)
@key_option(
    "layer_decay", "--layer-decay", type=float, help="Layer-wise lr decay, e.g. 0.75 (timm)."
)
@key_option(
    "accum_steps",
    "--accum-steps",
    type=int,
    help="Gradient accumulation: an optimizer step every N batches.",
)
@key_option("freeze_epochs", "--freeze-epochs", type=int)
@key_option("lp_ft", "--lp-ft", is_flag=True, help="Linear probe, then full fine-tune.")
@key_option("label_smoothing", "--label-smoothing", type=float, help="Label smoothing for ce/bce.")
@key_option("seed", "--seed", type=int)
@key_option("augment", "--augment")
@key_option(
    "mix",
    "--mix",
    help="timm's MixUp/CutMix on training batches (--set mix_off_epochs=N: the last N epochs clean).",
)
@key_option("mix_prob", "--mix-prob", type=float)
@key_option("mix_alpha", "--mix-alpha", type=float)
@key_option(
    "init",
    "--init",
    type=click.Path(),
    help="Warm start from another run's best.pt (same arch and head), "
    "e.g. 384 px then 512 px; recorded with its sha256.",
)
@key_option(
    "teacher",
    "--teacher",
    type=click.Path(),
    help="Distil from a kt ensemble spec: its members' out-of-fold "
    "outputs (and pseudo rows' recorded outputs) as soft targets.",
)
@key_option(
    "distill_alpha", "--distill-alpha", type=float, help="Weight of the teacher's term, 0-1."
)
@key_option("ema", "--ema/--no-ema", help="Validate and keep an EMA of the weights (timm).")
@key_option("tta", "--tta", help="Test-time views recorded for prediction (kt predict's default).")
@key_option("device", "--device")
@key_option("amp", "--amp")
@key_option("workers", "-j", "--workers", type=int, help="DataLoader worker processes (timm's -j).")
@key_option("compile", "--compile/--no-compile", help="torch.compile the model.")
@key_option(
    "time_limit",
    "--time-limit",
    metavar="DURATION",
    help="Training time at most, e.g. 8h, 90m (a number: minutes): no epoch starts that would end "
    "past it (a notebook's clock); the best epoch is kept and the run finishes normally.",
)
@key_option(
    "track",
    "--track",
    help="mlflow: log params, per-epoch metrics and files to MLflow "
    "(--set track_uri=URI; default $MLFLOW_TRACKING_URI or <runs root>/mlruns/mlflow.db).",
)
@click.option(
    "--runs-root",
    type=click.Path(),
    cls=Section,
    section="output",
    help="Where run folders go (default: $KT_RUNS or runs/).",
)
@name_option("Run folder name after its time stamp (default: arch and size).")
@click.option(
    "--resume",
    "resume_dir",
    type=click.Path(),
    cls=Section,
    section="output",
    help="Continue a killed run (or group) from its last.pt; with --epochs N, extend a finished one.",
)
@progress_option
def train(
    competition,
    recipe,
    data_dir,
    external_dir,
    sets,
    runs_root,
    label,
    resume_dir,
    skip_bad_images,
    progress,
    folds_arg,
    seeds,
    **flags,
) -> None:
    """Train one model; writes a run folder with checkpoints, OOF, history and plots.

    COMPETITION is a built-in name (kt competitions) or a competition YAML's path."""
    from ..training import distributed, plan

    if resume_dir:
        given = [
            f"--{k.replace('_', '-')}"
            for k, v in flags.items()
            if v not in (None, ()) and k != "epochs"
        ]
        given += [
            name
            for name, v in (
                ("-c", recipe),
                ("--external-dir", external_dir),
                ("--set", sets),
                ("--runs-root", runs_root),
                ("--name", label),
                ("--folds", folds_arg),
                ("--seeds", seeds > 1),
                ("--skip-bad-images", skip_bad_images),
            )
            if v
        ]
        if given:
            raise KtError(
                f"--resume continues the run exactly as recorded; drop {', '.join(given)} "
                "(only --data-dir may change: the data moved, and --epochs: more extend it) or "
                "start a new run"
            )
        run = plan.resumed_run(
            resume_dir, data_dir=data_dir, competition=competition, epochs=flags["epochs"]
        )
    else:
        lr_auto = flags.get("lr") == "auto"
        if lr_auto:
            flags["lr"] = None
        given = (competition, recipe, data_dir, external_dir, sets, runs_root, label, flags)
        run = plan.new_run(
            train_request(*given, skip_bad_images, folds=folds_arg, seeds=seeds, lr_auto=lr_auto),
            progress=progress,
        )
        if lr_auto:
            click.echo(
                f"lr auto: {run.cfg.lr:.2e} (the range test's minimum / 10; "
                f"{run.run_dir / runs.PLOTS / 'lr_find.png'})"
            )
            for warning in runs.read_lr_find(run.run_dir)["warnings"]:
                click.echo(f"warning: {warning}")
    main = distributed.is_main()
    if main:
        click.echo(f"config: {config.describe(config.differences(run.cfg))}")
        what = (
            f"run group: {run.run_dir} ({len(run.folds)} fold(s) x {run.seeds} seed(s))"
            if run.is_group
            else f"run folder: {run.run_dir}"
        )
        click.echo(
            what + (f" ({distributed.world_size()} processes)" if distributed.active() else "")
        )
    result = plan.train(run, progress=progress and main)
    if not main:
        return
    if run.is_group:
        click.echo(
            f"CV {result['metric']}: {result['mean']:.4f} ± {result['std']:.4f} over "
            f"{len(result['members'])} run(s); pooled OOF {result['pooled_score']:.4f} on {result['rows']} rows"
        )
    else:
        extra = f" (rounded: {result['score_rounded']:.4f})" if "score_rounded" in result else ""
        at = (
            f"with SWA of the last {result['swa']['epochs_averaged']} epochs"
            if result.get("weights") == "swa"
            else f"at epoch {result['best_epoch']}"
        )
        click.echo(
            f"best {result['metric']} {result['score']:.4f}{extra} {at}; "
            f"{result['train_images_per_s']:.1f} train images/s"
        )
        if result["skipped_images"]:
            click.echo(f"skipped {result['skipped_images']} rows with missing or unreadable images")
    click.echo(f"next: kt export {shlex.quote(str(run.run_dir))}")
    suggest_next(run.run_dir, train.params)


@click.command()
@click.argument("run_dir", type=click.Path())
@click.option("-o", "--out", type=click.Path(), help="ONNX path (default: RUN_DIR/model.onnx).")
@click.option("--opset", type=int, default=18, show_default=True)
@click.option(
    "--int8",
    is_flag=True,
    help="Also write model.int8.onnx: static int8 (QDQ, per-channel), calibrated on the run's "
    "training images and checked on its validation rows.",
)
@click.option(
    "--int8-tolerance",
    type=click.FloatRange(min=0),
    default=0.005,
    show_default=True,
    help="The largest validation score drop --int8 accepts.",
)
@click.option("--force", is_flag=True, help="Keep an int8 copy whose score drops more than that.")
@click.option(
    "--data-dir",
    type=click.Path(),
    help="With --int8: the competition's files (default: where the run was trained, its run.json).",
)
@progress_option
def export(run_dir, out, opset, int8, int8_tolerance, force, data_dir, progress) -> None:
    """Export a run's best weights (or each run of a --folds group) to self-describing ONNX, checked with torch."""
    from ..training.export import export_runs

    if (int8_tolerance != 0.005 or force or data_dir) and not int8:
        raise KtError("--int8-tolerance, --force and --data-dir go with --int8")
    if int8 and out:
        raise KtError("--int8 writes model.int8.onnx beside model.onnx in the run folder; drop -o")
    if int8:
        _export_int8(Path(run_dir), opset, int8_tolerance, force, data_dir)
        return
    for result in export_runs(run_dir, out, opset=opset, progress=progress):
        click.echo(f"wrote {result['path']}  (max |onnx - torch| = {result['max_abs_diff']:.2e})")


def _export_int8(run_dir: Path, opset: int, tolerance: float, force: bool, data_dir) -> None:
    """Every member's int8 copy, or none: each is staged beside its model and renamed into place only
    once all passed, so a group never mixes fresh and stale copies."""
    import math
    import os

    from ..inference.quantize import quantize
    from ..training.export import export_runs

    if not math.isfinite(tolerance):
        raise KtError(f"--int8-tolerance {tolerance}: give a finite score drop, e.g. 0.005")
    members, staged = runs.member_dirs(run_dir), []
    try:
        for member in members:
            # a current model.onnx stays as it is: ensemble specs name it by sha256
            if runs.exported_current(member):
                click.echo(f"kept {member / runs.MODEL} (newer than {runs.BEST})")
            else:
                result = next(export_runs(member, opset=opset))
                click.echo(
                    f"wrote {result['path']}  (max |onnx - torch| = {result['max_abs_diff']:.2e})"
                )
            pending = member / f".{runs.MODEL_INT8}.pending"
            try:
                q = quantize(
                    member, tolerance=tolerance, force=force, data_dir=data_dir, out=pending
                )
            except KtError as e:
                where = f"{member}: " if len(members) > 1 else ""
                raise KtError(
                    f"{where}{e}" + ("; no member's int8 copy was written" if where else "")
                ) from None
            staged.append((pending, member / runs.MODEL_INT8, q))
        blocked = [final for _, final, _ in staged if final.exists() and not final.is_file()]
        if blocked:  # checked before any copy moves: a group is never left half-replaced
            raise KtError(f"{blocked[0]} is not a file; remove it and run kt export --int8 again")
        for pending, final, q in staged:
            os.replace(pending, final)
            click.echo(
                f"wrote {final}  (max |int8 - fp32| = {q['max_abs_diff']:.3g}; validation score "
                f"{q['score_fp32']:.4f} fp32, {q['score_int8']:.4f} int8 on {q['validation_rows']} rows)"
            )
    finally:
        for pending, _, _ in staged:
            pending.unlink(missing_ok=True)


@click.command()
@click.argument("run_dirs", nargs=-1, required=True)
@click.option(
    "--data-dir",
    type=click.Path(),
    help="Competition files (default: where the first run read them).",
)
@click.option(
    "--runs-root",
    type=click.Path(),
    help="Where the new run folder goes (default: $KT_RUNS or runs/).",
)
@name_option("Run folder name after its time stamp (default: avgN_<arch>@<size>).")
@progress_option
def average(run_dirs, data_dir, runs_root, label, progress) -> None:
    """Average the best weights of runs of one network and fold (other seeds, lrs: a model soup) into a new run.

    The new run is validated on the runs' fold (oof.npz, metrics.json), so kt export, kt ensemble and
    kt predict take it like any run."""
    from ..training.averaging import average_runs

    result = average_runs(
        run_dirs, data_dir=data_dir, runs_root=runs_root, label=label, progress=progress
    )
    members = ", ".join(
        f"{s['score']:.4f}" if s["score"] is not None else "?" for s in result["averaged_from"]
    )
    click.echo(f"run folder: {result['run_dir']}")
    click.echo(
        f"averaged {len(result['averaged_from'])} runs ({members}): {result['metric']} {result['score']:.4f}"
    )
    click.echo(f"next: kt export {shlex.quote(str(result['run_dir']))}")


@click.command()
@click.argument("competition", default="aptos")
@click.option(
    "--workdir",
    type=click.Path(),
    default="demo",
    show_default=True,
    help="Folder for the synthetic data, runs and submissions.",
)
@click.option("--epochs", type=int, default=8, show_default=True)
@progress_option
def demo(competition, workdir, epochs, progress) -> None:
    """Synthetic data → two models at two sizes → ONNX → ensemble → validated submission."""
    from ..training.demo import run_demo

    run_demo(competition, Path(workdir), epochs=epochs, progress=progress, echo=click.echo)


COMMANDS = (train, export, average, demo)
