"""The only module that talks to Kaggle, through the official `kaggle` client (imported lazily).

Facts relied on (docs/kaggle.md, kaggle 2.2.5): `import kaggle` authenticates at import and prints an
18-line sign-in banner when it finds no credentials, so the import happens with stdout captured;
`authenticate()` calls exit(1) without credentials; a failed upload makes `competition_submit` return
ref 0 instead of raising; 429/5xx and dropped connections are retried here only where a retry cannot
double an action (listing, polling), and during a long wait for as long as the wait lasts.
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

from ..errors import KtError
from . import archives as archives_mod

CREDENTIALS_HELP = (
    "put kaggle.json (from kaggle.com → Settings → API) in ~/.kaggle/ with chmod 600, or set "
    "KAGGLE_USERNAME and KAGGLE_KEY, or KAGGLE_API_TOKEN"
)
SAFE_RETRIES = 4
MIN_CLIENT = (
    2,
    2,
    4,
)  # the first client that swallows its import-time sign-in and has submission limits
MAX_BACKOFF_S = 120.0


def fixed_poll() -> float | None:
    """KT_POLL_S, the fixed poll interval for a local server standing in for Kaggle (docs/kaggle.md), or
    None: Kaggle itself is polled with a back-off."""
    raw = os.environ.get("KT_POLL_S", "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0.1 <= value <= 600:  # nan fails too
        raise KtError(
            f"KT_POLL_S={raw!r} is not a poll interval; set 0.1 to 600 seconds, or unset it"
        )
    return value


def next_poll(poll_s: float) -> float:
    """The poll interval after `poll_s`: 1.5 times longer, at most 2 min; KT_POLL_S keeps it fixed."""
    fixed = fixed_poll()
    return fixed if fixed is not None else min(poll_s * 1.5, MAX_BACKOFF_S)


def credentials_warning() -> str | None:
    """A warning when kaggle.json is readable by group or others (the key would leak on shared machines)."""
    folder = Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle")
    path = folder / "kaggle.json"
    if path.is_file() and os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        return f"warning: {path} is readable by other users; run: chmod 600 {path}"
    return None


def make_api():
    """An authenticated KaggleApi, or a KtError that says where credentials go. The client's own chatter
    (its sign-in banner at import, a credentials-file warning) is kept off stdout."""
    import contextlib
    import io
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("kaggle")
    except PackageNotFoundError:
        raise KtError(
            "the kaggle package is not installed: pip install 'kaggle>=2.2.4,<3'"
        ) from None
    numbers = tuple(int(p) for p in found.split(".")[:3] if p.isdigit())
    if numbers < MIN_CLIENT:
        raise KtError(f"kaggle {found} is older than kt supports: pip install 'kaggle>=2.2.4,<3'")
    with contextlib.redirect_stdout(io.StringIO()):
        from kaggle.api.kaggle_api_extended import KaggleApi

        api = KaggleApi()
        try:
            api.authenticate()  # a token (KAGGLE_API_TOKEN) is checked with a request: offline it fails here
        except SystemExit:
            raise KtError(f"no Kaggle credentials found: {CREDENTIALS_HELP}") from None
        except (OSError, ValueError) as e:  # requests' errors are OSErrors; HTTPError among them
            raise _explain(e, "", "check the Kaggle credentials") from None
    return api


def _explain(e: Exception, slug: str, what: str) -> KtError:
    """One line for an HTTP or connection failure; never the request's headers or the key."""
    import requests

    if isinstance(e, requests.HTTPError) and e.response is not None:
        code, said = e.response.status_code, _server_message(e.response)
        if code == 401:
            return KtError(
                f"Kaggle rejected the credentials while trying to {what} (401); {CREDENTIALS_HELP}"
            )
        if code == 403 and "/" in slug:  # a dataset or notebook: ownership, not competition rules
            return KtError(
                f"Kaggle refused to {what} (403{': ' + said if said else ''}): {slug} must belong to the "
                "signed-in user (check the username in kaggle.json)"
            )
        if code == 403:
            return KtError(
                f"Kaggle refused to {what} (403{': ' + said if said else ''}): accept the competition's "
                f"rules at https://www.kaggle.com/competitions/{slug}/rules, then try again"
            )
        if code == 404:
            return KtError(
                f"Kaggle found no {'competition ' if '/' not in slug else ''}{slug!r} (404) while trying "
                f"to {what}"
            )
        if code == 429:
            return KtError(
                f"Kaggle is rate-limiting requests (429) while trying to {what}; wait a minute and retry"
            )
        return KtError(
            f"Kaggle answered HTTP {code} while trying to {what}"
            f"{': ' + said if said else '; try again later'}"
        )
    if isinstance(e, (requests.ConnectionError, requests.Timeout)):
        return KtError(f"cannot reach Kaggle to {what} (offline, blocked, or it timed out)")
    if isinstance(
        e,
        (
            requests.exceptions.ChunkedEncodingError,
            requests.exceptions.ContentDecodingError,
            requests.exceptions.JSONDecodeError,
        ),
    ):
        return KtError(
            f"Kaggle's answer was cut short or garbled while trying to {what} ({type(e).__name__}); "
            "try again"
        )
    return KtError(f"the Kaggle client failed to {what}: {type(e).__name__}")


