"""What every command family shares: the error handling of the group and the options used by several commands.

Click choices come from the constants the library validates with (config.CHOICES), so a flag and
a recipe key accept the same words.
"""

from __future__ import annotations

import errno
import sys

import click

from ..config import CHOICES
from ..errors import KtError

# what to do about the operating system's refusals a user can cause (full disk, read-only folder, ...)
OS_FIXES = {
    errno.ENOSPC: "free some space or point the output elsewhere (--runs-root, --out-root, $KT_CACHE)",
    errno.EDQUOT: "free some space or point the output elsewhere",
    errno.EROFS: "choose a writable folder (--runs-root, --out-root, $KT_RUNS, $KT_CACHE)",
    errno.EACCES: "choose a folder you may write to, or fix its permissions",
    errno.EPERM: "choose a folder you may write to, or fix its permissions",
    errno.ENOTDIR: "a part of that path is a file, not a folder: choose another path",
    errno.EISDIR: "that path is a folder; name a file",
    errno.ENOENT: "check the path",
    errno.EEXIST: "it already exists; choose another name",
}


def _one_line(e: BaseException) -> str:
    if isinstance(e, KtError):
        # errors raised inside DataLoader workers arrive wrapped with a traceback; keep the message
        lines = [line for line in str(e).splitlines() if line.strip()]
        return lines[-1].split("KtError: ", 1)[-1] if lines else "unknown error"
    where = f": {e.filename}" if getattr(e, "filename", None) else ""
    return f"{e.strerror or type(e).__name__}{where}; {OS_FIXES.get(e.errno, 'check the path and try again')}"


class KtGroup(click.Group):
    """Turns KtError, and the OS errors a user can cause, into one `error: …` line and exit code 2;
    tracebacks are for our own bugs."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KtError as e:
            click.echo(f"error: {_one_line(e)}", err=True)
            sys.exit(2)
        except OSError as e:
            if e.errno not in OS_FIXES:
                raise
            click.echo(f"error: {_one_line(e)}", err=True)
            sys.exit(2)


def choice(key: str) -> click.Choice:
    """The accepted values of config key `key`, as a click choice."""
    return click.Choice(list(CHOICES[key]))


data_dir_option = click.option(
    "--data-dir",
    type=click.Path(),
    help="Competition files (default: $KT_DATA/<name>, data/<name>, /kaggle/input/<slug>).",
)
progress_option = click.option("--progress/--no-progress", default=True, help="Progress bars.")
tta_option = click.option(
    "--tta",
    type=choice("tta"),
    default=None,
    help="Test-time views (default: what the models recorded with kt train --tta, else none).",
)
external_dir_option = click.option(
    "--external-dir",
    multiple=True,
    metavar="NAME=DIR",
    help="Folder of an external source (repeatable).",
)


def external_dirs(items: tuple[str, ...]) -> dict[str, str]:
    """`NAME=DIR` items of --external-dir."""
    out = {}
    for item in items:
        if "=" not in item:
            raise KtError(
                f"--external-dir {item!r} must look like NAME=DIR, e.g. dr2015=/data/dr2015"
            )
        name, path = item.split("=", 1)
        out[name] = path
    return out


class Renamed(click.Option):
    """An option whose old spellings (`old`) still work, for users' scripts, but no longer show in
    --help: one name per idea (`-o/--out` for every output path, `--name` for a folder's name)."""

    def __init__(self, *args, old: tuple[str, ...] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.old = tuple(old)

    def get_help_record(self, ctx: click.Context):
        saved = self.opts
        self.opts = [o for o in saved if o not in self.old]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = saved


def name_option(help_text: str):
    """`--name`: a folder's name after its time stamp (`--label`, its old spelling, still works)."""
    return click.option("--name", "--label", "label", cls=Renamed, old=("--label",), help=help_text)
