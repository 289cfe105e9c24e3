"""The one owner of the run folder: where runs live, what their files are called, how they are read.

runs/<competition>/<stamp>_<label>/          one run, or a --folds run group whose members are run folders
    config.yaml      the resolved RunConfig               save_config / load_config
    run.json         data folder, external folders, ...   write_run_info / read_run_info
    metrics.json     best score, epoch, fitted params     read_metrics
    oof.npz          validation ids, raw outputs, targets save_oof / load_oof
    group.json       (groups) members and their scores    write_group / member_dirs
    model.onnx       written by kt export                 onnx_files
runs/<competition>/ensembles/<stamp>_<method>.json        ensemble_path

Every default root honours its environment variable ($KT_RUNS, $KT_CACHE, $KT_SUBMISSIONS).
Torch-free: prediction, reports and the study read runs through this module too.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from . import config
from .errors import KtError
from .files import atomic_path, inside, read_json, write_csv, write_json

# every file name of a run folder; no other module spells one
CONFIG = "config.yaml"  # the resolved RunConfig
RUN_INFO = "run.json"  # absolute data and external folders, git sha, host
# the completion marker, written last: best score, epoch, fitted parameters
METRICS = "metrics.json"
HISTORY = "history.csv"  # one row per epoch
OOF = "oof.npz"  # validation ids, raw outputs, targets, fitted parameters
GROUP = "group.json"  # a --folds/--seeds group's members and scores
GROUP_REQUEST = "group-request.json"  # what a --folds/--seeds group was asked to train (--resume)
MODEL = "model.onnx"  # written by kt export
MODEL_INT8 = "model.int8.onnx"  # kt export --int8: its calibrated int8 copy
BEST = "best.pt"  # the best epoch's weights (weights only)
LAST = "last.pt"  # the last epoch's full state, for --resume
SWA = "swa.pt"  # the SWA average's weights
TABULAR = "meta.json"  # the fitted encoding of metadata columns (--set meta=true)
HELDOUT = "heldout.json"  # scores on labelled held-out splits (CCT-20's cis_test, trans_test)
TRACKING = "tracking.json"  # the MLflow run id of --track mlflow
PLOTS = "plots"  # the run's PNGs and report.md
LR_FIND = "lr_find.json"  # the learning-rate range test's suggestions (kt lr-find, --lr auto)
LR_CURVE = "lr_find.csv"  # its loss at each rate
ENSEMBLES = (
    "ensembles"  # kt ensemble's specs: <runs root>/<competition>/ensembles/<stamp>_<method>.json
)
LR_FINDS = "lr_find"  # kt lr-find's folders: <runs root>/<competition>/lr_find/<stamp>_<label>
ABLATIONS = (
    "ablations"  # kt study ablate: <runs root>/<competition>/ablations/<study>/<level>/seed<k>
)


# --- roots and names -------------------------------------------------------------------------


def runs_root(given: str | Path | None = None) -> Path:
    return Path(given or os.environ.get("KT_RUNS") or "runs")


def cache_root(given: str | Path | None = None) -> Path:
    return Path(given or os.environ.get("KT_CACHE") or "cache")


def submissions_root(given: str | Path | None = None) -> Path:
    return Path(given or os.environ.get("KT_SUBMISSIONS") or "submissions")


def stamp() -> str:
    """Folder-name stamp, local time, sortable."""
    return time.strftime("%Y%m%d-%H%M%S")


def timestamp() -> str:
    """The `created` field of manifests, specs and ONNX metadata."""
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def slug(text: str, limit: int = 80) -> str:
    """A folder-name-safe form of `text` (--name, archs), at most `limit` characters: file systems
    refuse names over 255 bytes, and the time stamp comes first."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:limit].strip("-.") or "run"


# --- folders ---------------------------------------------------------------------------------


