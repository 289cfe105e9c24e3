"""The only module that talks to Kaggle, through the official `kaggle` client (imported lazily).

Facts relied on (docs/kaggle.md, kaggle 2.2.5): `import kaggle` authenticates at import, so
only `kaggle.api.kaggle_api_extended.KaggleApi` is imported, inside functions; `authenticate()` calls
exit(1) without credentials; a failed upload makes `competition_submit` return ref 0 instead of
raising; 429/5xx are retried here only where a retry cannot double an action (listing, polling).
Credentials are never printed or logged, in errors included.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import archives as archives_mod
from .errors import KtError

CREDENTIALS_HELP = ("put kaggle.json (from kaggle.com → Settings → API) in ~/.kaggle/ with chmod 600, or set "
                    "KAGGLE_USERNAME and KAGGLE_KEY, or KAGGLE_API_TOKEN")
SAFE_RETRIES = 4


def credentials_warning() -> str | None:
    """A warning when kaggle.json is readable by group or others (the key would leak on shared machines)."""
    folder = Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle")
    path = folder / "kaggle.json"
    if path.is_file() and os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        return f"warning: {path} is readable by other users; run: chmod 600 {path}"
    return None


def make_api():
    """An authenticated KaggleApi, or a KtError that says where credentials go."""
    import contextlib
    import io

    try:
        from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError:
        raise KtError("the kaggle package is not installed: pip install kaggle") from None
    api = KaggleApi()
    # the client prints its own messages (and a credentials-file warning) to stdout: keep them out
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            api.authenticate()
        except SystemExit:
            raise KtError(f"no Kaggle credentials found: {CREDENTIALS_HELP}") from None
    return api


def _explain(e: Exception, slug: str, what: str) -> KtError:
    """One line for an HTTP or connection failure; never the request's headers or the key."""
    import requests

    if isinstance(e, requests.HTTPError) and e.response is not None:
        code = e.response.status_code
        if code == 401:
            return KtError(f"Kaggle rejected the credentials while trying to {what} (401); {CREDENTIALS_HELP}")
        if code == 403:
            return KtError(f"Kaggle refused to {what} (403): accept the competition's rules at "
                           f"https://www.kaggle.com/competitions/{slug}/rules, then try again")
        if code == 404:
            return KtError(f"Kaggle found no competition {slug!r} (404) while trying to {what}")
        if code == 429:
            return KtError(f"Kaggle is rate-limiting requests (429) while trying to {what}; wait a minute and retry")
        return KtError(f"Kaggle answered HTTP {code} while trying to {what}; try again later")
    if isinstance(e, requests.ConnectionError):
        return KtError(f"cannot reach Kaggle to {what} (offline or blocked?)")
    return KtError(f"the Kaggle client failed to {what}: {type(e).__name__}")


def call(fn: Callable[[], Any], slug: str, what: str, *, retry: bool = False, sleep=time.sleep) -> Any:
    """Run one client call; with `retry` (only for calls safe to repeat) back off on 429 and 5xx."""
    import requests

    for attempt in range(SAFE_RETRIES if retry else 1):
        try:
            return fn()
        except requests.HTTPError as e:
            code = e.response.status_code if e.response is not None else 0
            if retry and (code == 429 or code >= 500) and attempt + 1 < SAFE_RETRIES:
                sleep(min(30.0, 2.0 ** attempt))
                continue
            raise _explain(e, slug, what) from None
        except (requests.ConnectionError, requests.Timeout, OSError) as e:
            raise _explain(e, slug, what) from None


