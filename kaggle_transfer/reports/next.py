"""`kt next NAME`: what to try next on a competition, from the evidence and from the user's runs.

The evidence is data: `recipes/<competition>/_next.yaml` lists the interventions the study and the
winners found worth it, in the order the evidence favours, each with when it counts as tried, the
flags that try it and its source. An intervention is tried once a finished run (or group, or
ensemble spec) of the competition has it. What is not tried is offered first, in the file's order,
as a `kt train` command built from the best run so far; what was tried is listed after, ranked by
what it measured on the user's own runs (the best score with it minus the best without).
"""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import competitions, config, recipes, runs
from ..errors import KtError
from ..files import read_yaml

EVIDENCE = "_next.yaml"  # in recipes/<competition>/: not a recipe (recipes.available skips "_")
# `when: {run: KIND}`: any group (--folds or --seeds), a group over every fold of its split, an
# ensemble spec
KINDS = ("group", "folds", "ensemble")
# the keys a suggested command does not carry over from the best run: bookkeeping, not choices
NOT_CARRIED = {"competition", "competition_file", "track_uri", "fold", "seed"}


@dataclass(frozen=True)
class Intervention:
    name: str
    when: dict[str, Any]
    why: str
    source: str
    flags: str | None = None  # appended to kt train
    command: str | None = None  # a whole command instead (GROUP: the user's best groups)


@dataclass(frozen=True)
class Advice:
    intervention: Intervention
    tried: bool
    carry: dict[str, Any]  # the best run's config keys a kt train suggestion keeps
    command: str | None = None  # a whole command (GROUP placeholders filled), else kt train
    effect: float | None = None  # best score with it minus best without, on the user's runs


def evidence(competition: str, path: Path | None = None) -> list[Intervention]:
    """The competition's _next.yaml, checked: a list of entries with name, when, why, source and
    exactly one of try/command; each `when` names config keys (or `run: group|ensemble`)."""
    path = path or recipes.ROOT / competition / EVIDENCE
    if not path.is_file():
        return []
    entries = read_yaml(path, what="kt next's evidence")
    if not isinstance(entries, list):
        raise KtError(f"{path}: expected a list of interventions")
    keys = set(config.FIELDS)
    out = []
    for i, e in enumerate(entries):
        where = f"{path}: entry {i + 1}"
        if not isinstance(e, dict) or not {"name", "when", "why", "source"} <= set(e):
            raise KtError(f"{where}: needs name, when, why and source")
        if ("try" in e) == ("command" in e):
            raise KtError(f"{where}: needs one of try (flags) or command")
        when = e["when"]
        if not isinstance(when, dict) or not when:
            raise KtError(f"{where}: when must map config keys to values")
        for key, want in when.items():
            if key == "run" and want not in KINDS:
                raise KtError(f"{where}: run must be one of {', '.join(KINDS)}")
            if key != "run" and key not in keys:
                raise KtError(f"{where}: {key!r} is not a config key (kt train --list-keys)")
            if isinstance(want, dict) and set(want) != {"at_least"}:
                raise KtError(f"{where}: {key}: the only comparison is at_least")
        out.append(
            Intervention(
                str(e["name"]),
                when,
                str(e["why"]),
                str(e["source"]),
                e.get("try"),
                e.get("command"),
            )
        )
    return out


def _has(cfg: config.RunConfig, key: str, want: Any) -> bool:
    value = getattr(cfg, key)
    if isinstance(want, dict):
        return value is not None and value >= want["at_least"]
    wanted = want if isinstance(want, list) else [want]
    if isinstance(value, list):  # external: [dr2015, ...]
        return any(w in value for w in wanted)
    return value in wanted


def _tried(i: Intervention, cfg: config.RunConfig, kinds: set[str]) -> bool:
    return all(
        want in kinds if key == "run" else _has(cfg, key, want) for key, want in i.when.items()
    )


