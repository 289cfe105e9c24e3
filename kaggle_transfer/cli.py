"""`kt`: the command line. Each command parses, calls one function, prints where the outputs went.

Heavy imports (torch, timm, onnxruntime, kaggle) live inside the command bodies, so `kt --help`
is instant and needs no GPU and no credentials.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .errors import KtError


class KtGroup(click.Group):
    """Turns KtError into one `error: …` line and exit code 2; tracebacks are for our own bugs."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KtError as e:
            # errors raised inside DataLoader workers arrive wrapped with a traceback; keep the message
            lines = [line for line in str(e).splitlines() if line.strip()]
            message = lines[-1].split("KtError: ", 1)[-1] if lines else "unknown error"
            click.echo(f"error: {message}", err=True)
            sys.exit(2)


@click.group(cls=KtGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="kaggle_transfer")
def main() -> None:
    """kaggle_transfer: from a Kaggle image competition's files to a validated submission.

    \b
    kt train aptos --data-dir DIR --arch resnet50 --size 512 --pool gem --loss l1
    kt export runs/aptos/<run-id>
    kt predict aptos runs/aptos/*/model.onnx --data-dir DIR --tta flip
    kt validate aptos submissions/aptos/<stamp>_<label>/submission.csv --data-dir DIR
    """


@main.command("competitions")
def competitions_cmd() -> None:
    """List the competitions kt knows, with task, metric and how each is submitted."""
    from .competitions import COMPETITIONS, custom

    click.echo(f"{'name':<10} {'task':<11} {'metric':<9} {'submit':<9} {'ch':>2}  {'external':<12} kaggle slug")
    for c in COMPETITIONS.values():
        s = c.summary()
        click.echo(f"{s['name']:<10} {s['task']:<11} {s['metric']:<9} {s['submit_via']:<9} {s['channels']:>2}  "
                   f"{','.join(s['external']) or '-':<12} {s['slug'] or '-'}")
    click.echo("\nAny other image competition: describe it in a YAML and use `kt train custom -c FILE.yaml`")
    click.echo("(or the YAML's path in place of a name, in every command). The keys:")
    click.echo("\n".join("  " + line for line in custom.__doc__.split("\n\n")[1].splitlines()))


