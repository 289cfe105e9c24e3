"""`kt download / submit / submissions / bundle`: the commands that talk to Kaggle (through kaggle_client)."""

from __future__ import annotations

from pathlib import Path

import click

from ..config import ACCELERATORS, NOTEBOOK_PYTHON
from .common import data_dir_option, tta_option


@click.command()
@click.argument("competition")
@click.option("--dest", type=click.Path(), help="Default: $KT_DATA/<name> or data/<name>.")
@click.option("--force", is_flag=True, help="Download and extract again.")
def download(competition, dest, force) -> None:
    """Download a competition's files, extract them safely, and place them where kt train finds them."""
    from .. import competitions, kaggle_client

    comp = competitions.get(competition)
    slug = comp.kaggle_slug()
    if warning := kaggle_client.credentials_warning():
        click.echo(warning, err=True)
    target = Path(dest) if dest else competitions.default_data_dir(comp)
    result = kaggle_client.download(slug, target, force=force)
    if result["skipped"]:
        click.echo(f"{target} already holds {slug}'s files (pass --force to download again)")
    else:
        click.echo(f"extracted {len(result['files'])} file(s) into {target}")


@click.command()
@click.argument("competition")
@click.argument("target", type=click.Path())
@click.option("-m", "--message", required=True, help="The submission's description on Kaggle.")
@data_dir_option
@click.option("--wait", is_flag=True, help="Poll until Kaggle has scored it.")
@click.option("--bundle", "bundle_dir", type=click.Path(), help="Code competitions: the kt bundle folder to push "
              "(default: built from the submission's manifest models).")
@click.option("--fetch-wheels/--no-fetch-wheels", default=True, show_default=True,
              help="Code competitions: put onnxruntime for the notebook's Python into the bundle built here.")
@click.option("--accelerator", type=click.Choice(ACCELERATORS), help="Code competitions: the notebook's "
              "accelerator (default: the competition's, gpu for APTOS and Cassava).")
@click.option("--python", "python", default=NOTEBOOK_PYTHON, show_default=True,
              help="Code competitions: the Python of Kaggle's notebook image, which the wheels are built for.")
@click.option("--image-has-onnxruntime", is_flag=True, help="Code competitions: bundle no onnxruntime wheel, "
              "the notebook image has one.")
@click.option("--dry-run", is_flag=True, help="Everything up to the submission (for code competitions: the "
              "notebook's run and its checked output), then stop.")
def submit(competition, target, message, data_dir, wait, bundle_dir, fetch_wheels, accelerator, python,
           image_has_onnxruntime, dry_run) -> None:
    """Validate locally, then submit: upload the CSV, or for code competitions push the offline bundle as a
    private dataset, run its notebook (internet off), check what it wrote, and submit that notebook."""
    from .. import competitions
    from ..kaggle_code import submit as submit_any

    comp = competitions.get(competition)
    result = submit_any(comp, target, message=message, data_dir=data_dir, wait=wait, bundle_dir=bundle_dir,
                        fetch_wheels=fetch_wheels, dry_run=dry_run, accelerator=accelerator, python=python,
                        image_has_onnxruntime=image_has_onnxruntime, echo=lambda line: click.echo(line, err=True))
    if dry_run:
        click.echo(f"dry run: {result['csv']} is valid" + (f"; the notebook {result['kernel']} v{result['version']} "
                   f"ran and its submission.csv is valid" if result.get("kernel") else "") + "; nothing submitted")
        return
    click.echo(f"submitted {result['csv']} to {result['slug']}: ref {result['ref']}, {result['status']}"
               + (f", public score {result.get('public')}" if result.get("public") not in (None, "") else ""))
    if result["status"] == "PENDING" and wait:
        click.echo(f"still being scored; follow it with kt submissions {comp.name}")


@click.command()
@click.argument("competition")
@click.argument("models", nargs=-1)
@click.option("-o", "--out", type=click.Path(), required=True, help="Bundle folder to write.")
@click.option("--ensemble", "ensemble_spec", type=click.Path(), help="Bundle an ensemble spec from kt ensemble.")
@tta_option
@click.option("--wheels-from", type=click.Path(), help="Folder of extra wheels, e.g. onnxruntime-gpu for Kaggle.")
@click.option("--user", help="Write the notebook's and dataset's metadata for this Kaggle user (kt submit "
              "writes them at push time for the signed-in user).")
@click.option("--fetch-wheels/--no-fetch-wheels", default=True, show_default=True,
              help="Download onnxruntime-gpu for the notebook's Python (needs the internet here).")
@click.option("--fp16", is_flag=True, help="The notebook runs the models in float16 (its GPU's tensor cores).")
@click.option("--python", "python", default=NOTEBOOK_PYTHON, show_default=True,
              help="The Python of the notebook image; every wheel must install on it.")
@click.option("--accelerator", type=click.Choice(ACCELERATORS), default="gpu", show_default=True,
              help="gpu: onnxruntime-gpu and a GPU notebook; none: onnxruntime on the CPU.")
@click.option("--image-has-onnxruntime", is_flag=True, help="Build without an onnxruntime wheel: the notebook "
              "image already has one.")
@click.option("--overwrite", is_flag=True)
def bundle(competition, models, out, ensemble_spec, tta, wheels_from, user, fetch_wheels, fp16, python, accelerator,
           image_has_onnxruntime, overwrite) -> None:
    """The offline notebook bundle of a code competition: ONNX models, wheels, script (metadata with --user)."""
    from ..bundle import build
    from ..inference.session import expand

    result = build(competition, expand(list(models)) if models else [], out, tta=tta, ensemble=ensemble_spec,
                   wheels_from=wheels_from, user=user, overwrite=overwrite, fetch=fetch_wheels,
                   precision="fp16" if fp16 else "fp32", python=python, accelerator=accelerator,
                   image_has_onnxruntime=image_has_onnxruntime)
    click.echo(f"wrote {result['dir']}: {result['models']} model(s), wheels {', '.join(result['wheels'])}")


@click.command()
@click.argument("competition")
def submissions(competition) -> None:
    """Your past submissions to a competition: date, message, status and scores."""
    from .. import competitions, kaggle_client

    comp = competitions.get(competition)
    rows = kaggle_client.list_submissions(comp.kaggle_slug())
    if not rows:
        click.echo("no submissions yet")
    for r in rows:
        click.echo(f"{r['date'][:19]:<20} {r['status']:<9} public {str(r['public'] or '-'):<8} "
                   f"private {str(r['private'] or '-'):<8} {r['message']}")


@click.command()
@click.argument("competition")
def leaderboard(competition) -> None:
    """Where your best public score stands: rank, percentile and the medal lines of the public leaderboard."""
    from .. import competitions, kaggle_client

    comp = competitions.get(competition)
    board = kaggle_client.leaderboard(comp)
    click.echo(f"{comp.kaggle_slug()}: {board['teams']} teams on the public leaderboard")
    for medal in ("gold", "silver", "bronze"):
        score = board["scores_at"].get(medal, float("nan"))
        click.echo(f"  {medal:<6} top {board['medals'][medal]:>5}  (score {score:.5f})")
    if board["rank"] is None:
        click.echo("you have no scored submission yet")
    else:
        won = next((m for m in ("gold", "silver", "bronze") if board["rank"] <= board["medals"][m]), None)
        click.echo(f"your best public score {board['best']:.5f}: rank {board['rank']} of {board['teams']} "
                   f"(top {board['percentile']}%){', ' + won + ' zone' if won else ''}")


COMMANDS = (download, submit, bundle, submissions, leaderboard)
