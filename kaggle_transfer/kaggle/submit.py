"""`kt submit`, step by step as a careful competitor does it by hand, each step checked:

    CSV validated → signed in → a submission left today → (code competitions) bundle built → runtime
    and bundle datasets pushed → notebook pushed (no invalid source) → its run finished → its output
    fetched → the notebook's own manifest checked (provider, models, rows) → its CSV validated →
    only then submitted.

Nothing is spent before the last step. The pushed notebook's version is written into the submission's
manifest.json the moment it exists, so `kt submit --resume` follows that run after an interruption
instead of uploading and running everything again. Client calls go through client.call, so every
failure is one line, and the long waits retry the network for as long as they last.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import competitions
from ..competitions import submission
from ..errors import KtError
from ..files import read_json, write_json
from ..inference.ensemble import budget_line
from . import bundle as bundle_mod
from .client import (
    _wait,
    call,
    check_daily_limit,
    credentials_warning,
    dataset_exists,
    fixed_poll,
    make_api,
    next_poll,
    submit_csv,
)

# Kaggle runs a code competition's notebook for at most 9 hours (docs/kaggle.md); waiting covers it.
NOTEBOOK_LIMIT_S = 9 * 3600
# first poll interval (backs off to 2 min, client.next_poll); tests shorten and fix it
POLL_S = 15.0
DONE = ("COMPLETE", "ERROR", "CANCEL_ACKNOWLEDGED", "CANCEL_REQUESTED")
CUDA = "CUDAExecutionProvider"


@dataclass
class SubmitOptions:
    """What `kt submit` was asked to do."""

    message: str
    data_dir: str | Path | None = None
    wait: bool = False
    dry_run: bool = False
    resume: bool = False  # follow the notebook run recorded in the manifest
    bundle_dir: str | Path | None = None
    fetch_wheels: bool = True
    # None: the competition's accelerator, kt's Pythons
    target: bundle_mod.NotebookTarget | None = None


@dataclass
class Waiting:
    """How the waits poll: first interval, limits, and the clock (tests pass fake ones)."""

    echo: Callable[[str], None] = print
    poll_s: float = field(default_factory=lambda: fixed_poll() or POLL_S)
    timeout_s: float = NOTEBOOK_LIMIT_S + 3600
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.time
    deadline: float = field(default=0.0)

    def start(self) -> Waiting:
        self.deadline = self.clock() + self.timeout_s
        return self


def owner(api) -> str:
    """The authenticated user: the owner of the bundle dataset and the notebook. Never a placeholder."""
    user = api.get_config_value("username") or os.environ.get("KAGGLE_USERNAME")
    if not user:
        raise KtError(
            "the Kaggle client did not say which user is signed in; put your username in kaggle.json "
            "(or set KAGGLE_USERNAME) so the notebook and dataset can be owned"
        )
    return user


def _enum(value: Any) -> str:
    return str(getattr(value, "name", value) or "").split(".")[-1].upper()


def push_dataset(
    api, folder: Path, dataset: str, message: str, waiting: Waiting, *, only_if_new: bool = False
) -> bool:
    """Create the dataset, or add a version (never with `only_if_new`: a runtime dataset's name says what
    it holds); then wait until Kaggle says it is ready. Returns whether it was created."""
    exists = call(lambda: dataset_exists(api, dataset), dataset, "look up the dataset", retry=True)
    if exists and only_if_new:
        return False
    with contextlib.redirect_stdout(io.StringIO()):  # the client prints upload chatter
        made = (
            call(
                lambda: api.dataset_create_version(str(folder), message, quiet=True),
                dataset,
                f"upload a new version of the dataset {dataset}",
            )
            if exists
            else call(
                lambda: api.dataset_create_new(str(folder), public=False, quiet=True),
                dataset,
                f"create the dataset {dataset}",
            )
        )
    if getattr(made, "error", "") or str(getattr(made, "status", "ok")).lower() not in ("ok", ""):
        problem = getattr(made, "error", "") or made.status
        raise KtError(f"Kaggle did not accept the dataset {dataset}: {problem}")
    deadline, status = time.time() + 1800, ""
    while time.time() < deadline:
        status = str(
            call(
                lambda: api.dataset_status(dataset),
                dataset,
                "check the dataset",
                retry=True,
                until=deadline,
                sleep=waiting.sleep,
                echo=waiting.echo,
            )
        )
        if status.lower() == "ready":
            return not exists
        if status.lower() in ("failed", "deleted"):
            raise KtError(
                f"Kaggle could not process the dataset {dataset} (status {status}); push it again"
            )
        waiting.echo(f"dataset {dataset}: {status or 'processing'}")
        waiting.sleep(waiting.poll_s)
    raise KtError(
        f"the dataset {dataset} was not ready after 30 min (status {status}); try kt submit again "
        "later (nothing was submitted)"
    )


def push_notebook(api, bundle: Path, kernel: str) -> int:
    """Push the notebook; any source Kaggle calls invalid (the bundle, the competition) stops here."""
    with contextlib.redirect_stdout(io.StringIO()):
        pushed = call(lambda: api.kernels_push(str(bundle)), kernel, "push the prediction notebook")
    if getattr(pushed, "error", ""):
        raise KtError(f"Kaggle did not accept the notebook {kernel}: {pushed.error}")
    for what in ("dataset", "competition", "kernel"):
        invalid = list(getattr(pushed, f"invalid_{what}_sources", None) or [])
        if invalid:
            raise KtError(
                f"Kaggle calls the notebook's {what} source(s) {', '.join(map(str, invalid))} invalid; "
                f"{'accept the competition rules' if what == 'competition' else 'check the owner'} and "
                "push again (nothing was submitted)"
            )
    return int(getattr(pushed, "version_number", 0) or 0)


def wait_for_run(api, kernel: str, waiting: Waiting) -> tuple[str, str]:
    """Poll the notebook's run until it ends; one progress line per change of status (and every 10 min).
    Dropped connections, timeouts, 429 and 5xx are retried until the wait's deadline."""
    started, last, shown, poll_s = waiting.clock(), None, 0.0, waiting.poll_s
    while waiting.clock() < waiting.deadline:
        try:
            answer = call(
                lambda: api.kernels_status(kernel),
                kernel,
                "check the notebook's run",
                retry=True,
                until=waiting.deadline,
                sleep=waiting.sleep,
                clock=waiting.clock,
                echo=waiting.echo,
            )
        except KtError as e:
            raise KtError(
                f"{e}; nothing was submitted: follow the run with kt submit --resume"
            ) from None
        status = _enum(getattr(answer, "status", ""))
        if status != last or waiting.clock() - shown > 600:
            waiting.echo(
                f"notebook {kernel}: {status.lower() or 'unknown'} "
                f"({(waiting.clock() - started) / 60:.0f} min)"
            )
            last, shown = status, waiting.clock()
        if status in DONE:
            return status, str(getattr(answer, "failure_message", "") or "")
        waiting.sleep(poll_s)
        poll_s = next_poll(poll_s)
    raise KtError(
        f"the notebook {kernel} was still running after {waiting.timeout_s / 3600:.1f} h; follow it "
        "with kt submit --resume (nothing was submitted)"
    )