def _external_dirs(items: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise KtError(f"--external-dir {item!r} must look like NAME=DIR, e.g. dr2015=/data/dr2015")
        name, path = item.split("=", 1)
        out[name] = path
    return out


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
    import json

    from . import competitions, config, distributed, runs
    from .cv import fit_group, parse_folds
    from .train import fit, preflight

    distributed.setup()  # under torchrun: join the process group before anything is decided
    if not distributed.is_main():
        progress = False


    if resume_dir:
        run_dir = Path(resume_dir)
        if (run_dir / "group.json").is_file() or (run_dir / "group-request.json").is_file():
            request = json.loads((run_dir / "group-request.json").read_text())
            cfg = config.load(run_dir / "config.yaml")
            summary = fit_group(cfg, run_dir, Path(request["data_dir"]), request["folds"], request["seeds"],
                                request["external_dirs"], request["skip_bad_images"], progress)
            _echo_group(summary, run_dir)
            return
        if not (run_dir / "config.yaml").is_file():
            raise KtError(f"--resume {run_dir}: no config.yaml there; pass a run folder made by kt train")
        cfg = config.load(run_dir / "config.yaml")
        info = json.loads((run_dir / "run.json").read_text())
        data, ext, skip_bad_images = Path(info["data_dir"]), info["external_dirs"], info["skip_bad_images"]
    else:
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
        run_dir = Path(distributed.broadcast(made))
    cv_folds = parse_folds(folds_arg, cfg.folds)
    if (cv_folds is not None or seeds > 1) and distributed.active():
        raise KtError("--folds/--seeds groups run one process per fold; under torchrun train one run at a time")
    if cv_folds is not None or seeds > 1:
        cv_folds = cv_folds if cv_folds is not None else list(range(cfg.folds))
        config.save(cfg, run_dir / "config.yaml")
        from .fsutil import write_json

        write_json(run_dir / "group-request.json", {"data_dir": str(data), "folds": cv_folds, "seeds": seeds,
                                                    "external_dirs": ext, "skip_bad_images": skip_bad_images})
        click.echo(f"run group: {run_dir} ({len(cv_folds)} fold(s) x {seeds} seed(s))")
        _echo_group(fit_group(cfg, run_dir, data, cv_folds, seeds, ext, skip_bad_images, progress), run_dir)
        return
    if distributed.is_main():
        click.echo(f"run folder: {run_dir}" + (f" ({distributed.world_size()} processes)"
                                                if distributed.active() else ""))
    result = fit(cfg, run_dir, data, ext, resume=bool(resume_dir), skip_bad_images=skip_bad_images,
                 progress=progress)
    distributed.cleanup()
    if not distributed.is_main():
        return
    extra = f" (rounded: {result['score_rounded']:.4f})" if "score_rounded" in result else ""
    click.echo(f"best {result['metric']} {result['score']:.4f}{extra} at epoch {result['best_epoch']}; "
               f"{result['train_images_per_s']:.1f} train images/s")
    if result["skipped_images"]:
        click.echo(f"skipped {result['skipped_images']} rows with missing images")
    click.echo(f"next: kt export {run_dir}")


def _echo_group(summary: dict, run_dir: Path) -> None:
    click.echo(f"CV {summary['metric']}: {summary['mean']:.4f} ± {summary['std']:.4f} over "
               f"{len(summary['members'])} run(s); pooled OOF {summary['pooled_score']:.4f} on {summary['rows']} rows")
    click.echo(f"next: kt export {run_dir}")


@main.command()
@click.argument("run_dir", type=click.Path())
@click.option("-o", "--out", type=click.Path(), help="ONNX path (default: RUN_DIR/model.onnx).")
@click.option("--opset", type=int, default=18, show_default=True)
def export(run_dir, out, opset) -> None:
    """Export a run's best weights (or each run of a --folds group) to self-describing ONNX, checked with torch."""
    import json

    from .export import export as export_run

    group = Path(run_dir) / "group.json"
    dirs = ([Path(run_dir) / m["dir"] for m in json.loads(group.read_text())["members"]] if group.is_file()
            else [Path(run_dir)])
    if out and len(dirs) > 1:
        raise KtError("-o/--out names one file; a run group exports model.onnx into each member folder")
    for d in dirs:
        result = export_run(d, out, opset)
        click.echo(f"wrote {result['path']}  (max |onnx - torch| = {result['max_abs_diff']:.2e})")


@main.command()
@click.argument("competition")
@click.argument("models", nargs=-1)
@click.option("--ensemble", "ensemble_spec", type=click.Path(), help="An ensemble spec from kt ensemble.")
@click.option("--data-dir", type=click.Path(), help="Competition files with the test images.")
@click.option("--tta", type=click.Choice(["none", "flip", "d4"]), default="none", show_default=True)
@click.option("--blend", "blend_method", type=click.Choice(["mean", "rank"]), default="mean", show_default=True,
              help="rank: average ranks (binary tasks; ROC AUC only sees the order).")
@click.option("--refit", is_flag=True, help="Refit cut points/thresholds on the members' blended OOF.")
@click.option("--out-root", type=click.Path(), default="submissions", show_default=True)
@click.option("--label", help="Submission folder suffix.")
@click.option("--overwrite", is_flag=True, help="Replace an existing submission folder.")
@click.option("--provider", default="auto", show_default=True, help="auto, cuda, tensorrt or cpu.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--workers", type=int, default=4, show_default=True, help="Image decoding threads.")
@click.option("--progress/--no-progress", default=True)
def predict(competition, models, ensemble_spec, data_dir, tta, blend_method, refit, out_root, label, overwrite,
            provider, batch_size, workers, progress) -> None:
    """Offline ONNX ensemble → submissions/<competition>/<stamp>_<label>/ (torch not needed)."""
    from .inference.pipeline import predict_submission
    from .inference.session import expand

    if not models and not ensemble_spec:
        raise KtError("name the models (model.onnx files or globs) or pass --ensemble SPEC.json")
    manifest = predict_submission(competition, expand(list(models)) if models else [], data_dir, out_root, label,
                                  tta, overwrite, refit, provider, batch_size, workers, progress, blend_method,
                                  ensemble_spec)
    providers = sorted({m["provider"] for m in manifest["models"]})
    click.echo(f"{len(manifest['models'])} model(s) on {', '.join(providers)}; {manifest['rows']} rows, "
               f"{manifest['images_per_s']} images/s")
    click.echo(f"wrote {manifest['submission']} (valid) and manifest.json")


@main.command()
@click.argument("competition")
@click.argument("runs", nargs=-1, required=True)
@click.option("--method", type=click.Choice(["mean", "rank", "greedy"]), default="greedy", show_default=True)
@click.option("-o", "--out", type=click.Path(), help="Spec path (default: runs/<competition>/ensembles/…json).")
def ensemble(competition, runs, method, out) -> None:
    """Blend runs or --folds groups on their OOF; write a spec that kt predict --ensemble uses."""
    from .ensemble import build

    spec = build(competition, runs, method, out)
    click.echo(f"{'member':<60} {'weight':>7} {'OOF ' + spec['metric']:>12}")
    for m in spec["members"]:
        click.echo(f"{m['run'][-60:]:<60} {m['weight']:>7.3f} {m['oof_score']:>12.4f}")
    click.echo(f"blend ({spec['method']}) OOF {spec['metric']} {spec['oof_score']:.4f}, "
               f"{spec['gain']:+.4f} over the best member")
    click.echo(f"wrote {spec['path']}; next: kt predict {competition} --ensemble {spec['path']}")


@main.command()
@click.argument("competition")
@click.option("--size", type=int, required=True, help="Cache side: the shorter side is resized to this.")
@click.option("--data-dir", type=click.Path())
@click.option("--external-dir", multiple=True, help="NAME=DIR of external sources to cache too.")
@click.option("--cache-dir", type=click.Path(), help="Default: $KT_CACHE or cache/.")
@click.option("--fundus-crop", is_flag=True, help="Trim black borders first (train with --set fundus_crop=true).")
@click.option("--workers", type=int, default=0, help="Processes (default: one per core).")
@click.option("--progress/--no-progress", default=True)
def prepare(competition, size, data_dir, external_dir, cache_dir, fundus_crop, workers, progress) -> None:
    """Resize every train, test and external image once; training and prediction then read the cache."""
    from . import competitions
    from .data.cache import cache_root
    from .data.cache import prepare as run_prepare

    comp = competitions.get(competition)
    data = competitions.find_data_dir(comp, data_dir)
    tables = [comp.read_train(data, skip_bad_images=True)]
    try:
        tables.append(comp.read_test(data, skip_bad_images=True))
    except KtError as e:  # a folder with train files only can still be cached
        click.echo(f"test images not cached: {e}")
    for name, path in _external_dirs(external_dir).items():
        tables.append(comp.read_external(name, Path(path)))
    result = run_prepare(tables, cache_root(cache_dir), comp.name, size, fundus_crop, workers, progress)
    click.echo(f"{result['cached']} cached, {result['up_to_date']} already up to date, {result['failed']} failed "
               f"→ {result['folder']}")
    for error in result["errors"]:
        click.echo(f"  {error}")


def _kaggle_slug(comp) -> str:
    if not comp.slug:
        raise KtError(f"{comp.name} is not a Kaggle competition: get it from LILA "
                      "(https://lila.science/datasets/caltech-camera-traps) and pass --data-dir"
                      if comp.name == "cct20" else f"{comp.name} has no Kaggle slug in its description")
    return comp.slug


@main.command()
@click.argument("competition")
@click.option("--dest", type=click.Path(), help="Default: $KT_DATA/<name> or data/<name>.")
@click.option("--force", is_flag=True, help="Download and extract again.")
def download(competition, dest, force) -> None:
    """Download a competition's files, extract them safely, and place them where kt train finds them."""
    import os

    from . import competitions, kaggle_client

    comp = competitions.get(competition)
    slug = _kaggle_slug(comp)
    if warning := kaggle_client.credentials_warning():
        click.echo(warning, err=True)
    target = Path(dest) if dest else Path(os.environ.get("KT_DATA") or "data") / comp.name
    result = kaggle_client.download(slug, target, force)
    if result["skipped"]:
        click.echo(f"{target} already holds {slug}'s files (pass --force to download again)")
    else:
        click.echo(f"extracted {len(result['files'])} file(s) into {target}")


@main.command()
@click.argument("competition")
@click.argument("target", type=click.Path())
@click.option("-m", "--message", required=True, help="The submission's description on Kaggle.")
@click.option("--data-dir", type=click.Path(), help="Competition files, to validate the CSV first.")
@click.option("--wait", is_flag=True, help="Poll until Kaggle has scored it.")
@click.option("--bundle", "bundle_dir", type=click.Path(), help="Code competitions: the kt bundle folder to push "
              "(default: built from the submission's manifest models).")
@click.option("--fetch-wheels/--no-fetch-wheels", default=True, show_default=True,
              help="Code competitions: put onnxruntime-gpu for the notebook into the bundle built here.")
def submit(competition, target, message, data_dir, wait, bundle_dir, fetch_wheels) -> None:
    """Validate locally, then submit: upload the CSV, or for code competitions push the offline bundle as a
    private dataset, push its notebook (internet off) and submit that notebook's output."""
    import json

    from . import competitions, kaggle_client, submission
    from .fsutil import write_json

    comp = competitions.get(competition)
    slug = _kaggle_slug(comp)
    target = Path(target)
    csv = target / "submission.csv" if target.is_dir() else target
    submission.validate(comp, csv, competitions.find_data_dir(comp, data_dir))  # before any network call
    if warning := kaggle_client.credentials_warning():
        click.echo(warning, err=True)
    if comp.submit_via == "notebook":
        bundle = Path(bundle_dir) if bundle_dir else _bundle_for(comp, csv, fetch_wheels)
        result = kaggle_client.submit_code(slug, bundle, message, comp.daily_limit, wait)
        click.echo(f"pushed dataset {result['dataset']} and notebook {result['kernel']} v{result['version']}")
    else:
        result = kaggle_client.submit_csv(slug, csv, message, comp.daily_limit, wait)
    click.echo(f"submitted {csv} to {slug}: ref {result['ref']}, {result['status']}"
               + (f", public score {result.get('public')}" if result.get("public") not in (None, "") else "")
               + (f", error: {result['error']}" if result.get("error") else ""))
    manifest = csv.parent / "manifest.json"
    if manifest.is_file():
        data = json.loads(manifest.read_text())
        data.setdefault("kaggle", []).append({**result, "message": message, "slug": slug})
        write_json(manifest, data)


@main.command()
@click.argument("competition")
@click.argument("models", nargs=-1)
@click.option("-o", "--out", type=click.Path(), required=True, help="Bundle folder to write.")
@click.option("--ensemble", "ensemble_spec", type=click.Path(), help="Bundle an ensemble spec from kt ensemble.")
@click.option("--tta", type=click.Choice(["none", "flip", "d4"]), default="none", show_default=True)
@click.option("--wheels-from", type=click.Path(), help="Folder of extra wheels, e.g. onnxruntime-gpu for Kaggle.")
@click.option("--user", help="Kaggle user owning the notebook and dataset (default: $KAGGLE_USERNAME).")
@click.option("--fetch-wheels/--no-fetch-wheels", default=True, show_default=True,
              help="Download onnxruntime-gpu for the notebook's Python (needs the internet here).")
@click.option("--overwrite", is_flag=True)
def bundle(competition, models, out, ensemble_spec, tta, wheels_from, user, fetch_wheels, overwrite) -> None:
    """The offline notebook bundle of a code competition: ONNX models, wheels, script, metadata."""
    from .bundle import build
    from .inference.session import expand

    result = build(competition, expand(list(models)) if models else [], out, tta, ensemble_spec, wheels_from, user,
                   overwrite, fetch_wheels)
    click.echo(f"wrote {result['dir']}: {result['models']} model(s), wheels {', '.join(result['wheels'])}")


def _bundle_for(comp, csv: Path, fetch: bool) -> Path:
    """The bundle of the models that made this submission (from its manifest), built beside it."""
    import json

    from .bundle import build

    manifest = csv.parent / "manifest.json"
    if not manifest.is_file():
        raise KtError(f"{csv.parent} has no manifest.json naming the models; pass --bundle DIR (kt bundle)")
    data = json.loads(manifest.read_text())
    out = csv.parent / "bundle"
    if not (out / "bundle.json").is_file():
        build(comp.name, [m["file"] for m in data["models"]], out, data.get("tta", "none"), data.get("ensemble"),
              fetch=fetch)
    return out


@main.command()
@click.argument("competition")
def submissions(competition) -> None:
    """Your past submissions to a competition: date, message, status and scores."""
    from . import competitions, kaggle_client

    comp = competitions.get(competition)
    rows = kaggle_client.list_submissions(_kaggle_slug(comp))
    if not rows:
        click.echo("no submissions yet")
    for r in rows:
        click.echo(f"{r['date'][:19]:<20} {r['status']:<9} public {str(r['public'] or '-'):<8} "
                   f"private {str(r['private'] or '-'):<8} {r['message']}")


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


@main.command("report")
@click.argument("target", type=click.Path())
@click.option("-o", "--out", type=click.Path(), help="Folder for the PNGs and report.md.")
def report_cmd(target, out) -> None:
    """PNG plots and a markdown summary of a run, a --folds group or an ensemble spec."""
    from .report import report

    result = report(target, out)
    click.echo(f"wrote {len(result['pngs'])} plot(s) and report.md to {result['dir']}")


@main.command("runs")
@click.argument("competition")
@click.option("--runs-root", type=click.Path(), help="Default: $KT_RUNS or runs/.")
def runs_cmd(competition, runs_root) -> None:
    """Leaderboard of a competition's runs and run groups: score, CV mean ± std, what differs from the best."""
    from .report import leaderboard
    from .runs import runs_root as default_root

    click.echo(leaderboard(competition, default_root(runs_root)).to_string(index=False))


@main.command()
@click.argument("competition")
@click.argument("csv", type=click.Path())
@click.option("--data-dir", type=click.Path(), help="Competition files (sample submission, test ids).")
@click.option("-c", "--competition-file", type=click.Path(), help="The YAML of a custom competition.")
def validate(competition, csv, data_dir, competition_file) -> None:
    """Check a submission CSV against the competition's format and test ids."""
    from . import competitions, submission

    comp = competitions.get(competition_file if competition == "custom" and competition_file else competition)
    result = submission.validate(comp, Path(csv), competitions.find_data_dir(comp, data_dir))
    click.echo(f"valid {comp.name} submission: {result['rows']} rows, columns {','.join(result['columns'])}")


@main.command()
@click.argument("competition")
@click.argument("models", nargs=-1, required=True)
@click.option("--data-dir", type=click.Path())
@click.option("--tta", type=click.Choice(["none", "flip", "d4"]), default="none", show_default=True)
@click.option("--out", type=click.Path(), help="Folder for evaluation.json (default: the first model's).")
@click.option("--progress/--no-progress", default=True)
def evaluate(competition, models, data_dir, tta, out, progress) -> None:
    """Score runs or ONNX files on labelled test splits (CCT-20: cis_test and trans_test side by side)."""
    from .inference.evaluate import evaluate as run_evaluate

    result = run_evaluate(competition, models, data_dir, tta, out, progress)
    click.echo(f"{'split':<12} {'images':>7} {result['metric']:>9}")
    for split, row in result["splits"].items():
        click.echo(f"{split:<12} {row['images']:>7} {row['score']:>9.4f}")
    click.echo("")
    click.echo(result["per_class"].to_string(float_format=lambda v: f"{v:.3f}"))
    click.echo(f"wrote {', '.join(result['files'])}")


@main.command()
@click.argument("competition", default="aptos")
@click.option("--workdir", type=click.Path(), default="demo", show_default=True,
              help="Folder for the synthetic data, runs and submissions.")
@click.option("--epochs", type=int, default=8, show_default=True)
@click.option("--progress/--no-progress", default=True)
def demo(competition, workdir, epochs, progress) -> None:
    """Synthetic data → two models at two sizes → ONNX → ensemble → validated submission."""
    from .demo import run_demo

    run_demo(competition, Path(workdir), epochs=epochs, progress=progress, echo=click.echo)


if __name__ == "__main__":
    main()
