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
        code, said = e.response.status_code, _server_message(e.response)
        if code == 401:
            return KtError(f"Kaggle rejected the credentials while trying to {what} (401); {CREDENTIALS_HELP}")
        if code == 403 and "/" in slug:  # a dataset or notebook: ownership, not competition rules
            return KtError(f"Kaggle refused to {what} (403{': ' + said if said else ''}): {slug} must belong to the "
                           "signed-in user (check the username in kaggle.json)")
        if code == 403:
            return KtError(f"Kaggle refused to {what} (403{': ' + said if said else ''}): accept the competition's "
                           f"rules at https://www.kaggle.com/competitions/{slug}/rules, then try again")
        if code == 404:
            return KtError(f"Kaggle found no {'competition ' if '/' not in slug else ''}{slug!r} (404) while trying "
                           f"to {what}")
        if code == 429:
            return KtError(f"Kaggle is rate-limiting requests (429) while trying to {what}; wait a minute and retry")
        return KtError(f"Kaggle answered HTTP {code} while trying to {what}"
                       f"{': ' + said if said else '; try again later'}")
    if isinstance(e, requests.ConnectionError):
        return KtError(f"cannot reach Kaggle to {what} (offline or blocked?)")
    return KtError(f"the Kaggle client failed to {what}: {type(e).__name__}")


def _server_message(response) -> str:
    """The server's own words from an error body ({"code": N, "message": "..."}), one line."""
    try:
        return " ".join(str(response.json().get("message", "")).split())[:300]
    except Exception:  # noqa: BLE001 - not JSON
        return ""


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
        except ValueError as e:  # the client's own refusals: a failed blob upload, a slug it rejects, ...
            raise KtError(f"the Kaggle client could not {what}: {' '.join(str(e).split())[:300]}") from None


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
    """Refuse before uploading anything when no submission is left today. The client's own count where it
    offers one (competition_get_submission_limits); otherwise today's (UTC) submissions against the
    competition's usual limit."""
    limits = None
    if hasattr(api, "competition_get_submission_limits"):
        try:
            limits = call(lambda: api.competition_get_submission_limits(slug), slug, "read the submission limits")
        except KtError:
            limits = None  # an older server: count ourselves
    if limits is not None and (limits.num_today or limits.num_total or limits.num_allowed_now):
        if limits.num_allowed_now <= 0:
            raise KtError(f"Kaggle allows no more submissions to {slug} now ({limits.num_today} today"
                          f"{', the total limit is reached' if limits.limited_by_total else ''}); "
                          "try again after midnight UTC")
        return
    used = submitted_today(list_submissions(slug, api))
    if used >= daily_limit:
        raise KtError(f"{used} submission(s) to {slug} today already: the daily limit is {daily_limit}; "
                      "try again after midnight UTC")


def submit_csv(slug: str, csv: Path, message: str, daily_limit: int, *, wait: bool = False, api=None,
               on_ref: Callable[[dict], None] = lambda r: None, poll_s: float | None = None, timeout_s: float = 3600.0,
               sleep=time.sleep) -> dict[str, Any]:
    """Upload a validated CSV; with `wait`, poll until it is scored. Never resubmits on its own."""
    api = api or make_api()
    check_daily_limit(slug, daily_limit, api)
    result = call(lambda: api.competition_submit(str(csv), message, slug, quiet=True), slug, "submit")
    ref = getattr(result, "ref", 0)
    if not ref:
        raise KtError(f"the upload of {csv.name} to {slug} failed (Kaggle returned no submission): "
                      f"{getattr(result, 'message', '') or 'no message'}; nothing was submitted, try again")
    out = {"ref": ref, "message": getattr(result, "message", ""), "status": "PENDING"}
    on_ref(out)
    return _wait(slug, api, out, wait, poll_s=poll_s or float(os.environ.get("KT_POLL_S") or 10), timeout_s=timeout_s,
                 sleep=sleep)


def dataset_exists(api, ref: str) -> bool:
    import requests

    try:
        api.dataset_status(ref)
        return True
    except requests.HTTPError as e:
        if e.response is not None and e.response.status_code == 404:
            return False
        raise


def _wait(slug: str, api, out: dict[str, Any], wait: bool, *, poll_s: float, timeout_s: float, sleep) -> dict[str, Any]:
    deadline = time.time() + timeout_s
    while wait and time.time() < deadline:
        try:
            listed = list_submissions(slug, api)
        except KtError as e:
            raise KtError(f"submission {out['ref']} was created, but following it failed ({e}); it is recorded "
                          f"in manifest.json: follow it with kt submissions (do not submit it again)") from None
        match = next((s for s in listed if str(s["ref"]) == str(out["ref"])), None)
        if match and match["status"] in ("COMPLETE", "ERROR"):
            out.update(status=match["status"], public=match["public"], private=match["private"],
                       error=match["error"])
            break
        sleep(poll_s)
        poll_s = min(poll_s * 1.5, 120)
    return out


def _leaderboard_page(api, slug: str, token: str | None):
    """One page of the public leaderboard and the next page's token (competition_leaderboard_view prints
    the token instead of returning it, so the client's own request type is used)."""
    from kagglesdk.competitions.types.competition_api_service import ApiGetLeaderboardRequest

    request = ApiGetLeaderboardRequest()
    request.competition_name = slug
    request.page_size = 200
    if token:
        request.page_token = token
    with api.build_kaggle_client() as kaggle:
        response = kaggle.competitions.competition_api_client.get_leaderboard(request)
    return list(response.submissions or []), response.next_page_token or None


MEDALS = "https://www.kaggle.com/progression"  # medal rules by number of teams


def medal_lines(teams: int) -> dict[str, int]:
    """The last rank that still earns each medal (Kaggle's progression rules, by team count)."""
    if teams < 250:
        return {"gold": max(1, int(teams * 0.10)), "silver": int(teams * 0.20), "bronze": int(teams * 0.40)}
    gold = 10 + int(teams * 0.002)
    if teams < 1000:
        return {"gold": gold, "silver": 50, "bronze": 100}
    return {"gold": gold, "silver": int(teams * 0.05), "bronze": int(teams * 0.10)}


def leaderboard(comp, *, api=None, higher_is_better: bool = True) -> dict[str, Any]:
    """Where the user's best public score stands on the public leaderboard: rank, percentile, medal lines."""
    slug = comp.kaggle_slug()
    api = api or make_api()
    rows, token = [], None
    for _ in range(500):  # pages of 200: far more teams than any image competition had
        page, token = call(lambda t=token: _leaderboard_page(api, slug, t), slug, "read the leaderboard", retry=True)
        rows += [float(r.score) for r in page if r is not None and r.score not in (None, "")]
        if not token:
            break
    rows.sort(reverse=higher_is_better)
    scores = [float(s["public"]) for s in list_submissions(slug, api) if s["status"] == "COMPLETE"
              and s["public"] not in (None, "")]
    if not rows:
        raise KtError(f"the public leaderboard of {slug} is empty or hidden")
    best = (max if higher_is_better else min)(scores) if scores else None
    better = (lambda x: x > best) if higher_is_better else (lambda x: x < best)
    rank = 1 + sum(1 for x in rows if better(x)) if best is not None else None
    return {"teams": len(rows), "best": best, "rank": rank,
            "percentile": round(100 * rank / len(rows), 1) if rank else None, "medals": medal_lines(len(rows)),
            "scores_at": {m: rows[min(r, len(rows)) - 1] for m, r in medal_lines(len(rows)).items() if r}}
