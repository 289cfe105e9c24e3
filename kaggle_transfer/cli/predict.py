"""`kt predict`, `kt ensemble`, `kt evaluate`, `kt validate`, `kt prepare`: from models and images to answers."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from ..config import BLENDS, ENSEMBLE_METHODS, IO_BINDING, duration_s
from ..errors import KtError
from ..inference import budget as plan
from ..inference.costs import TARGETS
from ..inference.session import expand
from .common import (
    Renamed,
    data_dir_option,
    external_dir_option,
    external_dirs,
    int8_option,
    name_option,
    progress_option,
    provider_option,
    threads_option,
    tta_option,
)


@click.command()
@click.argument("competition")
@click.argument("models", nargs=-1)
@click.option(
    "--ensemble", "ensemble_spec", type=click.Path(), help="An ensemble spec from kt ensemble."
)
@data_dir_option
@tta_option
@click.option(
    "--blend",
    "blend_method",
    type=click.Choice(BLENDS),
    default="mean",
    show_default=True,
    help="rank: average ranks (binary tasks; ROC AUC only sees the order).",
)
@click.option(
    "--refit", is_flag=True, help="Refit cut points/thresholds on the members' blended OOF."
)
@click.option(
    "-o",
    "--out",
    "--out-root",
    "out_root",
    cls=Renamed,
    old=("--out-root",),
    type=click.Path(),
    help="Submissions root: the folder goes in OUT/<competition>/ (default: $KT_SUBMISSIONS or submissions/).",
)
@name_option("Submission folder name after its time stamp (default: the models' archs and sizes).")
@click.option("--overwrite", is_flag=True, help="Replace an existing submission folder.")
@provider_option
@click.option(
    "--fp16",
    is_flag=True,
    help="Run the models in float16 (GPU: tensor cores, half the memory; "
    "GeM/reductions stay fp32). Slower on a CPU.",
)
@click.option(
    "--io-binding",
    type=click.Choice(IO_BINDING),
    default="auto",
    show_default=True,
    help="Copy each batch view to the GPU once for every model of its input size "
    "(auto: on for CUDA/TensorRT).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@threads_option
@click.option(
    "--skip-bad-images",
    is_flag=True,
    help="A missing or corrupt test image gets the test set's mean "
    "output instead of stopping the run (listed in manifest.json).",
)
@int8_option
@progress_option
def predict(
    competition,
    models,
    ensemble_spec,
    data_dir,
    tta,
    blend_method,
    refit,
    out_root,
    label,
    overwrite,
    provider,
    fp16,
    io_binding,
    batch_size,
    threads,
    skip_bad_images,
    int8,
    progress,
) -> None:
    """Offline ONNX ensemble → submissions/<competition>/<stamp>_<label>/ (torch not needed)."""
    from ..inference.pipeline import predict_submission
    from ..inference.predictor import Choice, RunOptions, load_predictor

    choice = Choice(
        models=expand(list(models)),
        ensemble=ensemble_spec,
        blend=blend_method,
        refit=refit,
        int8=int8,
    )
    options = RunOptions(
        tta=tta,
        provider=provider,
        precision="fp16" if fp16 else "fp32",
        io_binding=io_binding,
        batch_size=batch_size,
        threads=threads,
        progress=progress,
    )
    manifest = predict_submission(
        load_predictor(competition, choice, options),
        data_dir,
        out_root=out_root,
        label=label,
        overwrite=overwrite,
        skip_bad_images=skip_bad_images,
    )
    providers = sorted({m["provider"] for m in manifest["models"]})
    bound = " with IO binding" if any(m["io_binding"] for m in manifest["models"]) else ""
    click.echo(
        f"{len(manifest['models'])} model(s) on {', '.join(providers)} ({manifest['models'][0]['precision']}"
        f"{bound}), TTA {manifest['tta']}; {manifest['rows']} rows, {manifest['images_per_s']} images/s"
    )
    if fp16 and "CPUExecutionProvider" in providers:
        click.echo("warning: --fp16 is meant for GPUs; on a CPU it is slower than fp32", err=True)
    if manifest["bad_images"]:
        click.echo(
            f"warning: {manifest['bad_images']['count']} test image(s) skipped as bad, answered with the "
            f"test set's mean output (listed in manifest.json)",
            err=True,
        )
    if manifest.get("meta_clipped"):
        clipped = ", ".join(f"{k} {v}" for k, v in manifest["meta_clipped"].items())
        click.echo(
            f"warning: metadata values outside the training range were clipped to it ({clipped} rows; "
            "listed in manifest.json)",
            err=True,
        )
    click.echo(f"wrote {manifest['submission']} (valid) and manifest.json")


@click.command()
@click.argument("competition")
@click.argument("models", nargs=-1)
@click.option(
    "--ensemble", "ensemble_spec", type=click.Path(), help="An ensemble spec from kt ensemble."
)
@data_dir_option
@click.option(
    "--images",
    type=click.Path(),
    help="Label every image under this folder instead of the test set.",
)
@click.option(
    "--min-confidence",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Keep rows whose label the ensemble is at least this sure of (top probability; ordinal: "
    "distance to the nearest cut point).",
)
@click.option(
    "--soft",
    is_flag=True,
    help="Train on the ensemble's probabilities (or grade) instead of hard labels.",
)
@tta_option
@click.option(
    "-o",
    "--out",
    type=click.Path(),
    help="Table path (default: $KT_RUNS/<competition>/pseudo/<stamp>.csv).",
)
@provider_option
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@threads_option
@progress_option
def pseudo(
    competition,
    models,
    ensemble_spec,
    data_dir,
    images,
    min_confidence,
    soft,
    tta,
    out,
    provider,
    batch_size,
    threads,
    progress,
) -> None:
    """Pseudo-label the test images (or --images DIR) with models or an ensemble; train on them with
    kt train --external pseudo=FILE (training rows only). Torch-free."""
    from ..inference.predictor import Choice, RunOptions, load_predictor
    from ..inference.pseudo import pseudo_label

    options = RunOptions(
        tta=tta, provider=provider, batch_size=batch_size, threads=threads, progress=progress
    )
    predictor = load_predictor(
        competition, Choice(models=expand(list(models)), ensemble=ensemble_spec), options
    )
    record = pseudo_label(
        predictor,
        data_dir=data_dir,
        images=images,
        min_confidence=min_confidence,
        soft=soft,
        out=out,
    )
    click.echo(
        f"kept {record['kept']} of {record['rows']} images (confidence >= {min_confidence:g})"
        f"{', soft labels' if soft else ''}"
    )
    click.echo(f"wrote {record['path']} and {Path(record['path']).with_suffix('.json').name}")
    pseudo = shlex.quote(f"pseudo={record['path']}")
    click.echo(f"next: kt train {record['competition']} --external {pseudo} ...")


@click.command()
@click.argument("competition")
@click.argument("runs", nargs=-1, required=True)
@click.option("--method", type=click.Choice(ENSEMBLE_METHODS), default="greedy", show_default=True)
@click.option(
    "-o",
    "--out",
    type=click.Path(),
    help="Spec path (default: $KT_RUNS/<competition>/ensembles/…json).",
)
@click.option(
    "--budget",
    metavar="DURATION",
    help="The notebook's clock, e.g. 8h (a bare number is minutes): the best blend predicted to "
    "finish within it. Leave a margin below Kaggle's 9 h.",
)
@click.option(
    "--test-images",
    type=click.IntRange(min=1),
    help="Images the notebook predicts (default: the competition's hidden test set's size).",
)
@click.option(
    "--target",
    type=click.Choice(TARGETS),
    help="With --budget, where it runs: here (as measured), kaggle-cpu (the default), or Kaggle's "
    "T4 / P100 (estimates).",
)
@click.option(
    "--data-dir",
    type=click.Path(),
    help="With --budget: the competition's files, whose images time decoding (default: the first "
    "run's, from its run.json).",
)
@click.option(
    "--overwrite", is_flag=True, help="Replace the -o spec (and its frontier) if it exists."
)
def ensemble(
    competition, runs, method, out, budget, test_images, target, data_dir, overwrite
) -> None:
    """Blend runs or --folds groups on their OOF; write a spec that kt predict --ensemble uses."""
    from .. import competitions
    from ..inference.ensemble import build

    limit = None
    if budget is not None:
        seconds = duration_s(budget, "--budget") if budget.strip() else -1.0
        if seconds <= 0:
            raise KtError(f"--budget {budget!r}: give a duration such as 9h, 90m or 45s")
        from ..kaggle.submit import NOTEBOOK_LIMIT_S

        if seconds > plan.MAX_SECONDS:
            raise KtError(f"--budget {budget}: give at most {plan.MAX_SECONDS / 86400:.0f} days")
        if (target or "kaggle-cpu") != "here" and seconds > NOTEBOOK_LIMIT_S:
            raise KtError(
                f"--budget {budget}: Kaggle stops a notebook after {NOTEBOOK_LIMIT_S // 3600} h; give at "
                "most 9h (8h leaves a margin), or --target here for this machine"
            )
        images = test_images or competitions.get(competition).kaggle.hidden_test_images
        if not images:
            raise KtError(
                "--budget: how many images will the notebook predict? pass --test-images N"
            )
        limit = plan.Budget(
            seconds, images, target or "kaggle-cpu", Path(data_dir) if data_dir else None
        )
    elif test_images or target or data_dir:
        flag = "--test-images" if test_images else "--target" if target else "--data-dir"
        raise KtError(f"{flag} goes with --budget (the clock the blend must fit)")
    spec = build(competition, runs, method, out, limit, overwrite=overwrite)
    click.echo(f"{'member':<60} {'weight':>7} {'OOF ' + spec['metric']:>12}")
    for m in spec["members"]:
        click.echo(f"{m['run'][-60:]:<60} {m['weight']:>7.3f} {m['oof_score']:>12.4f}")
    click.echo(
        f"blend ({spec['method']}) OOF {spec['metric']} {spec['oof_score']:.4f}, "
        f"{spec['gain']:+.4f} over the best member"
    )
    if "budget" in spec:
        import pandas as pd

        from ..reports import plots

        csv = Path(spec["budget"]["frontier"])
        png = plots.budget_frontier(pd.read_csv(csv), spec["budget"], csv.with_suffix(".png"))
        click.echo(f"{plan.line(spec['budget'])}; frontier: {csv}, {png}")
    click.echo(
        f"wrote {spec['path']}; next: kt predict {shlex.quote(competition)} --ensemble "
        f"{shlex.quote(spec['path'])}"
    )


@click.command()
@click.argument("competition")
@click.argument("models", nargs=-1, required=True)
@data_dir_option
@tta_option
@click.option(
    "-o",
    "--out",
    type=click.Path(),
    help="Folder for evaluation.json (default: the first model's).",
)
@progress_option
def evaluate(competition, models, data_dir, tta, out, progress) -> None:
    """Score runs or ONNX files on labelled test splits (CCT-20: cis_test and trans_test side by side)."""
    from .. import competitions
    from ..inference.evaluate import evaluable
    from ..inference.evaluate import evaluate as evaluate_models
    from ..inference.predictor import Choice, RunOptions, load_predictor

    evaluable(competitions.get(competition))  # before any model is loaded

    predictor = load_predictor(
        competition, Choice(models=expand(list(models))), RunOptions(tta=tta, progress=progress)
    )
    result = evaluate_models(predictor, data_dir, out=out)
    click.echo(f"{'split':<12} {'images':>7} {result['metric']:>9}")
    for split, row in result["splits"].items():
        click.echo(f"{split:<12} {row['images']:>7} {row['score']:>9.4f}")
    click.echo("")
    click.echo(result["per_class"].to_string(float_format=lambda v: f"{v:.3f}"))
    click.echo(f"wrote {', '.join(result['files'])}")


@click.command()
@click.argument("competition")
@click.argument("csv", type=click.Path())
@data_dir_option
def validate(competition, csv, data_dir) -> None:
    """Check a submission CSV against the competition's format and test ids.

    COMPETITION is a built-in name or a competition YAML's path."""
    from .. import competitions
    from ..competitions import submission

    comp = competitions.get(competition)
    result = submission.validate(comp, Path(csv), competitions.find_data_dir(comp, data_dir))
    click.echo(
        f"valid {comp.name} submission: {result['rows']} rows, columns {','.join(result['columns'])}"
    )