def download(slug: str, dest: Path, *, force: bool = False, api=None, quiet: bool = False) -> dict[str, Any]:
    """Download a competition's files and extract them into `dest`; skipped when already done."""
    marker = dest / ".kt-download"
    if marker.is_file() and not force:
        return {"dest": str(dest), "skipped": True, "files": []}
    api = api or make_api()
    partial = dest.parent / f".{dest.name}.download"
    partial.mkdir(parents=True, exist_ok=True)
    call(lambda: api.competition_download_files(slug, path=str(partial), force=True, quiet=quiet), slug,
         "download the competition's files")
    archives = sorted(partial.glob("*.zip"))
    if not archives:
        raise KtError(f"the download of {slug} produced no zip archive in {partial}")
    staging = dest.parent / f".{dest.name}.extracting"  # renamed into place only when complete
    shutil.rmtree(staging, ignore_errors=True)
    try:
        files = [f for a in archives for f in archives_mod.safe_extract(a, staging)]
        (staging / ".kt-download").write_text(f"{slug}\n{time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
        if not dest.exists():
            staging.rename(dest)
        else:  # --force over an earlier download: the archive's entries replace theirs, other files stay
            for entry in staging.iterdir():
                target = dest / entry.name
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                elif target.exists() or target.is_symlink():
                    target.unlink()
                entry.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(partial, ignore_errors=True)
    return {"dest": str(dest), "skipped": False, "files": files}


def _status(sub) -> str:
    return str(getattr(sub, "status", "")).split(".")[-1].upper()


def list_submissions(slug: str, api=None) -> list[dict[str, Any]]:
    api = api or make_api()
    subs = call(lambda: api.competition_submissions(slug), slug, "list submissions", retry=True) or []
    return [{"ref": s.ref, "date": str(getattr(s, "date", "")), "file": getattr(s, "file_name", ""),
             "message": getattr(s, "description", ""), "status": _status(s),
             "public": getattr(s, "public_score", ""), "private": getattr(s, "private_score", ""),
             "error": getattr(s, "error_description", "")} for s in subs if s is not None]


def submitted_today(subs: list[dict[str, Any]], today: str | None = None) -> int:
    today = today or time.strftime("%Y-%m-%d", time.gmtime())  # Kaggle's day is UTC
    return sum(1 for s in subs if s["date"].startswith(today) and s["status"] != "ERROR")


def check_daily_limit(slug: str, daily_limit: int, api) -> None:
    """Refuse before uploading anything when today's (UTC) submissions already reach the limit."""
    used = submitted_today(list_submissions(slug, api))
    if used >= daily_limit:
        raise KtError(f"{used} submission(s) to {slug} today already: the daily limit is {daily_limit}; "
                      "try again after midnight UTC")


def submit_csv(slug: str, csv: Path, message: str, daily_limit: int, *, wait: bool = False, api=None,
               poll_s: float = 10.0, timeout_s: float = 3600.0, sleep=time.sleep) -> dict[str, Any]:
    """Upload a validated CSV; with `wait`, poll until it is scored. Never resubmits on its own."""
    api = api or make_api()
    check_daily_limit(slug, daily_limit, api)
    result = call(lambda: api.competition_submit(str(csv), message, slug, quiet=True), slug, "submit")
    ref = getattr(result, "ref", 0)
    if not ref:
        raise KtError(f"the upload of {csv.name} to {slug} failed (Kaggle returned no submission): "
                      f"{getattr(result, 'message', '') or 'no message'}; nothing was submitted, try again")
    out = {"ref": ref, "message": getattr(result, "message", ""), "status": "PENDING"}
    return _wait(slug, api, out, wait, poll_s=poll_s, timeout_s=timeout_s, sleep=sleep)


def _dataset_exists(api, ref: str) -> bool:
    import requests

    try:
        api.dataset_status(ref)
        return True
    except requests.HTTPError as e:
        if e.response is not None and e.response.status_code == 404:
            return False
        raise


def push_bundle(bundle: Path, message: str, api=None) -> dict[str, Any]:
    """Upload the bundle as a private dataset (new, or a new version), then push its notebook.
    Problems the client reports in the response (not as exceptions) become KtError."""
    import contextlib
    import io
    import json

    api = api or make_api()
    dataset = json.loads((bundle / "dataset-metadata.json").read_text())["id"]
    kernel = json.loads((bundle / "kernel-metadata.json").read_text())["id"]
    quiet = contextlib.redirect_stdout(io.StringIO())  # the client prints upload chatter
    with quiet:
        exists = call(lambda: _dataset_exists(api, dataset), dataset, "look up the bundle dataset", retry=True)
        if exists:
            made = call(lambda: api.dataset_create_version(str(bundle), message, quiet=True), dataset,
                        "upload a new version of the bundle dataset")
        else:
            made = call(lambda: api.dataset_create_new(str(bundle), public=False, quiet=True), dataset,
                        "create the bundle dataset")
    if getattr(made, "error", "") or str(getattr(made, "status", "ok")).lower() not in ("ok", ""):
        problem = getattr(made, "error", "") or made.status
        raise KtError(f"Kaggle did not accept the bundle dataset {dataset}: {problem}")
    with contextlib.redirect_stdout(io.StringIO()):
        pushed = call(lambda: api.kernels_push(str(bundle)), kernel, "push the prediction notebook")
    if getattr(pushed, "error", ""):
        raise KtError(f"Kaggle did not accept the notebook {kernel}: {pushed.error}")
    return {"dataset": dataset, "dataset_new": not exists, "kernel": kernel,
            "version": getattr(pushed, "version_number", 0), "url": getattr(pushed, "url", "")}


def submit_code(slug: str, bundle: Path, message: str, daily_limit: int, *, wait: bool = False, api=None,
                poll_s: float = 10.0, timeout_s: float = 4 * 3600.0, sleep=time.sleep) -> dict[str, Any]:
    """A code competition: push the bundle and its notebook, submit that notebook version's output."""
    api = api or make_api()
    check_daily_limit(slug, daily_limit, api)
    pushed = push_bundle(bundle, message, api)
    result = call(lambda: api.competition_submit_code("submission.csv", message, slug, pushed["kernel"],
                                                      pushed["version"] or None, quiet=True), slug,
                  "submit the notebook")
    ref = getattr(result, "ref", 0)
    if not ref:
        raise KtError(f"Kaggle did not create a submission for {pushed['kernel']}: "
                      f"{getattr(result, 'message', '') or 'no message'}")
    out = {"ref": ref, "status": "PENDING", **pushed}
    return _wait(slug, api, out, wait, poll_s=poll_s, timeout_s=timeout_s, sleep=sleep)


def _wait(slug: str, api, out: dict[str, Any], wait: bool, *, poll_s: float, timeout_s: float, sleep) -> dict[str, Any]:
    deadline = time.time() + timeout_s
    while wait and time.time() < deadline:
        match = next((s for s in list_submissions(slug, api) if str(s["ref"]) == str(out["ref"])), None)
        if match and match["status"] in ("COMPLETE", "ERROR"):
            out.update(status=match["status"], public=match["public"], private=match["private"],
                       error=match["error"])
            break
        sleep(poll_s)
        poll_s = min(poll_s * 1.5, 120)
    return out


def submit(comp, target: str | Path, *, message: str, data_dir: str | Path | None = None, wait: bool = False,
           bundle_dir: str | Path | None = None, fetch_wheels: bool = True,
           echo: Callable[[str], None] = print) -> dict[str, Any]:
    """`kt submit`: validate the CSV locally (no request for an invalid file), then upload it, or for a
    code competition push the offline bundle and its notebook; the result goes into manifest.json."""
    from . import competitions, submission

    slug = comp.kaggle_slug()
    target = Path(target)
    csv = target / "submission.csv" if target.is_dir() else target
    submission.validate(comp, csv, competitions.find_data_dir(comp, data_dir))  # before any network call
    if warning := credentials_warning():
        echo(warning)
    if comp.submit_via == "notebook":
        from .bundle import for_submission

        bundle = Path(bundle_dir) if bundle_dir else for_submission(comp, csv, fetch=fetch_wheels)
        result = submit_code(slug, bundle, message, comp.daily_limit, wait=wait)
    else:
        result = submit_csv(slug, csv, message, comp.daily_limit, wait=wait)
    submission.record_kaggle(csv, {**result, "message": message, "slug": slug})
    return {**result, "csv": str(csv), "slug": slug}
