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
@click.option("--fp16", is_flag=True, help="Run the models in float16 (GPU: tensor cores, half the memory; "
              "GeM/reductions stay fp32). Slower on a CPU.")
@click.option("--io-binding", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="Copy each batch view to the GPU once for every model of its input size "
              "(auto: on for CUDA/TensorRT).")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--workers", type=int, default=4, show_default=True, help="Image decoding threads.")
@click.option("--progress/--no-progress", default=True)
def predict(competition, models, ensemble_spec, data_dir, tta, blend_method, refit, out_root, label, overwrite,
            provider, fp16, io_binding, batch_size, workers, progress) -> None:
    """Offline ONNX ensemble → submissions/<competition>/<stamp>_<label>/ (torch not needed)."""
    from .inference.pipeline import predict_submission
    from .inference.session import expand

    if not models and not ensemble_spec:
        raise KtError("name the models (model.onnx files or globs) or pass --ensemble SPEC.json")
    manifest = predict_submission(competition, expand(list(models)) if models else [], data_dir, out_root, label,
                                  tta, overwrite, refit, provider, batch_size, workers, progress, blend_method,
                                  ensemble_spec, precision="fp16" if fp16 else "fp32", io_binding=io_binding)
    providers = sorted({m["provider"] for m in manifest["models"]})
    bound = " with IO binding" if any(m["io_binding"] for m in manifest["models"]) else ""
    click.echo(f"{len(manifest['models'])} model(s) on {', '.join(providers)} ({manifest['models'][0]['precision']}"
               f"{bound}); {manifest['rows']} rows, "
               f"{manifest['images_per_s']} images/s")
    if fp16 and "CPUExecutionProvider" in providers:
        click.echo("warning: --fp16 is meant for GPUs; on a CPU it is slower than fp32", err=True)
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


# command groups kept in their own modules register themselves on `main`
from . import cli_kaggle, cli_study, cli_train  # noqa: E402,F401

if __name__ == "__main__":
    main()
