"""Code competitions, step by step as a careful competitor does them by hand, each step checked:

    bundle dataset created or versioned → ready → notebook pushed (no invalid source) → its run finished
    → its submission.csv and log fetched → the CSV validated → (only then, in kaggle_client) submitted.

A notebook that fails prints the tail of its log and spends no submission. Client calls go through
kaggle_client.call, so every failure is one line.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import KtError

# Kaggle runs a code competition's notebook for at most 9 hours (docs/kaggle.md); waiting covers it.
NOTEBOOK_LIMIT_S = 9 * 3600
POLL_S = float(os.environ.get("KT_POLL_S") or 15)  # first poll interval (backs off to 2 min); tests shorten it
DONE = ("COMPLETE", "ERROR", "CANCEL_ACKNOWLEDGED", "CANCEL_REQUESTED")


def owner(api) -> str:
    """The authenticated user: the owner of the bundle dataset and the notebook. Never a placeholder."""
    user = api.get_config_value("username") or os.environ.get("KAGGLE_USERNAME")
    if not user:
        raise KtError("the Kaggle client did not say which user is signed in; put your username in kaggle.json "
                      "(or set KAGGLE_USERNAME) so the notebook and dataset can be owned")
    return user


def _enum(value: Any) -> str:
    return str(getattr(value, "name", value) or "").split(".")[-1].upper()


def push_dataset(api, bundle: Path, dataset: str, message: str, *, echo: Callable[[str], None],
                 poll_s: float, timeout_s: float, sleep) -> bool:
    """Create the bundle dataset, or add a version; then wait until Kaggle says it is ready. Returns new?"""
    from .kaggle_client import call, dataset_exists

    exists = call(lambda: dataset_exists(api, dataset), dataset, "look up the bundle dataset", retry=True)
    with contextlib.redirect_stdout(io.StringIO()):  # the client prints upload chatter
        made = (call(lambda: api.dataset_create_version(str(bundle), message, quiet=True), dataset,
                     "upload a new version of the bundle dataset") if exists else
                call(lambda: api.dataset_create_new(str(bundle), public=False, quiet=True), dataset,
                     "create the bundle dataset"))
    if getattr(made, "error", "") or str(getattr(made, "status", "ok")).lower() not in ("ok", ""):
        problem = getattr(made, "error", "") or made.status
        raise KtError(f"Kaggle did not accept the bundle dataset {dataset}: {problem}")
    deadline, status = time.time() + timeout_s, ""
    while time.time() < deadline:
        status = str(call(lambda: api.dataset_status(dataset), dataset, "check the bundle dataset", retry=True))
        if status.lower() == "ready":
            return not exists
        if status.lower() in ("failed", "deleted"):
            raise KtError(f"Kaggle could not process the bundle dataset {dataset} (status {status}); push it again")
        echo(f"dataset {dataset}: {status or 'processing'}")
        sleep(poll_s)
    raise KtError(f"the bundle dataset {dataset} was not ready after {timeout_s / 60:.0f} min (status {status}); "
                  "try kt submit again later (nothing was submitted)")


def push_notebook(api, bundle: Path, kernel: str) -> int:
    """Push the notebook; any source Kaggle calls invalid (the bundle, the competition) stops here."""
    from .kaggle_client import call

    with contextlib.redirect_stdout(io.StringIO()):
        pushed = call(lambda: api.kernels_push(str(bundle)), kernel, "push the prediction notebook")
    if getattr(pushed, "error", ""):
        raise KtError(f"Kaggle did not accept the notebook {kernel}: {pushed.error}")
    for what in ("dataset", "competition", "kernel"):
        invalid = list(getattr(pushed, f"invalid_{what}_sources", None) or [])
        if invalid:
            raise KtError(f"Kaggle calls the notebook's {what} source(s) {', '.join(map(str, invalid))} invalid; "
                          f"{'accept the competition rules' if what == 'competition' else 'check the owner'} and "
                          "push again (nothing was submitted)")
    return int(getattr(pushed, "version_number", 0) or 0)


def wait_for_run(api, kernel: str, *, echo: Callable[[str], None], poll_s: float, timeout_s: float,
                 sleep) -> tuple[str, str]:
    """Poll the notebook's run until it ends; one progress line per change of status (and every 10 min)."""
    from .kaggle_client import call

    started, last, shown = time.time(), None, 0.0
    while time.time() - started < timeout_s:
        answer = call(lambda: api.kernels_status(kernel), kernel, "check the notebook's run", retry=True)
        status = _enum(getattr(answer, "status", ""))
        if status != last or time.time() - shown > 600:
            echo(f"notebook {kernel}: {status.lower() or 'unknown'} ({(time.time() - started) / 60:.0f} min)")
            last, shown = status, time.time()
        if status in DONE:
            return status, str(getattr(answer, "failure_message", "") or "")
        sleep(poll_s)
        poll_s = min(poll_s * 1.5, 120)
    raise KtError(f"the notebook {kernel} was still running after {timeout_s / 3600:.1f} h; follow it on Kaggle "
                  "(nothing was submitted)")


