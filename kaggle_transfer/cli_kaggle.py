"""`kt download / submit / submissions / bundle`: the commands that talk to Kaggle (through kaggle_client)."""

from __future__ import annotations

from pathlib import Path

import click

from .cli import main
from .errors import KtError


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
@click.option("--fp16", is_flag=True, help="The notebook runs the models in float16 (its GPU's tensor cores).")
@click.option("--overwrite", is_flag=True)
def bundle(competition, models, out, ensemble_spec, tta, wheels_from, user, fetch_wheels, fp16, overwrite) -> None:
    """The offline notebook bundle of a code competition: ONNX models, wheels, script, metadata."""
    from .bundle import build
    from .inference.session import expand

    result = build(competition, expand(list(models)) if models else [], out, tta, ensemble_spec, wheels_from, user,
                   overwrite, fetch_wheels, "fp16" if fp16 else "fp32")
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
              fetch=fetch, precision=data["models"][0].get("precision", "fp32"))  # as validated here
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
