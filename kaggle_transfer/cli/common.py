"""What every command family shares: the error handling of the group and the options used by several commands.

Click choices come from the constants the library validates with (config.CHOICES), so a flag and
a recipe key accept the same words.
"""

from __future__ import annotations

import errno
import re
import sys
from dataclasses import MISSING

import click

from ..config import CHOICES, FIELDS, PROVIDER_CHOICES, SECTIONS
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
        # the worker's traceback ends "<module>.KtError: message" (or a subclass's name)
        last = lines[-1] if lines else "unknown error"
        return re.sub(r"^(?:\w+\.)*(?:KtError|BadImage): ", "", last.split("KtError: ", 1)[-1])
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
        except click.UsageError as e:  # a subcommand's flag or argument click refused: one line too
            where = e.ctx.command_path if e.ctx else ctx.command_path
            click.echo(
                f"error: {' '.join(e.format_message().split())} (see {where} --help)", err=True
            )
            sys.exit(2)
        except OSError as e:
            if e.errno not in OS_FIXES:
                raise
            click.echo(f"error: {_one_line(e)}", err=True)
            sys.exit(2)


def choice(key: str) -> click.Choice:
    """The accepted values of config key `key`, as a click choice."""
    return click.Choice(list(CHOICES[key]))


class Section(click.Option):
    """An option that is not a config key but belongs under a --help section (data, output, ...)."""

    def __init__(self, *args, section: str = "other", **kwargs):
        super().__init__(*args, **kwargs)
        self.section = section


data_dir_option = click.option(
    "--data-dir",
    type=click.Path(),
    cls=Section,
    section="data",
    help="Competition files (default: $KT_DATA/<name>, data/<name>, /kaggle/input/<slug>).",
)
progress_option = click.option(
    "--progress/--no-progress",
    default=True,
    cls=Section,
    section="output",
    help="Progress bars on a terminal; logs get one plain line per epoch or step either way.",
)
provider_option = click.option(
    "--provider",
    type=click.Choice(PROVIDER_CHOICES),
    default="auto",
    show_default=True,
    help="onnxruntime's provider (auto: CUDA where a GPU is, else the CPU).",
)
int8_option = click.option(
    "--int8",
    is_flag=True,
    help="Each run's model.int8.onnx (kt export --int8) in place of its model.onnx.",
)
tta_option = click.option(
    "--tta",
    type=choice("tta"),
    default=None,
    help="Test-time views (default: what the models recorded with kt train --tta, else none).",
)
external_dir_option = click.option(
    "--external-dir",
    cls=Section,
    section="data",
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


class Renamed(Section):
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
    return click.option(
        "--name",
        "--label",
        "label",
        cls=Renamed,
        old=("--label",),
        section="output",
        help=help_text,
    )


def _shown(value) -> str | None:
    """A RunConfig default as --help shows it."""
    if value is None or value == []:
        return None
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


class KeyOption(click.Option):
    """A flag that sets one RunConfig key: its help is the key's meaning and its default kt's own,
    both read from the key's field, and it is listed under the key's section in --help."""

    def __init__(self, *args, key: str, section: str | None = None, **kwargs):
        f = FIELDS[key]
        default = f.default if f.default is not MISSING else f.default_factory()
        text = kwargs.pop("help", None) or f.metadata["doc"] + "."
        if _shown(default) is not None:  # kt's default: the flag's own default is None (not given)
            text += f"  [default: {_shown(default)}]"
        kwargs["help"] = text
        if key in CHOICES and "type" not in kwargs and not kwargs.get("is_flag"):
            kwargs["type"] = choice(key)
        kwargs.setdefault("default", None)  # None: not given (the recipe or kt's default holds)
        super().__init__(*args, **kwargs)
        self.section = section or f.metadata["section"]


def key_option(key: str, *decls: str, **kwargs):
    """`@key_option("batch_size", "-b", "--batch-size")`: a KeyOption for config key `key`."""
    return click.option(*decls, key, cls=KeyOption, key=key, **kwargs)


class SectionedCommand(click.Command):
    """--help lists the options in sections (the RunConfig sections, with `recipe` first and
    `output` last), as timm's train.py groups its arguments."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        groups: dict[str, list] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx) if isinstance(param, click.Option) else None
            if record is not None:
                groups.setdefault(getattr(param, "section", "other"), []).append(record)
        for name in ("recipe", *SECTIONS, "output", "other"):
            if groups.get(name):
                with formatter.section(name.capitalize()):
                    formatter.write_dl(groups[name])


threads_option = click.option(
    "--threads",
    "--workers",
    "threads",
    cls=Renamed,
    old=("--workers",),
    type=click.IntRange(min=1),
    default=None,
    help="Image decoding threads  [default: one per CPU this process may use].",
)