def fetch_output(api, kernel: str, dest: Path, waiting: Waiting) -> dict[str, Any]:
    """The run's output files and log, downloaded into `dest`."""
    with contextlib.redirect_stdout(io.StringIO()):
        files = call(
            lambda: api.kernels_output(kernel, str(dest), force=True, quiet=True),
            kernel,
            "fetch the notebook's output",
            retry=True,
            until=waiting.deadline,
            sleep=waiting.sleep,
            echo=waiting.echo,
        )
    files = files[0] if isinstance(files, tuple) else files
    logs = sorted(Path(dest).glob("*.log"))
    return {
        "files": [Path(f).name for f in files or []],
        "log": logs[0].read_text(errors="replace") if logs else "",
    }


def _log_tail(log: str, lines: int = 12) -> str:
    """The last lines of a notebook log (Kaggle stores it as JSON records or plain text)."""
    import json

    try:
        text = "".join(r.get("data", "") for r in json.loads(log) if isinstance(r, dict))
    except (json.JSONDecodeError, TypeError, AttributeError):
        text = log
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:] if line.strip())


def check_notebook_manifest(
    comp, output: Path, pushed: dict[str, Any], rows: int
) -> dict[str, Any]:
    """The notebook's own kt_manifest.json must say it ran this push's bundle (its bundle_id and every
    model's sha256), on the provider the bundle asked for, and answered every row of its CSV."""
    where = f"the notebook's kt_manifest.json ({pushed['kernel']} v{pushed['kernel_version']})"
    path = output / "kt_manifest.json"
    if not path.is_file():
        raise KtError(
            f"{where} is missing: the notebook did not run kt's bundle script (nothing was submitted)"
        )
    try:
        ran = read_json(path, what="notebook manifest")
    except KtError:
        ran = None
    well_formed = (
        isinstance(ran, dict)
        and isinstance(ran.get("models"), list)
        and all(isinstance(m, dict) for m in ran["models"])
        and isinstance(ran.get("rows"), int)
        and not isinstance(ran.get("rows"), bool)
    )
    if not well_formed:
        raise KtError(
            f"{where} is not a kt manifest (models, rows, bundle_id); the notebook's output is damaged "
            "(nothing was submitted)"
        )
    if ran.get("bundle_id") != pushed["bundle_id"]:
        raise KtError(
            f"{where} is from another bundle (id {ran.get('bundle_id')!r}, pushed {pushed['bundle_id']!r}):"
            " the notebook did not run the version just pushed; push again (nothing was submitted)"
        )
    want = sorted(m["sha256"] for m in pushed["models"])
    if sorted(str(m.get("sha256")) for m in ran["models"]) != want:
        raise KtError(
            f"{where}: the models it ran are not the bundle's (sha256 differs); push again "
            "(nothing was submitted)"
        )
    providers = sorted({str(m.get("provider")) for m in ran["models"]})
    if pushed["accelerator"] == "gpu" and not pushed.get("cpu_fallback") and providers != [CUDA]:
        raise KtError(
            f"{where}: a GPU bundle ran on {', '.join(providers)}, not CUDA; it would time out on the "
            "hidden test set (nothing was submitted)"
        )
    if ran.get("rows") != rows:
        raise KtError(
            f"{where} says {ran.get('rows')} rows were answered but its submission.csv has {rows} "
            "(nothing was submitted)"
        )
    return {
        "providers": providers,
        "rows": rows,
        "seconds_per_image": ran.get("seconds_per_image"),
        "python": ran.get("python"),
        "skipped": ran["bad_images"].get("count", 0)
        if isinstance(ran.get("bad_images"), dict)
        else 0,
    }


