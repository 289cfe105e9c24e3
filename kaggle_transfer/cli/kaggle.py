"""`kt download / submit / submissions / bundle / leaderboard`: the commands that talk to Kaggle (kaggle/)."""

from __future__ import annotations

from pathlib import Path

import click

from ..config import ACCELERATORS, NOTEBOOK_PYTHON
from ..inference.session import expand
from ..kaggle import client as kaggle_client
from .common import Renamed, data_dir_option, int8_option, tta_option


@click.command()
@click.argument("competition")
@click.option(
    "-o",
    "--out",
    "--dest",
    "dest",
    cls=Renamed,
    old=("--dest",),
    type=click.Path(),
    help="Folder for the competition's files (default: $KT_DATA/<name> or data/<name>).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Download and extract again, from the first byte (an interrupted "
    "download otherwise resumes where it stopped).",
)
def download(competition, dest, force) -> None:
    """Download a competition's files, extract them safely, and place them where kt train finds them."""
    from .. import competitions

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
@click.option(
    "--bundle",
    "bundle_dir",
    type=click.Path(),
    help="Code competitions: the kt bundle folder to push "
    "(default: built from the submission's manifest models).",
)
@click.option(
    "--fetch-wheels/--no-fetch-wheels",
    default=True,
    show_default=True,
    help="Code competitions: put onnxruntime for the notebook's Python into the bundle built here.",
)
@click.option(
    "--accelerator",
    type=click.Choice(ACCELERATORS),
    help="Code competitions: the notebook's "
    "accelerator (default: the competition's, gpu for APTOS and Cassava).",
)
@click.option(
    "--python",
    "python",
    default=NOTEBOOK_PYTHON,
    show_default=True,
    help="Code competitions: the Python(s) of Kaggle's notebook image; a wheel for each is carried and "
    "the notebook installs the one matching its interpreter.",
)
@click.option(
    "--image-has-onnxruntime",
    is_flag=True,
    help="Code competitions: bundle no onnxruntime wheel, the notebook image has one.",
)
@click.option(
    "--cpu-fallback",
    is_flag=True,
    help="Code competitions: a GPU notebook that gets no CUDA provider "
    "predicts on the CPU instead of stopping.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Code competitions: follow the notebook run this submission folder "
    "recorded (after an interruption) instead of pushing and running again.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Everything up to the submission (sign-in and today's limit; for "
    "code competitions the notebook's run and its checked output), then stop.",
)
def submit(
    competition,
    target,
    message,
    data_dir,
    wait,
    bundle_dir,
    fetch_wheels,
    accelerator,
    python,
    image_has_onnxruntime,
    cpu_fallback,
    resume,
    dry_run,
) -> None:
    """Validate locally, then submit: upload the CSV, or for code competitions push the offline bundle as a
    private dataset, run its notebook (internet off), check what it wrote, and submit that notebook."""
    from .. import competitions
    from ..kaggle.bundle import NotebookTarget
    from ..kaggle.submit import SubmitOptions, Waiting
    from ..kaggle.submit import submit as submit_any

    comp = competitions.get(competition)
    target_spec = NotebookTarget(
        python=python,
        accelerator=accelerator or comp.kaggle.accelerator,
        cpu_fallback=cpu_fallback,
        image_has_onnxruntime=image_has_onnxruntime,
    )
    options = SubmitOptions(
        message=message,
        data_dir=data_dir,
        wait=wait,
        dry_run=dry_run,
        resume=resume,
        bundle_dir=bundle_dir,
        fetch_wheels=fetch_wheels,
        target=target_spec,
    )
    result = submit_any(
        comp, target, options, waiting=Waiting(echo=lambda line: click.echo(line, err=True))
    )
    if dry_run:
        click.echo(
            f"dry run: {result['csv']} is valid, you are signed in and may submit today"
            + (
                f"; the notebook {result['kernel']} v{result['version']} ran and its submission.csv is "
                "valid"
                if result.get("kernel")
                else ""
            )
            + "; nothing submitted"
        )
        return
    done = "was already submitted" if result.get("already") else "submitted"
    click.echo(
        f"{result['csv']} {done} to {result['slug']}: ref {result['ref']}, {result['status']}"
        + (
            f", public score {result.get('public')}"
            if result.get("public") not in (None, "")
            else ""
        )
    )
    if result["status"] == "PENDING" and wait:
        click.echo(f"still being scored; follow it with kt submissions {comp.name}")


