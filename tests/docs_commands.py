"""The `kt …` command lines of README.md and docs/*.md, and click's own parser to check them: a doc
and the code cannot disagree on a command, a flag or a choice without a test failing."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click

from kaggle_transfer.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_START = re.compile(r"^(?:\$ )?(?:kt|torchrun .*?-m kaggle_transfer|python -m kaggle_transfer)\s+(.*)$")


def _split(line: str) -> list[list[str]]:
    """`kt a && kt b  # note` → [[a...], [b...]]: the arguments after `kt` of each command."""
    out = []
    for part in re.split(r"\s&&\s", line):
        m = _START.match(part.strip())
        if m:
            out.append(shlex.split(m.group(1), comments=True))
    return out


def block_commands(path: Path) -> list[tuple[str, list[str]]]:
    """Commands in the fenced code blocks of `path`, continuation lines joined: (line, argv)."""
    found, inside, held = [], False, ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        if raw.strip().startswith("```"):
            inside, held = not inside, ""
            continue
        if not inside:
            continue
        line = f"{held} {raw.strip()}".strip() if held else raw.strip()
        if line.endswith("\\"):
            held = line[:-1]
            continue
        held = ""
        found += [(line, argv) for argv in _split(line)]
    return found


def inline_commands(path: Path) -> list[tuple[str, list[str]]]:
    """Commands quoted inline (`kt …`) in the prose of `path`."""
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return [(span, argv) for span in re.findall(r"`((?:kt|python -m kaggle_transfer) [^`]+)`", text)
            for argv in _split(span)]


def _numeric(param: click.Parameter) -> bool:
    return isinstance(param.type, (click.types.IntParamType, click.types.FloatParamType))


def _fill(command: click.Command, argv: list[str]) -> list[str]:
    """Placeholders a reader substitutes (`--size N`, `--tta none|flip|d4`, `[--refit]`, `…`) made
    into values the parser takes; names, paths and flags are left exactly as written."""
    params = {opt: p for p in command.params for opt in (*p.opts, *p.secondary_opts)}
    out: list[str] = []
    for token in argv:
        token = token.strip("[]")
        if token in ("", "…", "...") or token.endswith("..."):
            continue
        prev = params.get(out[-1]) if out else None
        if prev is not None and not prev.is_flag and isinstance(prev, click.Option):
            if "|" in token:
                token = token.split("|")[0]
            if _numeric(prev) and not _converts(prev, token):
                token = next(v for v in ("1", "0.5", "0") if _converts(prev, v))
        out.append(token)
    last = params.get(out[-1]) if out else None
    if isinstance(last, click.Option) and not last.is_flag and not last.count:  # prose: "`kt train -j`"
        out.append(next(v for v in ("1", "0.5", "0") if _converts(last, v)) if _numeric(last) else "X")
    return out


def _converts(param: click.Parameter, value: str) -> bool:
    try:
        param.type.convert(value, param, None)
    except click.BadParameter:
        return False
    return True


def parse(argv: list[str], *, mention: bool = False) -> None:
    """Parse `kt argv` as the CLI would, without running it: the group, then each subcommand in turn.
    Raises click.UsageError (an unknown command or flag, a value outside a choice). A `mention` (a
    command quoted in prose) may leave out its positional arguments."""
    try:
        ctx = main.make_context("kt", list(argv))
        command: click.Command = main
        rest = [*ctx.protected_args, *ctx.args]
        while isinstance(command, click.Group) and rest:
            name, command, rest = command.resolve_command(ctx, rest)
            if isinstance(command, click.Group):
                if mention and not rest:  # "`kt study`": the group named in a sentence
                    return
                ctx = command.make_context(name, rest, parent=ctx)
                rest = [*ctx.protected_args, *ctx.args]
                continue
            command.make_context(name, _fill(command, rest), parent=ctx)
    except click.exceptions.Exit:  # --help, --list-keys, --version
        pass
    except click.MissingParameter:
        if not mention:  # a sentence may name a command without its arguments; an example may not
            raise
