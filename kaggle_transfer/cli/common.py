"""What every command family shares: the error handling of the group and the options used by several commands.

Click choices come from the constants the library validates with (config.CHOICES), so a flag and
a recipe key accept the same words.
"""

from __future__ import annotations

import sys

import click

from ..config import CHOICES
from ..errors import KtError


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


def choice(key: str) -> click.Choice:
    """The accepted values of config key `key`, as a click choice."""
    return click.Choice(list(CHOICES[key]))


data_dir_option = click.option("--data-dir", type=click.Path(),
                               help="Competition files (default: $KT_DATA/<name>, data/<name>, /kaggle/input/<slug>).")
progress_option = click.option("--progress/--no-progress", default=True, help="Progress bars.")
tta_option = click.option("--tta", type=choice("tta"), default=None,
                          help="Test-time views (default: what the models recorded with kt train --tta, else none).")
external_dir_option = click.option("--external-dir", multiple=True, metavar="NAME=DIR",
                                   help="Folder of an external source (repeatable).")


def external_dirs(items: tuple[str, ...]) -> dict[str, str]:
    """`NAME=DIR` items of --external-dir."""
    out = {}
    for item in items:
        if "=" not in item:
            raise KtError(f"--external-dir {item!r} must look like NAME=DIR, e.g. dr2015=/data/dr2015")
        name, path = item.split("=", 1)
        out[name] = path
    return out