@click.command()
@int8_option
@click.argument("competition")
@click.argument("models", nargs=-1)
@click.option("-o", "--out", type=click.Path(), required=True, help="Bundle folder to write.")
@click.option(
    "--ensemble",
    "ensemble_spec",
    type=click.Path(),
    help="Bundle an ensemble spec from kt ensemble.",
)
@tta_option
@click.option(
    "--wheels-from",
    type=click.Path(),
    help="Folder of extra wheels, e.g. onnxruntime-gpu for Kaggle.",
)
@click.option(
    "--user",
    help="Write the notebook's and dataset's metadata for this Kaggle user (kt submit "
    "writes them at push time for the signed-in user).",
)
@click.option(
    "--fetch-wheels/--no-fetch-wheels",
    default=True,
    show_default=True,
    help="Download onnxruntime and the PNG decoder for the notebook's Python (needs the internet here).",
)
@click.option(
    "--fp16", is_flag=True, help="The notebook runs the models in float16 (its GPU's tensor cores)."
)
@click.option(
    "--python",
    "python",
    default=NOTEBOOK_PYTHON,
    show_default=True,
    help="The Python(s) of the notebook image (3.12 or 3.12,3.13); every wheel must install on one.",
)
@click.option(
    "--accelerator",
    type=click.Choice(ACCELERATORS),
    default="gpu",
    show_default=True,
    help="gpu: onnxruntime-gpu (built for the image's CUDA) and a GPU notebook; none: the CPU build.",
)
@click.option(
    "--cpu-fallback",
    is_flag=True,
    help="A GPU notebook that gets no CUDA provider predicts on the CPU instead of stopping.",
)
@click.option(
    "--image-has-onnxruntime",
    is_flag=True,
    help="Build without an onnxruntime wheel: the notebook image already has one.",
)
@click.option("--overwrite", is_flag=True)
def bundle(
    competition,
    models,
    out,
    ensemble_spec,
    tta,
    wheels_from,
    user,
    fetch_wheels,
    fp16,
    python,
    accelerator,
    cpu_fallback,
    image_has_onnxruntime,
    overwrite,
    int8,
) -> None:
    """The offline notebook bundle of a code competition: ONNX models, wheels, script (metadata with --user)."""
    from ..kaggle.bundle import NotebookTarget, Wheels, build

    target = NotebookTarget(
        python=python,
        accelerator=accelerator,
        precision="fp16" if fp16 else "fp32",
        cpu_fallback=cpu_fallback,
        image_has_onnxruntime=image_has_onnxruntime,
    )
    from ..inference.predictor import Choice

    result = build(
        competition,
        Choice(models=expand(list(models)) if models else [], ensemble=ensemble_spec, int8=int8),
        out,
        target=target,
        wheels=Wheels(fetch=fetch_wheels, wheels_from=wheels_from),
        tta=tta,
        user=user,
        overwrite=overwrite,
    )
    click.echo(
        f"wrote {result['dir']}: {result['models']} model(s), wheels {', '.join(result['wheels'])}"
    )
    from ..inference.ensemble import budget_line

    if estimate := budget_line(ensemble_spec, tta=tta, accelerator=accelerator, int8=int8):
        click.echo(estimate)


@click.command()
@click.argument("competition")
def submissions(competition) -> None:
    """Your past submissions to a competition (every page): date, message, status and scores."""
    from .. import competitions

    comp = competitions.get(competition)
    rows = kaggle_client.list_submissions(comp.kaggle_slug())
    if not rows:
        click.echo("no submissions yet")
    for r in rows:
        click.echo(
            f"{r['date'][:19]:<20} {r['status']:<9} public {str(r['public'] or '-'):<8} "
            f"private {str(r['private'] or '-'):<8} {r['message']}"
        )


@click.command()
@click.argument("competition")
@click.option(
    "--board",
    type=click.Choice(["public", "private"]),
    default="public",
    show_default=True,
    help="Which leaderboard, compared with your scores on the same board.",
)
def leaderboard(competition, board) -> None:
    """Where your best score stands: rank, percentile and the medal lines, public with public (or private
    with private)."""
    from .. import competitions

    comp = competitions.get(competition)
    result = kaggle_client.leaderboard(comp, board=board)
    click.echo(f"{comp.kaggle_slug()}: {result['teams']} teams on the {board} leaderboard")
    for medal in ("gold", "silver", "bronze"):
        score = result["scores_at"].get(medal, float("nan"))
        click.echo(f"  {medal:<6} top {result['medals'][medal]:>5}  (score {score:.5f})")
    if result["rank"] is None:
        click.echo(f"you have no submission with a {board} score yet")
    else:
        won = next(
            (m for m in ("gold", "silver", "bronze") if result["rank"] <= result["medals"][m]), None
        )
        click.echo(
            f"your best {board} score {result['best']:.5f}: rank {result['rank']} of {result['teams']} "
            f"(top {result['percentile']}%){', ' + won + ' zone' if won else ''}"
        )


COMMANDS = (download, submit, bundle, submissions, leaderboard)
