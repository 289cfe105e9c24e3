"""Where a study lives: an Optuna storage (SQLite beside the runs by default, any SQLAlchemy URL for
several machines), opened with the heartbeat that re-queues a killed worker's trial. The URL's
password never reaches a message (`masked`)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..errors import KtError

# a killed worker's trial is failed and re-queued once its heartbeat is GRACE_S old (tests shorten these)
HEARTBEAT_S = int(os.environ.get("KT_STUDY_HEARTBEAT", 5))
GRACE_S = int(os.environ.get("KT_STUDY_GRACE", 20))


def default_storage(root: Path, competition: str) -> str:
    path = (Path(root) / competition / "study.db").resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def masked(url: str) -> str:
    """The storage URL with its password hidden, for messages and logs."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL sqlalchemy can parse: hide everything after the scheme
        return url.split("://", 1)[0] + "://***"


def open_storage(url: str):
    try:
        return _open_storage(url)
    except ImportError:  # Optuna re-raises the driver's ModuleNotFoundError as a plain ImportError
        raise KtError(
            f"--storage {masked(url)} needs a database driver that is not installed: pip install "
            "'kaggle_transfer[postgres]' for PostgreSQL (or the driver of your database)"
        ) from None
    except Exception as e:  # noqa: BLE001 - sqlalchemy's OperationalError and friends: the server said no
        if type(e).__module__.startswith(("sqlalchemy", "psycopg")):
            reason = str(getattr(e, "orig", e)).strip().splitlines()[0][:200]
            raise KtError(
                f"cannot open the study storage {masked(url)}: {reason}; check that the server runs and "
                "the URL (postgresql://USER:PASSWORD@HOST:PORT/DATABASE)"
            ) from None
        raise


def _open_storage(url: str):
    import warnings

    import optuna
    from optuna.storages import RDBStorage

    kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

    import inspect

    # Optuna 4.9 renamed the argument (the old name warns); 4.0-4.8 know only the old one
    argument = (
        "heartbeat_stale_trial_callback"
        if "heartbeat_stale_trial_callback" in inspect.signature(RDBStorage).parameters
        else "failed_trial_callback"
    )

    def make():
        return RDBStorage(
            url,
            engine_kwargs=kwargs,
            heartbeat_interval=HEARTBEAT_S,
            grace_period=GRACE_S,
            **{argument: retry_callback()(max_retry=3)},
        )

    # Workers started together would each create the schema of a new storage and all but one would fail:
    # on SQLite a file lock serialises that first contact; on a server database a short retry does.
    if url.startswith("sqlite:///"):
        import fcntl

        with open(url.removeprefix("sqlite:///") + ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return make()
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(5):
        try:
            return make()
        except (
            IntegrityError,
            ProgrammingError,
        ):  # another worker is creating the same tables right now
            if attempt == 4:
                raise
            time.sleep(1 + attempt)


def retry_callback():
    """Optuna's re-queue-on-stale-heartbeat callback (renamed in Optuna 4.9; the old name warns)."""
    from optuna import storages

    return (
        getattr(storages, "RetryHeartbeatStaleTrialCallback", None)
        or storages.RetryFailedTrialCallback
    )


def grid_studies(competition: str, storage, grid: str | None = None) -> list[str]:
    """The names of a competition's grid studies (not its ablations) in one storage, of one grid:
    studies of the same grid over other arch lists pool (their points are the same), studies of
    different grids do not mix (name one with --grid)."""
    import optuna

    summaries = [
        s
        for s in optuna.get_all_study_summaries(storage)
        if ":claim:" not in s.study_name
        and s.study_name.startswith(f"{competition}-")
        and s.user_attrs.get("kind", "grid") == "grid"
    ]
    grids = sorted({str(s.user_attrs.get("grid")) for s in summaries})
    if grid is not None:
        if grid not in grids:
            raise KtError(
                f"--grid {grid}: no study of {competition} with that grid; found {', '.join(grids) or 'none'}"
            )
        grids = [grid]
    elif len(grids) > 1:
        raise KtError(
            f"{competition} has studies of {len(grids)} grids ({', '.join(grids)}) in one storage; "
            "report one with --grid NAME"
        )
    return [s.study_name for s in summaries if str(s.user_attrs.get("grid")) in grids]