def fetch_output(api, kernel: str, dest: Path) -> dict[str, Any]:
    """The run's output files and log, downloaded into `dest`."""
    from .kaggle_client import call

    with contextlib.redirect_stdout(io.StringIO()):
        files = call(lambda: api.kernels_output(kernel, str(dest), force=True, quiet=True), kernel,
                     "fetch the notebook's output")
    files = files[0] if isinstance(files, tuple) else files
    logs = sorted(Path(dest).glob("*.log"))
    return {"files": [Path(f).name for f in files or []], "log": logs[0].read_text(errors="replace") if logs else ""}


def _log_tail(log: str, lines: int = 12) -> str:
    """The last lines of a notebook log (Kaggle stores it as JSON records or plain text)."""
    import json

    try:
        text = "".join(r.get("data", "") for r in json.loads(log) if isinstance(r, dict))
    except (json.JSONDecodeError, TypeError, AttributeError):
        text = log
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:] if line.strip())


def run_notebook(comp, bundle: Path, message: str, *, api, data_dir: Path, echo: Callable[[str], None],
                 poll_s: float = POLL_S, timeout_s: float = NOTEBOOK_LIMIT_S + 3600,
                 sleep=time.sleep) -> dict[str, Any]:
    """Push the bundle and its notebook, wait for the run, check what it wrote. Raises before any
    submission when the notebook failed or its submission.csv is not valid."""
    from . import bundle as bundle_mod
    from . import submission

    refs = bundle_mod.write_metadata(bundle, owner(api))  # at push time: the real owner, never a cached one
    new = push_dataset(api, bundle, refs["dataset"], message, echo=echo, poll_s=poll_s, timeout_s=1800, sleep=sleep)
    version = push_notebook(api, bundle, refs["kernel"])
    echo(f"pushed dataset {refs['dataset']} and notebook {refs['kernel']} v{version}; waiting for its run")
    status, failure = wait_for_run(api, refs["kernel"], echo=echo, poll_s=poll_s, timeout_s=timeout_s, sleep=sleep)
    output = Path(tempfile.mkdtemp(prefix="kt-notebook-output-"))
    result = fetch_output(api, refs["kernel"], output)
    if status != "COMPLETE":
        raise KtError(f"the notebook {refs['kernel']} v{version} ended {status}"
                      f"{': ' + failure if failure else ''}; log: {_log_tail(result['log']) or '(empty)'} "
                      "(nothing was submitted)")
    csv = output / "submission.csv"
    if not csv.is_file():
        raise KtError(f"the notebook {refs['kernel']} v{version} wrote no submission.csv (its output: "
                      f"{', '.join(result['files']) or 'nothing'}); log: {_log_tail(result['log'])}")
    submission.validate(comp, csv, data_dir)  # the notebook's own answers, as Kaggle will read them
    return {**refs, "dataset_new": new, "version": version, "notebook_csv": str(csv)}


def submit_code(comp, bundle: Path, message: str, *, data_dir: Path, wait: bool = False, dry_run: bool = False,
                api=None, echo: Callable[[str], None] = print, on_ref: Callable[[dict], None] = lambda r: None,
                poll_s: float = POLL_S, timeout_s: float | None = None, sleep=time.sleep) -> dict[str, Any]:
    """A code competition: run the bundle's notebook on Kaggle and check its output (kaggle_code), then
    submit that notebook version. `dry_run` stops before the submission."""
    from .kaggle_client import _wait, call, check_daily_limit, make_api

    api = api or make_api()
    slug = comp.kaggle_slug()
    check_daily_limit(slug, comp.daily_limit, api)
    ran = run_notebook(comp, bundle, message, api=api, data_dir=data_dir, echo=echo, poll_s=poll_s, sleep=sleep)
    if dry_run:
        return {"ref": None, "status": "DRY-RUN", **ran}
    result = call(lambda: api.competition_submit_code("submission.csv", message, slug, ran["kernel"],
                                                      ran["version"] or None, quiet=True), slug, "submit the notebook")
    ref = getattr(result, "ref", 0)
    if not ref:
        raise KtError(f"Kaggle did not create a submission for {ran['kernel']}: "
                      f"{getattr(result, 'message', '') or 'no message'}")
    out = {"ref": ref, "status": "PENDING", **ran}
    on_ref(out)  # recorded the moment it exists: a later failure cannot invite a duplicate
    # scoring re-runs the notebook on the hidden test set: up to Kaggle's run limit
    return _wait(slug, api, out, wait, poll_s=poll_s, timeout_s=timeout_s or NOTEBOOK_LIMIT_S + 3600, sleep=sleep)