@dataclass(frozen=True)
class _Finished:
    path: Path
    cfg: config.RunConfig
    score: float
    is_group: bool
    every_fold: bool  # a group over every fold of its split (kt train --folds all)


def _finished(competition: str, root: str | Path | None) -> tuple[list[_Finished], list[str]]:
    """The finished runs and groups, and a line for each folder that could not be read (skipped)."""
    out, skipped = [], []
    for run in runs.competition_runs(competition, root):
        try:
            group = runs.read_group(run)
            metrics = runs.read_metrics(run) if group is None else None
            score = group["mean"] if group is not None else (metrics or {}).get("score")
            if score is None:
                continue
            cfg = runs.load_config(run)
        except KtError as e:
            skipped.append(f"{run.name}: {e}")
            continue
        if cfg.loss is None:  # the task's default loss is what trained
            cfg = dataclasses.replace(cfg, loss=competitions.for_config(cfg).task.default_loss)
        folds = {m["fold"] for m in group["members"]} if group is not None else set()
        every = group is not None and folds == set(range(cfg.folds))
        out.append(_Finished(run, cfg, float(score), group is not None, every))
    return out, skipped


def _carry(i: Intervention, best: _Finished | None) -> dict[str, Any]:
    """The best run's own choices a suggestion keeps (those the intervention sets are its own)."""
    if best is None:
        return {}
    return {
        k: v
        for k, v in config.differences(best.cfg).items()
        if k not in NOT_CARRIED and k not in i.when
    }


def _filled(command: str, groups: list[Path]) -> str:
    """A whole command with its GROUP placeholders replaced by the user's best groups, after the
    kt export each still needs."""
    named = [str(g) for g in groups]
    used, words = [], []
    for p in command.split():
        if p == "GROUP" and named:
            used.append(named.pop(0))
            p = used[-1]
        words.append(shlex.quote(p))
    exports = [f"kt export {shlex.quote(g)}" for g in used if not list(Path(g).rglob(runs.MODEL))]
    return " && ".join([*exports, " ".join(words)])


def advise(competition: str, root: str | Path | None = None) -> tuple[list[Advice], list[str]]:
    """Every intervention of the competition's evidence: the untried first (evidence order), then the
    tried, ranked by the effect they measured on the user's runs; and the folders skipped as
    unreadable."""
    finished, skipped = _finished(competition, root)
    groups = [f.path for f in sorted(finished, key=lambda f: -f.score) if f.is_group]
    kinds = {"group"} if groups else set()
    kinds |= {"folds"} if any(f.every_fold for f in finished) else set()
    kinds |= {"ensemble"} if runs.ensemble_specs(competition, root) else set()
    best = max(finished, key=lambda f: f.score, default=None)
    out = []
    for i in evidence(competition):
        with_it = [f for f in finished if _tried(i, f.cfg, kinds)]
        run_kind = i.when.get("run")
        tried = bool(with_it) or (run_kind is not None and run_kind in kinds)
        effect = None
        without = [f for f in finished if f not in with_it]
        if run_kind is None and with_it and without:
            effect = max(f.score for f in with_it) - max(f.score for f in without)
        carry = _carry(i, best)
        if best is not None and best.every_fold and run_kind is None:
            carry["folds_arg"] = "all"  # the best is a --folds all group: so is the suggestion
        command = _filled(i.command, groups) if i.command else None
        out.append(Advice(i, tried, carry, command, effect))
    untried = [a for a in out if not a.tried]
    tried = sorted((a for a in out if a.tried), key=lambda a: -(a.effect or 0.0))
    return untried + tried, skipped


def first_untried(competition: str, root: str | Path | None = None) -> Advice | None:
    """What kt train and kt report end with: the first untried intervention, or None."""
    try:
        advice, _ = advise(competition, root)
    except KtError:
        return None  # a broken evidence file is kt next's to report, not a training run's
    return next((a for a in advice if not a.tried), None)