def _server_message(response) -> str:
    """The server's own words from an error body ({"code": N, "message": "..."}), one line."""
    try:
        return " ".join(str(response.json().get("message", "")).split())[:300]
    except Exception:  # noqa: BLE001 - not JSON
        return ""


def retry_after(e: Exception) -> float | None:
    """Seconds a 429/503 answer asks to wait (Retry-After: seconds or an HTTP date), capped at 10 min."""
    from email.utils import parsedate_to_datetime

    response = getattr(e, "response", None)
    value = response.headers.get("Retry-After") if response is not None else None
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), 600.0)


def _transient(e: Exception) -> bool:
    """A failure that a later identical request may not meet: rate limits, server errors, the network
    (a dropped connection, a timeout, a body cut short or garbled on the way)."""
    import requests

    if isinstance(e, requests.HTTPError):
        code = e.response.status_code if e.response is not None else 0
        return code == 429 or code >= 500
    return isinstance(
        e,
        (
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
            requests.exceptions.ContentDecodingError,
            requests.exceptions.JSONDecodeError,
        ),
    )


def call(
    fn: Callable[[], Any],
    slug: str,
    what: str,
    *,
    retry: bool = False,
    until: float | None = None,
    sleep=time.sleep,
    clock=time.time,
    echo: Callable[[str], None] | None = None,
) -> Any:
    """Run one client call. With `retry` (only for calls safe to repeat) back off on 429, 5xx, dropped
    connections and timeouts, honouring Retry-After: SAFE_RETRIES times, or until the clock passes
    `until` (a long wait survives the network for as long as it lasts)."""
    import requests

    attempt = 0
    while True:
        try:
            return fn()
        # requests.JSONDecodeError is one too (before ValueError)
        except requests.RequestException as e:
            pause = retry_after(e) or min(MAX_BACKOFF_S, 2.0**attempt)
            more = attempt + 1 < SAFE_RETRIES if until is None else clock() + pause < until
            if not (retry and _transient(e) and more):
                raise _explain(e, slug, what) from None
            if echo:
                echo(f"{_explain(e, slug, what)}; retrying in {pause:.0f} s")
            sleep(pause)
            attempt += 1
        except OSError as e:
            raise _explain(e, slug, what) from None
        # the client's own refusals: a failed blob upload, a slug it rejects, ...
        except ValueError as e:
            raise KtError(
                f"the Kaggle client could not {what}: {' '.join(str(e).split())[:300]}"
            ) from None