@click.command()
@click.argument("competition")
@click.option(
    "--size", type=int, required=True, help="Cache side: the shorter side is resized to this."
)
@data_dir_option
@external_dir_option
@click.option("--cache-dir", type=click.Path(), help="Default: $KT_CACHE or cache/.")
@click.option(
    "--fundus-crop",
    is_flag=True,
    help="Trim black borders first (train with --set fundus_crop=true).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jpeg", "png", "raw"]),
    default="jpeg",
    show_default=True,
    help="jpeg: quality 95, 4:4:4 (fast, small, ~40 dB); png: lossless; raw: lossless .npy, the fastest "
    "to read and the largest (README: Speed).",
)
@click.option(
    "--processes",
    "--workers",
    "processes",
    cls=Renamed,
    old=("--workers",),
    type=int,
    default=0,
    help="Resizing processes (default: one per core).",
)
@progress_option
def prepare(
    competition, size, data_dir, external_dir, cache_dir, fundus_crop, fmt, processes, progress
) -> None:
    """Resize every train, test and external image once; training and prediction then read the cache."""
    from .. import competitions, runs
    from ..data.cache import competition_tables
    from ..data.cache import prepare as prepare_cache

    comp = competitions.get(competition)
    tables, notes = competition_tables(
        comp, competitions.find_data_dir(comp, data_dir), external_dirs(external_dir)
    )
    result = prepare_cache(
        tables,
        runs.cache_root(cache_dir),
        comp.name,
        size,
        crop=fundus_crop,
        workers=processes,
        progress=progress,
        fmt=fmt,
    )
    for note in notes:
        click.echo(note)
    click.echo(
        f"{result['cached']} cached ({fmt}), {result['up_to_date']} already up to date, {result['failed']} "
        f"failed → {result['folder']}"
    )
    for error in result["errors"]:
        click.echo(f"  {error}")


COMMANDS = (pseudo, predict, ensemble, evaluate, validate, prepare)
