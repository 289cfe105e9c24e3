"""`kt download / submit / submissions / bundle`: the commands that talk to Kaggle (through kaggle_client)."""

from __future__ import annotations

from pathlib import Path

import click

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
              help="Code competitions: put onnxruntime-gpu for the notebook into the bundle built here.")
def submit(competition, target, message, data_dir, wait, bundle_dir, fetch_wheels) -> None:
    """Validate locally, then submit: upload the CSV, or for code competitions push the offline bundle as a
    private dataset, push its notebook (internet off) and submit that notebook's output."""
    from .. import competitions, kaggle_client

    comp = competitions.get(competition)
    result = kaggle_client.submit(comp, target, message=message, data_dir=data_dir, wait=wait, bundle_dir=bundle_dir,
                                  fetch_wheels=fetch_wheels, echo=lambda line: click.echo(line, err=True))
    if "kernel" in result:
        click.echo(f"pushed dataset {result['dataset']} and notebook {result['kernel']} v{result['version']}")
    click.echo(f"submitted {result['csv']} to {result['slug']}: ref {result['ref']}, {result['status']}"
               + (f", public score {result.get('public')}" if result.get("public") not in (None, "") else "")
               + (f", error: {result['error']}" if result.get("error") else ""))


@click.command()
@click.argument("competition")
@click.argument("models", nargs=-1)
@click.option("-o", "--out", type=click.Path(), required=True, help="Bundle folder to write.")
@click.option("--ensemble", "ensemble_spec", type=click.Path(), help="Bundle an ensemble spec from kt ensemble.")
@tta_option
@click.option("--wheels-from", type=click.Path(), help="Folder of extra wheels, e.g. onnxruntime-gpu for Kaggle.")
@click.option("--user", help="Kaggle user owning the notebook and dataset (default: $KAGGLE_USERNAME).")
@click.option("--fetch-wheels/--no-fetch-wheels", default=True, show_default=True,
              help="Download onnxruntime-gpu for the notebook's Python (needs the internet here).")
@click.option("--fp16", is_flag=True, help="The notebook runs the models in float16 (its GPU's tensor cores).")
@click.option("--overwrite", is_flag=True)
def bundle(competition, models, out, ensemble_spec, tta, wheels_from, user, fetch_wheels, fp16, overwrite) -> None:
    """The offline notebook bundle of a code competition: ONNX models, wheels, script, metadata."""
    from ..bundle import build
    from ..inference.session import expand

    result = build(competition, expand(list(models)) if models else [], out, tta=tta, ensemble=ensemble_spec,
                   wheels_from=wheels_from, user=user, overwrite=overwrite, fetch=fetch_wheels,
                   precision="fp16" if fp16 else "fp32")
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


COMMANDS = (download, submit, bundle, submissions)