def download(
    slug: str, dest: Path, *, force: bool = False, api=None, quiet: bool = False
) -> dict[str, Any]:
    """Download a competition's files and extract them into `dest`; skipped when already done. An
    interrupted download resumes where it stopped: the archive is kept in `.<dest>.download/` until it
    is extracted, and the client continues it with a Range request; `force` starts over."""
    marker = dest / ".kt-download"
    if marker.is_file() and not force:
        return {"dest": str(dest), "skipped": True, "files": []}
    api = api or make_api()
    partial = dest.parent / f".{dest.name}.download"
    if force:
        shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True, exist_ok=True)
    # force=False lets the client resume a partial archive (its .kaggle-partial marker proves the bytes
    # belong to the same remote file); force=True would ignore them and start from zero
    call(
        lambda: api.competition_download_files(slug, path=str(partial), force=force, quiet=quiet),
        slug,
        "download the competition's files",
    )
    archives = sorted(partial.glob("*.zip"))
    if not archives:
        raise KtError(f"the download of {slug} produced no zip archive in {partial}")
    staging = dest.parent / f".{dest.name}.extracting"  # renamed into place only when complete
    shutil.rmtree(staging, ignore_errors=True)
    try:
        files = [f for a in archives for f in archives_mod.safe_extract(a, staging)]
        (staging / ".kt-download").write_text(f"{slug}\n{time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
        _move_into(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(partial, ignore_errors=True)
    return {"dest": str(dest), "skipped": False, "files": files}


def _move_into(staging: Path, dest: Path) -> None:
    """The extracted tree becomes `dest`; over an earlier download (--force) its entries replace theirs."""
    if not dest.exists():
        staging.rename(dest)
        return
    for entry in staging.iterdir():
        target = dest / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        entry.rename(target)


def _status(sub) -> str:
    return str(getattr(sub, "status", "")).split(".")[-1].upper()


def list_submissions(slug: str, api=None, **retrying) -> list[dict[str, Any]]:
    """Every submission to the competition, newest first: all pages, not the client's first 20."""
    from kagglesdk.competitions.types.competition_api_service import ApiListSubmissionsRequest

    api = api or make_api()

    def page(token: str):
        request = ApiListSubmissionsRequest()
        request.competition_name = slug
        request.page_size = 100
        if token:
            request.page_token = token
        with api.build_kaggle_client() as kaggle:
            response = kaggle.competitions.competition_api_client.list_submissions(request)
        return list(response.submissions or []), response.next_page_token or ""

    subs, token = [], ""
    for _ in range(1000):  # 100 per page: far more than any daily limit allows
        rows, token = call(
            lambda t=token: page(t), slug, "list submissions", retry=True, **retrying
        )
        subs += rows
        if not token:
            break
    return [
        {
            "ref": s.ref,
            "date": str(getattr(s, "date", "")),
            "file": getattr(s, "file_name", ""),
            "message": getattr(s, "description", ""),
            "status": _status(s),
            "public": getattr(s, "public_score", ""),
            "private": getattr(s, "private_score", ""),
            "error": getattr(s, "error_description", ""),
        }
        for s in subs
        if s is not None
    ]


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
            limits = call(
                lambda: api.competition_get_submission_limits(slug),
                slug,
                "read the submission limits",
            )
        except KtError:
            limits = None  # an older server: count ourselves
    if limits is not None and (limits.num_today or limits.num_total or limits.num_allowed_now):
        if limits.num_allowed_now <= 0:
            raise KtError(
                f"Kaggle allows no more submissions to {slug} now ({limits.num_today} today"
                f"{', the total limit is reached' if limits.limited_by_total else ''}); "
                "try again after midnight UTC"
            )
        return
    used = submitted_today(list_submissions(slug, api))
    if used >= daily_limit:
        raise KtError(
            f"{used} submission(s) to {slug} today already: the daily limit is {daily_limit}; "
            "try again after midnight UTC"
        )


def submit_csv(
    slug: str,
    csv: Path,
    message: str,
    *,
    wait: bool = False,
    api=None,
    on_ref: Callable[[dict], None] = lambda r: None,
) -> dict[str, Any]:
    """Upload a validated CSV (the caller has checked today's limit); with `wait`, poll until it is
    scored. Never resubmits on its own."""
    api = api or make_api()
    result = call(
        lambda: api.competition_submit(str(csv), message, slug, quiet=True), slug, "submit"
    )
    ref = getattr(result, "ref", 0)
    if not ref:
        raise KtError(
            f"the upload of {csv.name} to {slug} failed (Kaggle returned no submission): "
            f"{getattr(result, 'message', '') or 'no message'}; nothing was submitted, try again"
        )
    out = {"ref": ref, "message": getattr(result, "message", ""), "status": "PENDING"}
    on_ref(out)
    return _wait(
        slug,
        api,
        out,
        wait,
        poll_s=fixed_poll() or 10,
        timeout_s=3600.0,
        sleep=time.sleep,
    )


def dataset_exists(api, ref: str) -> bool:
    import requests

    try:
        api.dataset_status(ref)
        return True
    except requests.HTTPError as e:
        if e.response is not None and e.response.status_code == 404:
            return False
        raise


def _wait(
    slug: str,
    api,
    out: dict[str, Any],
    wait: bool,
    *,
    poll_s: float,
    timeout_s: float,
    sleep,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Poll until Kaggle scores submission out['ref']; network trouble is retried until the deadline."""
    deadline = time.time() + timeout_s
    while wait and time.time() < deadline:
        try:
            listed = list_submissions(slug, api, until=deadline, sleep=sleep, echo=echo)
        except KtError as e:
            raise KtError(
                f"submission {out['ref']} was created, but following it failed ({e}); it is recorded "
                f"in manifest.json: follow it with kt submissions (do not submit it again)"
            ) from None
        match = next((s for s in listed if str(s["ref"]) == str(out["ref"])), None)
        if match and match["status"] in ("COMPLETE", "ERROR"):
            out.update(
                status=match["status"],
                public=match["public"],
                private=match["private"],
                error=match["error"],
            )
            break
        sleep(poll_s)
        poll_s = next_poll(poll_s)
    return out


def _leaderboard_page(api, slug: str, token: str | None, public: bool):
    """One page of a leaderboard and the next page's token. The client's own request type is used:
    competition_leaderboard_view prints the token instead of returning it, and the server answers the
    private board for a finished competition unless override_public asks for the public one."""
    from kagglesdk.competitions.types.competition_api_service import ApiGetLeaderboardRequest

    request = ApiGetLeaderboardRequest()
    request.competition_name = slug
    request.page_size = 200
    request.override_public = public
    if token:
        request.page_token = token
    with api.build_kaggle_client() as kaggle:
        response = kaggle.competitions.competition_api_client.get_leaderboard(request)
    return list(response.submissions or []), response.next_page_token or None


MEDALS = "https://www.kaggle.com/progression"  # medal rules by number of teams


def medal_lines(teams: int) -> dict[str, int]:
    """The last rank that still earns each medal (Kaggle's progression rules, by team count)."""
    if teams < 250:
        return {
            "gold": max(1, int(teams * 0.10)),
            "silver": int(teams * 0.20),
            "bronze": int(teams * 0.40),
        }
    gold = 10 + int(teams * 0.002)
    if teams < 1000:
        return {"gold": gold, "silver": 50, "bronze": 100}
    return {"gold": gold, "silver": int(teams * 0.05), "bronze": int(teams * 0.10)}


def leaderboard(
    comp, *, api=None, higher_is_better: bool = True, board: str = "public"
) -> dict[str, Any]:
    """Where the user's best score stands on one board, public with public or private with private:
    rank, percentile, medal lines."""
    if board not in ("public", "private"):
        raise KtError(f"--board {board!r} is not valid; choose public or private")
    slug = comp.kaggle_slug()
    api = api or make_api()
    rows, token = [], None
    for _ in range(500):  # pages of 200: far more teams than any image competition had
        page, token = call(
            lambda t=token: _leaderboard_page(api, slug, t, board == "public"),
            slug,
            f"read the {board} leaderboard",
            retry=True,
        )
        rows += [float(r.score) for r in page if r is not None and r.score not in (None, "")]
        if not token:
            break
    rows.sort(reverse=higher_is_better)
    scores = [
        float(s[board])
        for s in list_submissions(slug, api)
        if s["status"] == "COMPLETE" and s[board] not in (None, "")
    ]
    if not rows:
        raise KtError(
            f"the {board} leaderboard of {slug} is empty or hidden"
            + (
                "; the private board appears when the competition ends"
                if board == "private"
                else ""
            )
        )
    best = (max if higher_is_better else min)(scores) if scores else None
    better = (lambda x: x > best) if higher_is_better else (lambda x: x < best)
    rank = 1 + sum(1 for x in rows if better(x)) if best is not None else None
    return {
        "board": board,
        "teams": len(rows),
        "best": best,
        "rank": rank,
        "percentile": round(100 * rank / len(rows), 1) if rank else None,
        "medals": medal_lines(len(rows)),
        "scores_at": {
            m: rows[min(r, len(rows)) - 1] for m, r in medal_lines(len(rows)).items() if r
        },
    }