def _hidden_estimate(comp, ran: dict[str, Any]) -> str:
    line = f"notebook ran {ran['rows']} rows on {', '.join(ran['providers'])}"
    if ran.get("skipped"):  # unreadable images, answered with the mean of the others
        line += f" ({ran['skipped']} unreadable image(s) answered with the mean)"
    per = ran.get("seconds_per_image")
    if per and comp.kaggle.hidden_test_images:
        hours = per * comp.kaggle.hidden_test_images / 3600
        line += (
            f", {per:.3f} s/image: about {hours:.1f} h for the ~{comp.kaggle.hidden_test_images:,} hidden test "
            "images"
            + (
                " (warning: near Kaggle's 9 h limit)"
                if hours > 0.8 * NOTEBOOK_LIMIT_S / 3600
                else ""
            )
        )
    return line


def push(
    comp, bundle: Path, message: str, *, api, waiting: Waiting, record: Callable[[dict], None]
) -> dict:
    """Push the runtime dataset (only when new), the bundle dataset and its notebook; record the push."""
    info_path = bundle / "bundle.json"
    info = read_json(info_path, what="bundle description")
    # this push's id: the notebook runs it and its manifest echoes it
    info["bundle_id"] = uuid.uuid4().hex
    write_json(info_path, info)
    bundle_mod.write_script(bundle, info)
    # at push time: the real owner, never a cached one
    refs = bundle_mod.write_metadata(bundle, owner(api))
    if refs["runtime"]:
        folder = bundle_mod.runtime_folder(
            bundle_mod.NotebookTarget(python=info["python"], accelerator=info["accelerator"])
        )
        bundle_mod.write_runtime_metadata(folder, owner(api))
        if push_dataset(api, folder, refs["runtime"], "kt runtime", waiting, only_if_new=True):
            waiting.echo(f"created the runtime dataset {refs['runtime']}")
    new = push_dataset(api, bundle, refs["dataset"], message, waiting)
    version = push_notebook(api, bundle, refs["kernel"])
    pushed = {
        **refs,
        "dataset_new": new,
        "kernel_version": version,
        "bundle_id": info["bundle_id"],
        "bundle": str(bundle),
        "models": info["models"],
        "accelerator": info["accelerator"],
        "cpu_fallback": info.get("cpu_fallback", False),
        "pushed": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    record(pushed)  # from here on, kt submit --resume follows this run instead of pushing again
    waiting.echo(
        f"pushed dataset {refs['dataset']} and notebook {refs['kernel']} v{version}; waiting for its run"
    )
    return pushed


def follow(
    comp, pushed: dict[str, Any], *, api, data_dir: Path, waiting: Waiting
) -> dict[str, Any]:
    """Wait for the pushed notebook's run and check what it wrote. Raises before any submission when the
    notebook failed, ran something else, or its submission.csv is not valid."""
    kernel, version = pushed["kernel"], pushed["kernel_version"]
    status, failure = wait_for_run(api, kernel, waiting)
    output = Path(tempfile.mkdtemp(prefix="kt-notebook-output-"))
    result = fetch_output(api, kernel, output, waiting)
    if status != "COMPLETE":
        raise KtError(
            f"the notebook {kernel} v{version} ended {status}"
            f"{': ' + failure if failure else ''}; log: {_log_tail(result['log']) or '(empty)'} "
            "(nothing was submitted)"
        )
    csv = output / "submission.csv"
    if not csv.is_file():
        raise KtError(
            f"the notebook {kernel} v{version} wrote no submission.csv (its output: "
            f"{', '.join(result['files']) or 'nothing'}); log: {_log_tail(result['log'])}"
        )
    # the notebook's own answers, as Kaggle will read them
    checked = submission.validate(comp, csv, data_dir)
    ran = check_notebook_manifest(comp, output, pushed, checked["rows"])
    waiting.echo(_hidden_estimate(comp, ran))
    return {**pushed, "notebook_csv": str(csv), "notebook": ran}


def submit_notebook(
    comp,
    pushed: dict[str, Any],
    message: str,
    *,
    api,
    record: Callable[[dict], None],
    wait: bool,
    waiting: Waiting,
) -> dict[str, Any]:
    """Submit the checked notebook version; the ref is recorded the moment it exists."""
    slug = comp.kaggle_slug()
    result = call(
        lambda: api.competition_submit_code(
            "submission.csv",
            message,
            slug,
            pushed["kernel"],
            pushed["kernel_version"] or None,
            quiet=True,
        ),
        slug,
        "submit the notebook",
    )
    ref = getattr(result, "ref", 0)
    if not ref:
        raise KtError(
            f"Kaggle did not create a submission for {pushed['kernel']}: "
            f"{getattr(result, 'message', '') or 'no message'}"
        )
    out = {
        "ref": ref,
        "status": "PENDING",
        "kernel": pushed["kernel"],
        "version": pushed["kernel_version"],
    }
    record(out)  # a later failure cannot invite a duplicate
    # scoring re-runs the notebook on the hidden test set: up to Kaggle's run limit
    return _wait(
        slug,
        api,
        out,
        wait,
        poll_s=waiting.poll_s,
        timeout_s=waiting.timeout_s,
        sleep=waiting.sleep,
        echo=waiting.echo,
    )


def submit(
    comp, target: str | Path, options: SubmitOptions, *, api=None, waiting: Waiting | None = None
) -> dict[str, Any]:
    """`kt submit`: validate the CSV locally, sign in and check today's limit (all before anything is
    built or uploaded), then upload the CSV, or for a code competition push and run the offline bundle's
    notebook, check its output and submit it. A submission Kaggle scores ERROR is an error."""
    waiting = (waiting or Waiting()).start()
    slug = comp.kaggle_slug()
    target = Path(target)
    csv = target / "submission.csv" if target.is_dir() else target
    data = competitions.find_data_dir(comp, options.data_dir)
    submission.validate(comp, csv, data)  # before any network call
    _check_locally(comp, csv, options)
    if warning := credentials_warning():
        waiting.echo(warning)
    recorded = _recorded_run(csv) if options.resume else None
    api = api or make_api()
    if not (recorded and recorded.get("ref")):
        check_daily_limit(slug, comp.kaggle.daily_limit, api)

    def record(entry: dict) -> None:
        submission.record_kaggle(csv, {**entry, "message": options.message, "slug": slug})

    if comp.kaggle.submit_via != "notebook":
        result = (
            {"ref": None, "status": "DRY-RUN"}
            if options.dry_run
            else submit_csv(slug, csv, options.message, wait=options.wait, api=api, on_ref=record)
        )
    else:
        result = _submit_code(
            comp,
            csv,
            options,
            api=api,
            data=data,
            recorded=recorded,
            record=record,
            waiting=waiting,
        )
    if result.get("ref"):
        record(result)
    if result["status"] == "ERROR":
        raise KtError(
            f"Kaggle scored submission {result['ref']} as ERROR: {result.get('error') or 'no message'}"
        )
    return {**result, "csv": str(csv), "slug": slug}


def _submit_code(
    comp, csv: Path, options: SubmitOptions, *, api, data: Path, recorded, record, waiting: Waiting
) -> dict[str, Any]:
    slug = comp.kaggle_slug()

    def remember(pushed: dict) -> None:
        submission.record_notebook_run(csv, pushed)

    if recorded and recorded.get("ref"):  # already submitted: follow it, never submit twice
        waiting.echo(
            f"{csv.parent} was already submitted as ref {recorded['ref']}; following it (nothing is "
            "submitted again)"
        )
        followed = _wait(
            slug,
            api,
            {"ref": recorded["ref"], "status": "PENDING"},
            options.wait,
            poll_s=waiting.poll_s,
            timeout_s=waiting.timeout_s,
            sleep=waiting.sleep,
            echo=waiting.echo,
        )
        return {**followed, "already": True}
    if recorded:
        waiting.echo(
            f"resuming notebook {recorded['kernel']} v{recorded['kernel_version']} (pushed "
            f"{recorded.get('pushed', '?')})"
        )
        pushed = recorded
    else:
        if estimate := runtime_estimate(comp, csv):
            waiting.echo(estimate)
        target = options.target or bundle_mod.NotebookTarget(accelerator=comp.kaggle.accelerator)
        if planned := _planned(csv, target.accelerator):
            waiting.echo(planned)
        bundle = (
            Path(options.bundle_dir)
            if options.bundle_dir
            else bundle_mod.for_submission(comp, csv, target=target, fetch=options.fetch_wheels)
        )
        _check_bundle(comp, bundle)
        pushed = push(comp, bundle, options.message, api=api, waiting=waiting, record=remember)
    ran = follow(comp, pushed, api=api, data_dir=data, waiting=waiting)
    remember({**pushed, "ran": ran["notebook"]})
    if options.dry_run:
        return {"ref": None, "status": "DRY-RUN", **ran, "version": ran["kernel_version"]}

    def record_ref(entry: dict) -> None:  # both records, before any wait: --resume must see the ref
        record(entry)
        remember({"ref": entry["ref"]})

    return submit_notebook(
        comp,
        pushed,
        options.message,
        api=api,
        record=record_ref,
        wait=options.wait,
        waiting=waiting,
    )


def _check_locally(comp, csv: Path, options: SubmitOptions) -> None:
    """What can be refused without the network is refused before the first request."""
    if comp.kaggle.submit_via != "notebook":
        if options.resume:
            raise KtError(
                f"--resume follows a code competition's notebook run; {comp.name} takes a CSV upload"
            )
        return
    if options.bundle_dir:
        _check_bundle(comp, Path(options.bundle_dir))
    elif not options.resume and not (csv.parent / "manifest.json").is_file():
        raise KtError(
            f"{csv.parent} has no manifest.json naming the models; pass --bundle DIR (kt bundle)"
        )
    if options.target:
        options.target.check()


def _recorded_run(csv: Path) -> dict[str, Any]:
    """The notebook run kt submit recorded for this submission folder (for --resume)."""
    manifest = csv.parent / "manifest.json"
    run = (
        read_json(manifest, what="submission manifest").get("notebook_run")
        if manifest.is_file()
        else None
    )
    if (
        not isinstance(run, dict)
        or not run.get("kernel")
        or not isinstance(run.get("kernel_version"), int)
    ):
        raise KtError(
            f"--resume: {manifest} records no pushed notebook; run kt submit without --resume"
        )
    return run


def _check_bundle(comp, bundle: Path) -> None:
    """--bundle DIR must be a kt bundle for this competition."""
    path = Path(bundle) / "bundle.json"
    if not path.is_file():
        raise KtError(
            f"--bundle {bundle} has no bundle.json; make one with kt bundle {comp.name} ... -o DIR"
        )
    made_for = read_json(path, what="bundle description").get("competition")
    if made_for != comp.name:
        raise KtError(f"--bundle {bundle} was made for {made_for!r}, not {comp.name!r}")


def _planned(csv: Path, accelerator: str) -> str | None:
    """The budget estimate kt ensemble --budget recorded in the spec this submission was made with,
    for the views it predicted with and the notebook it goes to."""
    manifest = csv.parent / "manifest.json"
    if not manifest.is_file():
        return None
    made = read_json(manifest, what="submission manifest")
    spec, tta = made.get("ensemble"), made.get("tta")
    if not (isinstance(spec, str) and Path(spec).is_file()):
        return None
    int8 = any(isinstance(m, dict) and m.get("precision") == "int8" for m in made.get("models", []))
    return budget_line(
        spec, tta=tta if isinstance(tta, str) else None, accelerator=accelerator, int8=int8
    )


def runtime_estimate(comp, csv: Path) -> str | None:
    """How long the notebook may run on the hidden test set, from this submission's measured predict speed
    (on this machine's provider: a CPU measurement overestimates a GPU notebook)."""
    manifest = csv.parent / "manifest.json"
    speed = (
        read_json(manifest, what="submission manifest").get("images_per_s")
        if manifest.is_file()
        else None
    )
    if not speed or not comp.kaggle.hidden_test_images:
        return None
    seconds = comp.kaggle.hidden_test_images / float(speed)
    line = (
        f"estimated notebook run: {seconds / 3600:.1f} h for ~{comp.kaggle.hidden_test_images:,} hidden test images at "
        f"{speed} images/s (measured here)"
    )
    if seconds > 0.8 * NOTEBOOK_LIMIT_S:
        line = f"warning: {line}, near Kaggle's 9 h limit: use fewer models or views, or --accelerator gpu"
    return line
