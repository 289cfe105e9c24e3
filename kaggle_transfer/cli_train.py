"""`kt train`: one run, a --folds/--seeds run group, or a resumed run; also under torchrun."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .cli import _external_dirs, main
from .errors import KtError


@main.command()
@click.argument("competition", required=False)
@click.option("-c", "--recipe", type=click.Path(), help="YAML recipe of config keys (competitions/<name>/*.yaml).")
@click.option("--data-dir", type=click.Path(), help="Competition files (default: $KT_DATA/<name>, data/<name>).")
@click.option("--arch", help="timm model name, e.g. resnet50, inception_resnet_v2.")
@click.option("--size", type=int, help="Input side in pixels (the study: 256; winners: 512).")
@click.option("--pool", type=click.Choice(["avg", "gem"]), help="Global pooling of the head.")
@click.option("--loss", help="ce, bce, focal, l1, smooth_l1, mse (default: the task's).")
@click.option("--epochs", type=int)
@click.option("--batch-size", type=int)
@click.option("--lr", type=float)
@click.option("--optimizer", type=click.Choice(["adamw", "sgd"]))
@click.option("--augment", type=click.Choice(["none", "paper", "heavy", "randaugment", "augmix"]))
@click.option("--external", multiple=True, help="External source added to training rows (repeatable).")
@click.option("--external-dir", multiple=True, help="NAME=DIR for each --external source.")
@click.option("--pretrained/--no-pretrained", default=None, help="Load ImageNet weights through timm.")
@click.option("--weights", type=click.Path(), help="Local backbone state dict (offline).")
@click.option("--split", type=click.Choice(["paper", "kfold", "official"]), help="Default: the competition's.")
@click.option("--split-file", type=click.Path(), help="CSV with id and Split (train/val/test) columns.")
@click.option("--folds", "folds_arg", help="'all' or fold ids like 0,2: train those folds as one run group "
              "(the number of folds is --set folds=N, default 5).")
@click.option("--seeds", type=int, default=1, show_default=True, help="Repeat a --folds group with N seeds.")
@click.option("--fold", type=int, help="Which fold validates.")
@click.option("--seed", type=int)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--amp", type=click.Choice(["auto", "bf16", "fp16", "off"]))
@click.option("--workers", type=int, help="DataLoader worker processes.")
@click.option("--tta", type=click.Choice(["none", "flip", "d4"]), help="TTA recorded for prediction.")
@click.option("--label-smoothing", type=float, help="Label smoothing for ce/bce.")
@click.option("--ema/--no-ema", default=None, help="Validate and keep an EMA of the weights (timm).")
@click.option("--layer-decay", type=float, help="Layer-wise lr decay, e.g. 0.75 (timm).")
@click.option("--accum-steps", type=int, help="Gradient accumulation: an optimizer step every N batches.")
@click.option("--freeze-epochs", type=int, help="Backbone frozen for the first N epochs.")
@click.option("--lp-ft", is_flag=True, default=None, help="Linear probe, then full fine-tune.")
@click.option("--compile/--no-compile", default=None, help="torch.compile the model.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Any config key (repeatable).")
@click.option("--runs-root", type=click.Path(), help="Where run folders go (default: $KT_RUNS or runs/).")
@click.option("--label", help="Run folder suffix (default: arch and size).")
@click.option("--resume", "resume_dir", type=click.Path(), help="Continue a killed run from its last.pt.")
@click.option("--skip-bad-images", is_flag=True, help="Drop rows whose image is missing, and count them.")
@click.option("--progress/--no-progress", default=True)
def train(competition, recipe, data_dir, external_dir, sets, runs_root, label, resume_dir, skip_bad_images,
          progress, folds_arg, seeds, **flags) -> None:
    """Train one model; writes a run folder with checkpoints, OOF, history and plots."""
    from . import config, distributed
    from .cv import parse_folds

    distributed.setup()  # under torchrun: join the process group before anything is decided
    if not distributed.is_main():
        progress = False
    if resume_dir:
        run_dir = Path(resume_dir)
        if (run_dir / "group-request.json").is_file():
            return _run_group(config.load(run_dir / "config.yaml"), run_dir, progress=progress,
                              **json.loads((run_dir / "group-request.json").read_text()))
        cfg, data, ext, skip_bad_images = _resumed(run_dir)
    else:
        cfg, data, ext, run_dir = _new_run(competition, recipe, data_dir, external_dir, sets, runs_root, label, flags)
    cv_folds = parse_folds(folds_arg, cfg.folds)
    if cv_folds is not None or seeds > 1:
        if distributed.active():
            raise KtError("--folds/--seeds groups run one process per fold; under torchrun train one run at a time")
        cv_folds = cv_folds if cv_folds is not None else list(range(cfg.folds))
        request = {"data_dir": str(data), "folds": cv_folds, "seeds": seeds, "external_dirs": ext,
                   "skip_bad_images": skip_bad_images}
        from .fsutil import write_json

        config.save(cfg, run_dir / "config.yaml")
        write_json(run_dir / "group-request.json", request)
        click.echo(f"run group: {run_dir} ({len(cv_folds)} fold(s) x {seeds} seed(s))")
        return _run_group(cfg, run_dir, progress=progress, **request)
    _run_one(cfg, run_dir, data, ext, bool(resume_dir), skip_bad_images, progress)


def _resumed(run_dir: Path):
    from . import config

    if not (run_dir / "config.yaml").is_file():
        raise KtError(f"--resume {run_dir}: no config.yaml there; pass a run folder made by kt train")
    info = json.loads((run_dir / "run.json").read_text())
    return config.load(run_dir / "config.yaml"), Path(info["data_dir"]), info["external_dirs"], info["skip_bad_images"]


def _new_run(competition, recipe, data_dir, external_dir, sets, runs_root, label, flags):
    """Resolve the config (a built-in contest or a YAML one), check it, and make the run folder."""
    from . import competitions, config, distributed, runs
    from .train import preflight

    if not competition:
        raise KtError("name the competition: kt train COMPETITION (kt competitions lists them)")
    file = recipe if competition == "custom" else competition if competitions.is_yaml(competition) else None
    if file or competition == "custom":
        comp = competitions.get(file or "custom")  # the YAML describes the contest; its recipe: section
        recipe = comp.spec.get("recipe") or None     # gives the run's defaults
        flags["competition_file"] = comp.spec_file
    else:
        comp = competitions.get(competition)
    cfg = config.resolve(recipe, {"competition": comp.name, **flags}, sets)
    data, ext = competitions.find_data_dir(comp, data_dir), _external_dirs(external_dir)
    preflight(cfg, data)
    # one run folder for all ranks: rank 0 makes it, the others are told its name
    made = (str(runs.new_run_dir(runs.runs_root(runs_root), comp.name, label or f"{cfg.arch}_{cfg.size}"))
            if distributed.is_main() else None)
    return cfg, data, ext, Path(distributed.broadcast(made))


def _run_one(cfg, run_dir: Path, data: Path, ext: dict, resume: bool, skip_bad_images: bool, progress: bool):
    from . import distributed
    from .train import fit

    if distributed.is_main():
        click.echo(f"run folder: {run_dir}" + (f" ({distributed.world_size()} processes)"
                                                if distributed.active() else ""))
    result = fit(cfg, run_dir, data, ext, resume=resume, skip_bad_images=skip_bad_images, progress=progress)
    distributed.cleanup()
    if not distributed.is_main():
        return
    extra = f" (rounded: {result['score_rounded']:.4f})" if "score_rounded" in result else ""
    click.echo(f"best {result['metric']} {result['score']:.4f}{extra} at epoch {result['best_epoch']}; "
               f"{result['train_images_per_s']:.1f} train images/s")
    if result["skipped_images"]:
        click.echo(f"skipped {result['skipped_images']} rows with missing images")
    click.echo(f"next: kt export {run_dir}")


def _run_group(cfg, run_dir: Path, data_dir: str, folds: list[int], seeds: int, external_dirs: dict,
               skip_bad_images: bool, progress: bool) -> None:
    from .cv import fit_group

    summary = fit_group(cfg, run_dir, Path(data_dir), folds, seeds, external_dirs, skip_bad_images, progress)
    click.echo(f"CV {summary['metric']}: {summary['mean']:.4f} ± {summary['std']:.4f} over "
               f"{len(summary['members'])} run(s); pooled OOF {summary['pooled_score']:.4f} on {summary['rows']} rows")
    click.echo(f"next: kt export {run_dir}")