def submit(comp, target: str | Path, *, message: str, data_dir: str | Path | None = None, wait: bool = False,
           bundle_dir: str | Path | None = None, fetch_wheels: bool = True, dry_run: bool = False,
           accelerator: str | None = None, python: str | None = None, image_has_onnxruntime: bool = False,
           echo: Callable[[str], None] = print) -> dict[str, Any]:
    """`kt submit`: validate the CSV locally (no request for an invalid file), then upload it, or for a
    code competition run the offline bundle's notebook, check its output and submit it. The ref is in
    manifest.json the moment it exists; a submission Kaggle scores ERROR is an error."""
    from . import competitions, submission
    from .kaggle_client import credentials_warning, submit_csv

    slug = comp.kaggle_slug()
    target = Path(target)
    csv = target / "submission.csv" if target.is_dir() else target
    data = competitions.find_data_dir(comp, data_dir)
    submission.validate(comp, csv, data)  # before any network call
    if warning := credentials_warning():
        echo(warning)

    def record(entry: dict) -> None:
        submission.record_kaggle(csv, {**entry, "message": message, "slug": slug})

    if comp.submit_via == "notebook":
        from .bundle import NOTEBOOK_PYTHON, for_submission

        if estimate := runtime_estimate(comp, csv):
            echo(estimate)
        bundle = Path(bundle_dir) if bundle_dir else for_submission(comp, csv, fetch=fetch_wheels,
                                                                    accelerator=accelerator,
                                                                    python=python or NOTEBOOK_PYTHON,
                                                                    image_has_onnxruntime=image_has_onnxruntime)
        _check_bundle(comp, bundle)
        result = submit_code(comp, bundle, message, data_dir=data, wait=wait, dry_run=dry_run, echo=echo,
                             on_ref=record)
    elif dry_run:
        result = {"ref": None, "status": "DRY-RUN"}
    else:
        result = submit_csv(slug, csv, message, comp.daily_limit, wait=wait, on_ref=record)
    if result.get("ref"):
        record(result)
    if result["status"] == "ERROR":
        raise KtError(f"Kaggle scored submission {result['ref']} as ERROR: {result.get('error') or 'no message'}")
    return {**result, "csv": str(csv), "slug": slug}


def _check_bundle(comp, bundle: Path) -> None:
    """--bundle DIR must be a kt bundle for this competition."""
    from .fsutil import read_json

    path = Path(bundle) / "bundle.json"
    if not path.is_file():
        raise KtError(f"--bundle {bundle} has no bundle.json; make one with kt bundle {comp.name} ... -o DIR")
    made_for = read_json(path, what="bundle description").get("competition")
    if made_for != comp.name:
        raise KtError(f"--bundle {bundle} was made for {made_for!r}, not {comp.name!r}")


def runtime_estimate(comp, csv: Path) -> str | None:
    """How long the notebook may run on the hidden test set, from this submission's measured predict speed
    (on this machine's provider: a CPU measurement overestimates a GPU notebook)."""
    from .fsutil import read_json

    manifest = csv.parent / "manifest.json"
    speed = read_json(manifest, what="submission manifest").get("images_per_s") if manifest.is_file() else None
    if not speed or not comp.hidden_test_images:
        return None
    seconds = comp.hidden_test_images / float(speed)
    line = (f"estimated notebook run: {seconds / 3600:.1f} h for ~{comp.hidden_test_images:,} hidden test images at "
            f"{speed} images/s (measured here)")
    if seconds > 0.8 * NOTEBOOK_LIMIT_S:
        line = f"warning: {line}, near Kaggle's 9 h limit: use fewer models or views, or --accelerator gpu"
    return line
