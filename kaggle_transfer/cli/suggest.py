"""kt next's suggestions as commands: the last line of kt train and kt report, and kt next's list.

A suggestion is printed as the kt train command a user would type, so it is built from kt train's
own options (passed in as `params`: this module sits below the command that uses it)."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from .. import runs
from .common import KeyOption


def suggest_next(run_dir: Path, params: list[click.Parameter]) -> None:
    """The last line of kt train and kt report on a run or group: kt next's first suggestion."""
    from ..reports.next import first_untried

    if runs.is_run(run_dir):
        competition, root = runs.load_config(run_dir).competition, run_dir.parent.parent
        advice = first_untried(competition, root)
        if advice is not None:
            command = suggested_command(competition, advice, params, root)
            click.echo(
                f"try next ({advice.intervention.name}): {command}  (kt next lists the rest)"
            )


def suggested_command(
    competition: str, advice, params: list[click.Parameter], root: str | Path | None = None
) -> str:
    """A kt next suggestion as a command: a whole command, or kt train with the best run's choices
    as kt train's own flags (--set for keys without one) and the intervention's flags last; with
    --runs-root when the runs are not in the default root."""
    if advice.command:
        return advice.command
    flags = {p.name: p for p in params if isinstance(p, KeyOption)}
    words = ["kt", "train", competition]
    for key, value in advice.carry.items():
        option = flags.get(key)
        shown = ",".join(map(str, value)) if isinstance(value, list) else value
        if isinstance(value, bool):
            shown = str(value).lower()
        if key == "folds_arg":
            words += ["--folds", str(value)]
        elif option is not None and option.is_bool_flag and option.secondary_opts:
            words.append(option.opts[-1] if value else option.secondary_opts[-1])
        elif option is not None and not option.is_flag and not option.multiple:
            words += [option.opts[-1], str(shown)]
        else:
            words += ["--set", f"{key}={shown}"]
    if root is not None and Path(root).resolve() != runs.runs_root().resolve():
        words += ["--runs-root", str(root)]
    return " ".join(shlex.quote(w) for w in words) + " " + advice.intervention.flags