def new_run_dir(root: Path, competition: str, label: str) -> Path:
    """<root>/<competition>/<stamp>_<label>, created exclusively: two runs started in the same second
    get distinct folders (-2, -3, ...), never one shared folder."""
    parent = inside(root, competition, what="competition name")
    parent.mkdir(parents=True, exist_ok=True)
    base = f"{stamp()}_{slug(label)}"
    for n in range(1, 1000):
        path = parent / (base if n == 1 else f"{base}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise KtError(f"could not make a new run folder under {parent}; pass --label")


def new_output_dir(root: Path, competition: str, name: str, *, overwrite: bool = False) -> Path:
    """<root>/<competition>/<name> for a submission, made exclusively: an existing folder (another command
    in the same second with the same label) is refused unless `overwrite`."""
    path = inside(root, competition, name, what="competition name")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(exist_ok=overwrite)
    except FileExistsError:
        raise KtError(
            f"output folder {path} already exists; choose another --label or pass --overwrite"
        ) from None
    return path


def new_lr_find_dir(root: Path, competition: str, label: str) -> Path:
    """<root>/<competition>/lr_find/<stamp>_<label>: beside the runs, never taken for one."""
    return new_run_dir(inside(root, competition, what="competition name"), LR_FINDS, label)


def ensemble_specs(competition: str, root: str | Path | None = None) -> list[Path]:
    """The competition's ensemble specs (kt ensemble's default place), oldest first."""
    folder = runs_root(root) / competition / ENSEMBLES
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def ensemble_path(competition: str, method: str, root: str | Path | None = None) -> Path:
    """Default place of a new ensemble spec: <runs root>/<competition>/ensembles/<stamp>_<method>.json."""
    return runs_root(root) / competition / ENSEMBLES / f"{stamp()}_{method}.json"


# --- files of a run --------------------------------------------------------------------------


def is_run(run_dir: Path) -> bool:
    return (Path(run_dir) / CONFIG).is_file()


def require_finished(run_dir: Path) -> None:
    """A run is trusted only once it finished: metrics.json is written last, atomically, after the fitted
    parameters and the OOF outputs. A killed kt train or kt average has none."""
    if not (Path(run_dir) / METRICS).is_file():
        raise KtError(
            f"{run_dir} did not finish (it has no {METRICS}, which is written last): resume it with "
            f"kt train --resume {run_dir}, or rerun the kt average that made it"
        )


def save_config(run_dir: Path, cfg) -> None:
    config.save(cfg, Path(run_dir) / CONFIG)


def load_config(run_dir: Path, *, what: str = "a run folder"):
    """The run's resolved RunConfig; a folder without one is named with the fix."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise KtError(f"{run_dir} is not {what} (no {CONFIG}); pass runs/<competition>/<run-id>")
    return config.load(path)


def write_run_info(run_dir: Path, info: dict[str, Any]) -> None:
    write_json(Path(run_dir) / RUN_INFO, {**info, "git_sha": git_sha()})


def recorded_data_dir(run_dir: Path, override: Path | None = None) -> Path:
    """The competition files a run was trained on (its run.json), or `override` (--data-dir)."""
    if override is not None:
        if not Path(override).is_dir():
            raise KtError(f"--data-dir {override} is not a folder; give the competition's files")
        return Path(override)
    data = Path(read_run_info(run_dir)["data_dir"])
    if not data.is_dir():
        raise KtError(
            f"{run_dir} was trained on {data}, which is gone; pass --data-dir with the competition's files"
        )
    return data


def read_run_info(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / RUN_INFO
    if not path.is_file():
        raise KtError(f"{run_dir} has no {RUN_INFO}; pass a run folder made by kt train")
    info = read_json(path, what="run record")
    if not isinstance(info, dict):
        raise KtError(
            f"{path} is not a run record (a JSON object); the run record is damaged: start the run again"
        )
    kinds = {"data_dir": str, "external_dirs": dict, "skip_bad_images": bool}
    for key, kind in kinds.items():
        if key not in info:
            raise KtError(f"{path} lacks {key!r}; the run record is damaged: start the run again")
        if not isinstance(info[key], kind):
            raise KtError(
                f"{path}: {key!r} is {info[key]!r}, not a {kind.__name__}; the run record is damaged"
            )
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in info["external_dirs"].items()):
        raise KtError(
            f"{path}: 'external_dirs' must map source names to folders; the run record is damaged"
        )
    return info


def write_metrics(run_dir: Path, result: dict[str, Any]) -> None:
    """The completion marker: written last, atomically; a run without it is not trusted."""
    write_json(Path(run_dir) / METRICS, result)


def write_lr_find(folder: Path, curve, result: dict[str, Any]) -> None:
    """The range test's curve (a DataFrame: lr, loss, smoothed) and its suggestions."""
    write_csv(Path(folder) / LR_CURVE, curve, index=False)
    write_json(Path(folder) / LR_FIND, result)


def read_lr_find(folder: Path) -> dict[str, Any]:
    """lr_find.json, checked: the chosen rate a positive number, the warnings a list of text."""
    found = read_json(Path(folder) / LR_FIND, what="range test record")
    if not (
        isinstance(found, dict)
        and _number(found.get("chosen"))
        and found["chosen"] > 0
        and isinstance(found.get("warnings"), list)
        and all(isinstance(w, str) for w in found["warnings"])
    ):
        raise KtError(
            f"{Path(folder) / LR_FIND} is not a kt range test record; run kt lr-find again"
        )
    return found


def write_history(run_dir: Path, history) -> None:
    """One row per epoch (a DataFrame), replaced atomically after every epoch."""
    write_csv(Path(run_dir) / HISTORY, history)


def read_history(run_dir: Path):
    """history.csv as a DataFrame, checked: numeric epoch, train_loss, val_loss and score columns.
    None when the run has not finished an epoch."""
    import pandas as pd  # deferred: reading a run's scores needs no pandas

    path = Path(run_dir) / HISTORY
    if not path.is_file():
        return None
    try:
        history = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        raise KtError(
            f"{path} is not a readable history (one row per epoch); the run's files are damaged"
        ) from None
    needed = {"epoch", "train_loss", "val_loss", "score"}
    if not needed <= set(history.columns) or not all(
        pd.api.types.is_numeric_dtype(history[c]) for c in needed
    ):
        raise KtError(
            f"{path} lacks numeric {', '.join(sorted(needed))} columns; the run's files are damaged"
        )
    return history


def epochs_done(run_dir: Path) -> int:
    """Epochs the run has trained: the rows of its history.csv (0 before the first epoch ends)."""
    path = Path(run_dir) / HISTORY
    if not path.is_file():
        return 0
    with open(path, encoding="utf-8") as f:
        return max(0, sum(1 for line in f if line.strip()) - 1)


def read_metrics(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return None
    metrics = read_json(path, what="run's metrics")
    score = metrics.get("score") if isinstance(metrics, dict) else None
    if not isinstance(metrics, dict) or (
        score is not None
        and (not isinstance(score, (int, float)) or isinstance(score, bool) or score != score)
    ):
        raise KtError(
            f"{path} is not a run's metrics (an object with a numeric score); the run's metrics is "
            "damaged: train the run again"
        )
    return metrics


def save_oof(
    run_dir: Path, ids, raw: np.ndarray, targets: np.ndarray, *, fitted: dict[str, Any]
) -> None:
    with atomic_path(Path(run_dir) / OOF) as tmp:
        with open(tmp, "wb") as f:
            np.savez(
                f,
                ids=np.asarray(ids, dtype=str),
                raw=raw,
                targets=targets,
                fitted=json.dumps(fitted),
            )


def load_oof(run_dir: Path) -> dict[str, Any] | None:
    """{ids, raw, targets, fitted} of the run's best epoch (pooled for a group); None when absent."""
    path = Path(run_dir) / OOF
    if not path.is_file():
        return None
    try:  # never unpickles: allow_pickle stays False, an object array is an error
        with np.load(path) as oof:
            out = {
                "ids": oof["ids"],
                "raw": oof["raw"],
                "targets": oof["targets"],
                "fitted": json.loads(str(oof["fitted"])),
            }
    except (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError):
        raise KtError(
            f"{path} is damaged (not the ids, raw outputs, targets and fitted parameters kt writes); "
            "train the run again"
        ) from None
    if len(out["ids"]) != len(out["raw"]) or len(out["ids"]) != len(out["targets"]):
        raise KtError(
            f"{path} is damaged: {len(out['ids'])} ids for {len(out['raw'])} outputs; train the run again"
        )
    if not np.issubdtype(out["raw"].dtype, np.number) or not np.isfinite(out["raw"]).all():
        raise KtError(
            f"{path} is damaged: its raw outputs are not all finite numbers; train the run again"
        )
    return out


# --- run groups ------------------------------------------------------------------------------


def load_oofs(run_dirs: list[Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
    """The one OOF loader of blends: (ids, raws (runs, rows, outputs), targets, config of the first),
    aligned by id. Runs and run groups (their pooled OOF) mix; all must cover the same rows."""
    oofs, seen, first = [], set(), None
    for d in run_dirs:
        if not Path(d).is_dir():
            raise KtError(f"{d}: no such run folder")
        if Path(d).resolve() in seen:
            raise KtError(f"{d} is given twice; name each run once (a greedy blend weights it)")
        seen.add(Path(d).resolve())
        require_finished(d)
        name = load_config(member_dirs(Path(d))[0]).competition
        first = first or name
        if name != first:
            raise KtError(
                f"{d} is a {name} run and {run_dirs[0]} a {first} one; blend runs of one competition"
            )
        oof = load_oof(d)
        if oof is None:
            raise KtError(
                f"{d} has no {OOF}; pass run folders or --folds run groups made by kt train"
            )
        oofs.append(oof)
    ids = np.sort(oofs[0]["ids"])
    raws, targets = [], None
    for d, oof in zip(run_dirs, oofs, strict=True):
        if set(oof["ids"]) != set(ids):
            raise KtError(
                f"{d} was validated on other rows than {run_dirs[0]}; blend runs of one split "
                "(the same --split and --folds)"
            )
        order = np.argsort(oof["ids"])
        raws.append(oof["raw"][order])
        targets = oof["targets"][order]
    return ids, np.stack(raws).astype(np.float64), targets, load_config(run_dirs[0])


def oof_owner(model: Path) -> Path:
    """The run folder whose OOF scores a model file: its own run, or the group whose member it is
    (a fold's own OOF covers only its fold; the group's pooled OOF covers every row)."""
    run = Path(model).resolve().parent
    return run.parent if (run.parent / GROUP).is_file() else run


def write_group(group_dir: Path, summary: dict[str, Any]) -> None:
    write_json(Path(group_dir) / GROUP, summary)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def read_group(group_dir: Path) -> dict[str, Any] | None:
    """group.json, checked: members with a folder inside the group, fold, seed and score; the
    group's mean, std and pooled score. None where the folder is not a finished group."""
    path = Path(group_dir) / GROUP
    if not path.is_file():
        return None
    group = read_json(path, what="run group's record")
    members = group.get("members") if isinstance(group, dict) else None
    if not (
        isinstance(members, list)
        and members
        and all(
            isinstance(m, dict)
            and isinstance(m.get("dir"), str)
            and all(_number(m.get(k)) for k in ("fold", "seed", "score"))
            for m in members
        )
        and all(_number(group.get(k)) for k in ("mean", "std", "pooled_score"))
    ):
        raise KtError(
            f"{path} is not a run group's record (members with dir, fold, seed, score; mean, std, "
            "pooled_score); it is damaged: run kt train --resume on the group to rebuild it"
        )
    for m in members:
        inside(group_dir, m["dir"], what=f"{path}'s member dir")
    return group


def member_dirs(run_dir: Path) -> list[Path]:
    """A run folder itself, or each member folder of a --folds run group."""
    run_dir = Path(run_dir)
    group = read_group(run_dir)
    return [run_dir / m["dir"] for m in group["members"]] if group else [run_dir]


def exported_current(run_dir: Path) -> bool:
    """The run's model.onnx exists and was written after its best weights."""
    model, best = Path(run_dir) / MODEL, Path(run_dir) / BEST
    return model.is_file() and best.is_file() and model.stat().st_mtime >= best.stat().st_mtime


def onnx_files(run_dir: Path) -> list[Path]:
    """The exported model of a run, or of every member of a group; missing ones name kt export."""
    files = [d / MODEL for d in member_dirs(run_dir)]
    missing = [f.parent for f in files if not f.is_file()]
    if missing:
        raise KtError(f"{missing[0]} has no {MODEL}; run kt export {run_dir} first")
    return files


def run_folders(competition: str, root: str | Path | None = None) -> list[Path]:
    """Every run and run group folder of a competition, finished or not (those with a config.yaml;
    the study's and pseudo-labels' folders are not runs), by name."""
    folder = runs_root(root) / competition
    return (
        [d for d in sorted(folder.glob("*")) if (d / CONFIG).is_file()] if folder.is_dir() else []
    )


# a run on another machine counts as running while it wrote something this recently
ACTIVE_S = 30 * 60


def _alive(run_dir: Path) -> bool:
    try:
        info = json.loads((run_dir / RUN_INFO).read_text())
        host, pid = info.get("host"), int(info.get("pid"))
    except (OSError, ValueError, TypeError, AttributeError):
        return False
    if host == socket.gethostname():
        # signal 0 asks whether the process exists (PermissionError: yes, another user's)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    newest = max((p.stat().st_mtime for p in run_dir.iterdir() if p.is_file()), default=0)
    return time.time() - newest < ACTIVE_S


def run_state(run_dir: Path) -> str:
    """finished (metrics.json written last), running (its process is alive, or on another host it
    wrote in the last 30 minutes) or stopped (killed: kt train --resume continues it)."""
    run_dir = Path(run_dir)
    if (run_dir / METRICS).is_file():
        return "finished"
    members = (
        [run_dir]
        if (run_dir / RUN_INFO).is_file()
        else [p.parent for p in run_dir.glob(f"*/{RUN_INFO}")]
    )
    return "running" if any(_alive(m) for m in members) else "stopped"


def competition_runs(competition: str, root: str | Path | None = None) -> list[Path]:
    """Every finished run and run group of a competition (those with metrics.json), by name."""
    folder = runs_root(root) / competition
    return (
        [d for d in sorted(folder.glob("*")) if (d / METRICS).is_file()] if folder.is_dir() else []
    )


def git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
