"""`kt train` (one run, a --folds/--seeds run group, a resumed run; also under torchrun), `kt export`, `kt demo`."""

from __future__ import annotations

from pathlib import Path

import click

from ..config import list_keys
from ..errors import KtError
from .common import (
    choice,
    data_dir_option,
    external_dir_option,
    external_dirs,
    name_option,
    progress_option,
)


def _list_keys(ctx: click.Context, _param, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(list_keys())
        ctx.exit()


@click.command()
@click.argument("competition", required=False)
@click.option(
    "--list-keys",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_list_keys,
    help="Print every config key (for -c recipes and --set) by section, with its default, and exit.",
)
@click.option(
    "-c",
    "--recipe",
    type=click.Path(),
    help="A shipped recipe by name (top, paper: kt competitions NAME lists them) or a YAML file of config keys; "
    "after a competition YAML's own recipe: section.",
)
@data_dir_option
@click.option("--arch", help="timm model name, e.g. resnet50, inception_resnet_v2.")
@click.option("--size", type=int, help="Input side in pixels (the study: 256; winners: 512).")
@click.option("--pool", type=choice("pool"), help="Global pooling of the head.")
@click.option("--loss", help="ce, bce, focal, l1, smooth_l1, mse (default: the task's).")
@click.option("--epochs", type=int)
@click.option("--batch-size", type=int)
@click.option("--lr", type=float)
@click.option("--optimizer", type=choice("optimizer"))
@click.option("--augment", type=choice("augment"))
@click.option(
    "--protocol",
    type=choice("protocol"),
    help="paper: the study's released preprocessing, channel order, "
    "flips, normalisation, weight decay and per-epoch schedule for this dataset (default: kt).",
)
@click.option(
    "--external", multiple=True, help="External source added to training rows (repeatable)."
)
@external_dir_option
@click.option(
    "--mix",
    type=choice("mix"),
    help="timm's MixUp/CutMix on training batches (--set mix_off_epochs=N: "
    "the last N epochs clean).",
)
@click.option("--mix-prob", type=float, help="Share of batches mixed (default 1).")
@click.option("--mix-alpha", type=float, help="Beta(alpha, alpha) mixing strength (default 1).")
@click.option(
    "--init",
    type=click.Path(),
    help="Warm start from another run's best.pt (same arch and head), "
    "e.g. 384 px then 512 px; recorded with its sha256.",
)
@click.option(
    "--teacher",
    type=click.Path(),
    help="Distil from a kt ensemble spec: its members' out-of-fold "
    "outputs (and pseudo rows' recorded outputs) as soft targets.",
)
@click.option(
    "--distill-alpha", type=float, help="Weight of the teacher's term, 0-1 (default 0.5)."
)
@click.option(
    "--pretrained/--no-pretrained", default=None, help="Load ImageNet weights through timm."
)
@click.option("--weights", type=click.Path(), help="Local backbone state dict (offline).")
@click.option("--split", type=choice("split"), help="Default: the competition's.")
@click.option(
    "--split-file", type=click.Path(), help="CSV with id and Split (train/val/test) columns."
)
@click.option(
    "--folds",
    "folds_arg",
    help="'all' or fold ids like 0,2: train those folds as one run group "
    "(the number of folds is --set folds=N, default 5).",
)
@click.option(
    "--seeds",
    type=int,
    default=1,
    show_default=True,
    help="Train N seeds: each --folds fold N times, or alone this run's own split and fold N times.",
)
@click.option("--fold", type=int, help="Which fold validates.")
@click.option("--seed", type=int)
@click.option("--device", type=choice("device"))
@click.option("--amp", type=choice("amp"))
@click.option("--workers", type=int, help="DataLoader worker processes.")
@click.option(
    "--tta",
    type=choice("tta"),
    help="Test-time views recorded for prediction (kt predict's default).",
)
@click.option("--label-smoothing", type=float, help="Label smoothing for ce/bce.")
@click.option(
    "--ema/--no-ema", default=None, help="Validate and keep an EMA of the weights (timm)."
)
@click.option("--layer-decay", type=float, help="Layer-wise lr decay, e.g. 0.75 (timm).")
@click.option(
    "--accum-steps", type=int, help="Gradient accumulation: an optimizer step every N batches."
)
@click.option("--freeze-epochs", type=int, help="Backbone frozen for the first N epochs.")
@click.option("--lp-ft", is_flag=True, default=None, help="Linear probe, then full fine-tune.")
@click.option("--compile/--no-compile", default=None, help="torch.compile the model.")
@click.option(
    "--track",
    type=choice("track"),
    help="mlflow: log params, per-epoch metrics and files to MLflow "
    "(--set track_uri=URI; default $MLFLOW_TRACKING_URI or <runs root>/mlruns/mlflow.db).",
)
@click.option(
    "--set", "sets", multiple=True, metavar="KEY=VALUE", help="Any config key (repeatable)."
)
@click.option(
    "--runs-root", type=click.Path(), help="Where run folders go (default: $KT_RUNS or runs/)."
)
@name_option("Run folder name after its time stamp (default: arch and size).")
@click.option(
    "--resume", "resume_dir", type=click.Path(), help="Continue a killed run from its last.pt."
)
@click.option(
    "--skip-bad-images", is_flag=True, help="Drop rows whose image is missing, and count them."
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
        given = [f"--{k.replace('_', '-')}" for k, v in flags.items() if v not in (None, ())]
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
                "(only --data-dir may change: the data moved) or start a new run"
            )
        run = plan.resumed_run(resume_dir, data_dir=data_dir, competition=competition)
    else:
        run = plan.new_run(
            plan.TrainRequest(
                competition,
                recipe=recipe,
                data_dir=data_dir,
                external_dirs=external_dirs(external_dir),
                sets=sets,
                runs_root=runs_root,
                label=label,
                flags=flags,
                folds=folds_arg,
                seeds=seeds,
                skip_bad_images=skip_bad_images,
            )
        )
    main = distributed.is_main()
    if main:
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
    click.echo(f"next: kt export {run.run_dir}")


@click.command()
@click.argument("run_dir", type=click.Path())
@click.option("-o", "--out", type=click.Path(), help="ONNX path (default: RUN_DIR/model.onnx).")
@click.option("--opset", type=int, default=18, show_default=True)
def export(run_dir, out, opset) -> None:
    """Export a run's best weights (or each run of a --folds group) to self-describing ONNX, checked with torch."""
    from ..training.export import export_runs

    for result in export_runs(run_dir, out, opset=opset):
        click.echo(f"wrote {result['path']}  (max |onnx - torch| = {result['max_abs_diff']:.2e})")


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
def average(run_dirs, data_dir, runs_root, label) -> None:
    """Average the best weights of runs of one network and fold (other seeds, lrs: a model soup) into a new run.

    The new run is validated on the runs' fold (oof.npz, metrics.json), so kt export, kt ensemble and
    kt predict take it like any run."""
    from ..training.averaging import average_runs

    result = average_runs(run_dirs, data_dir=data_dir, runs_root=runs_root, label=label)
    members = ", ".join(
        f"{s['score']:.4f}" if s["score"] is not None else "?" for s in result["averaged_from"]
    )
    click.echo(f"run folder: {result['run_dir']}")
    click.echo(
        f"averaged {len(result['averaged_from'])} runs ({members}): {result['metric']} {result['score']:.4f}"
    )
    click.echo(f"next: kt export {result['run_dir']}")


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
