"""`kt study ablate`: which intervention is worth it on my data, measured over paired seeds.

One architecture, a few factors (`--vary KEY=V1,V2`: any config key, or `recipe=paper,top` for a
whole recipe), every combination of their levels (or, with `--one-at-a-time`, the baseline and each
factor changed alone), each trained with seeds 0..N-1 on the same split: `seed` moves the weights'
initialisation, the batch order and the augmentation draws; the validation rows come from
`split_seed`, which no level changes. The first value of each factor is the baseline.

Trials run on the same Optuna storage and workers as `kt study run` (atomic claims, heartbeats,
resume, several machines). The report compares each level with the baseline seed by seed: the mean
paired difference, its 95 % t interval and the paired t-test's p-value; a difference whose interval
contains 0 is reported as within the noise of N seeds.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import competitions, config, runs
from .. import recipes as shipped
from ..errors import KtError
from ..files import atomic_path, write_text
from ..reports import plots
from .archs import arch_options
from .storage import open_storage

RECIPE = "recipe"  # the factor that swaps the whole recipe (-c) of a level
FIXED = {"seed": "--seeds", "competition": "the NAME argument", "arch": "--arch"}
# keys that decide which rows validate: a level with other ones would not be paired with the baseline
SPLIT_KEYS = ("split", "split_file", "split_seed", "folds", "fold", "per_annotation", "keep_empty")
# keys that cannot change a run's score: a --set of them is not part of what the ablation is
NO_EFFECT = ("workers", "device", "track", "track_uri")
REPORT_FILES = ("ablation.csv", "ablation.md", "ablation.png")


@dataclass(frozen=True)
class Factor:
    key: str
    values: tuple[str, ...]


def parse_vary(specs: tuple[str, ...] | list[str]) -> tuple[Factor, ...]:
    """`--vary KEY=V1,V2[,...]` options → factors, each value checked as `--set KEY=V` would be."""
    factors: list[Factor] = []
    for spec in specs:
        key, sep, rest = spec.partition("=")
        key, values = key.strip(), tuple(v.strip() for v in rest.split(",") if v.strip())
        if not sep or not key:
            raise KtError(f"--vary {spec!r} must look like KEY=V1,V2 (e.g. --vary size=256,384)")
        if key in FIXED:
            raise KtError(f"--vary {key}: set it with {FIXED[key]}, not as a factor")
        if key in SPLIT_KEYS:
            raise KtError(
                f"--vary {key}: it changes which rows validate, so levels would not be paired seed "
                "by seed; set it for every level with --set"
            )
        if any(f.key == key for f in factors):
            raise KtError(f"--vary {key} is given twice; list all its values in one --vary")
        parsed = [_parsed(key, value) for value in values] if key != RECIPE else list(values)
        if len(values) < 2 or len({repr(v) for v in parsed}) != len(values):
            raise KtError(f"--vary {spec!r} needs two or more different values, comma-separated")
        factors.append(Factor(key, values))
    if not factors:
        raise KtError("kt study ablate needs at least one --vary KEY=V1,V2")
    return tuple(factors)


def _parsed(key: str, value: str):
    """The value as the config reads it (1e-3 and 0.001 are one level); a typo names --vary."""
    try:
        cfg = config.resolve(sets=[f"{key}={value}"])
    except KtError as e:
        raise KtError(f"--vary {key}={value}: {e}") from None
    return getattr(cfg, key)


def check_sets(factors: tuple[Factor, ...], sets: tuple[str, ...] | list[str]) -> None:
    """A --set of a key that is also a factor would be overridden by every level: refused."""
    given = {s.split("=", 1)[0].strip() for s in sets if "=" in s}
    for f in factors:
        if f.key in given:
            raise KtError(
                f"--set {f.key} and --vary {f.key}: the factor sets it for every level; drop the --set"
            )


@dataclass(frozen=True)
class Ablation:
    """What an ablation trains: plain values, so it crosses to spawned workers."""

    arch: str
    factors: tuple[Factor, ...]
    seeds: int
    one_at_a_time: bool = False
    recipe: str | None = None  # -c for every level (a `recipe` factor's value comes after it)

    def levels(self) -> list[tuple[tuple[str, str], ...]]:
        """Every level as (key, value) pairs; the first is the baseline (each factor's first value)."""
        base = tuple((f.key, f.values[0]) for f in self.factors)
        if not self.one_at_a_time:
            keys = [f.key for f in self.factors]
            return [
                tuple(zip(keys, combo, strict=True))
                for combo in itertools.product(*(f.values for f in self.factors))
            ]
        out = [base]
        for i, f in enumerate(self.factors):
            out += [base[:i] + ((f.key, v),) + base[i + 1 :] for v in f.values[1:]]
        return out

    def labels(self) -> list[str]:
        return [label(level) for level in self.levels()]

    def fingerprint(self, competition: str, sets: tuple[str, ...]) -> str:
        """What makes two ablations the same experiment (the seed count aside: more seeds reuse the
        finished runs of fewer)."""
        kept = [s for s in sets if s.split("=", 1)[0].strip() not in NO_EFFECT]
        what = [
            competition,
            self.arch,
            [(f.key, f.values) for f in self.factors],
            self.one_at_a_time,
            self.recipe,
            kept,
        ]
        return hashlib.sha1(json.dumps(what).encode()).hexdigest()[:8]


def label(level: tuple[tuple[str, str], ...]) -> str:
    return " ".join(f"{k}={v}" for k, v in level)


def study_name(competition: str, ablation: Ablation, sets: tuple[str, ...]) -> str:
    """The Optuna study: the ablation's fingerprint and its seed count (a seed count is part of the
    grid the sampler walks); more seeds make a new study over the same run folders."""
    return f"{competition}-ablate-{ablation.fingerprint(competition, sets)}-s{ablation.seeds}"


def base_name(name: str) -> str:
    """The ablation without its seed count: its run folders and its report folder."""
    return name.rsplit("-s", 1)[0]


class AblationDesign:
    """The ablation as the study runner schedules it: (level index, seed) points."""

    kind = "ablation"

    def __init__(self, competition: str, ablation: Ablation, sets: tuple[str, ...]):
        self.competition, self.ablation, self.sets = competition, ablation, tuple(sets)
        self.name = study_name(competition, ablation, self.sets)
        self.space = {
            "level": list(range(len(ablation.levels()))),
            "seed": list(range(ablation.seeds)),
        }

    def points(self) -> list[dict[str, Any]]:
        return [{"level": lv, "seed": s} for lv in self.space["level"] for s in self.space["seed"]]

    @staticmethod
    def key(p: dict[str, Any]) -> str:
        return f"level{p['level']}|seed{p['seed']}"

    def config(self, p: dict[str, Any]):
        """The run config of one point: recipes (-c, then a `recipe` level), the arch and the seed,
        every trial's --set, then the level's values."""
        comp = competitions.get(self.competition)
        level = self.ablation.levels()[p["level"]]
        chosen = [self.ablation.recipe] + [v for k, v in level if k == RECIPE]
        recipes = [shipped.resolve(comp.name, r) for r in chosen if r]
        values = [f"{k}={v}" for k, v in level if k != RECIPE]
        flags = {
            "competition": comp.name,
            **arch_options(self.ablation.arch),
            "arch": self.ablation.arch,
            "seed": p["seed"],
        }
        return config.resolve(recipes, flags, [*self.sets, *values])

    def run_dir(self, root: Path, p: dict[str, Any]) -> Path:
        base = base_name(self.name)
        level = runs.slug(f"{p['level']}-{label(self.ablation.levels()[p['level']])}")
        return Path(root) / self.competition / runs.ABLATIONS / base / level / f"seed{p['seed']}"

    def facts(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "competition": self.competition,
            "arch": self.ablation.arch,
            "levels": self.ablation.labels(),
            "seeds": self.ablation.seeds,
            "one_at_a_time": self.ablation.one_at_a_time,
            "points": len(self.points()),
        }


# --- the report -------------------------------------------------------------------------------


def _interval(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and its 95 % t interval (nan below two values)."""
    from scipy.stats import t

    mean = float(np.mean(values)) if len(values) else float("nan")
    if len(values) < 2:
        return mean, float("nan"), float("nan")
    half = float(t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / np.sqrt(len(values)))
    return mean, mean - half, mean + half


def verdict(low: float, high: float, n: int) -> str:
    if n < 2:
        return "one paired seed gives no interval: --seeds 3 or more"
    if not np.isfinite(low):
        return "no interval"
    if low <= 0 <= high:
        return f"within noise: the 95% interval contains 0 over {n} seeds"
    return f"{'better' if low > 0 else 'worse'} than the baseline (95% interval excludes 0)"


def summarise(scores: pd.DataFrame, levels: list[str]) -> pd.DataFrame:
    """scores: one row per finished trial (level, seed, score) → one row per level: n, mean ± 95 %
    CI, and the paired difference to the baseline level (the first) with its CI and p-value."""
    from scipy.stats import ttest_rel

    base = scores[scores["level"] == levels[0]].set_index("seed")["score"]
    rows = []
    for k, name in enumerate(levels):
        mine = scores[scores["level"] == name].set_index("seed")["score"].sort_index()
        mean, low, high = _interval(mine.to_numpy(float))
        row = {
            "level": name,
            "baseline": k == 0,
            "n": len(mine),
            "mean": mean,
            "ci_low": low,
            "ci_high": high,
            "std": float(mine.std(ddof=1)) if len(mine) > 1 else float("nan"),
        }
        if k:
            paired = sorted(set(mine.index) & set(base.index))
            a, b = mine[paired].to_numpy(float), base[paired].to_numpy(float)
            diff, d_low, d_high = _interval(a - b)
            p = (
                float(ttest_rel(a, b).pvalue)
                if len(paired) >= 2 and (a - b).std() > 0
                else float("nan")
            )
            row.update(
                paired_n=len(paired),
                diff=diff,
                diff_low=d_low,
                diff_high=d_high,
                p_value=p,
                verdict=verdict(d_low, d_high, len(paired)),
            )
        rows.append(row)
    return pd.DataFrame(rows)


def trial_scores(design_facts: dict[str, Any], trials, reported: str | None) -> pd.DataFrame:
    """(level, seed, score, validation, run_dir) of each finished trial; the score is the study's
    reported one (a held-out split where the competition has one, else validation)."""
    levels = design_facts["levels"]
    rows = []
    for t in trials:
        heldout = t.user_attrs.get("heldout") or {}
        rows.append(
            {
                "level": levels[t.params["level"]],
                "seed": t.params["seed"],
                "score": heldout.get(reported, t.value) if reported else t.value,
                "validation": t.value,
                "run_dir": t.user_attrs.get("run_dir"),
            }
        )
    return pd.DataFrame(rows, columns=["level", "seed", "score", "validation", "run_dir"])


def report(competition: str, storage_url: str, name: str, out_dir: Path) -> dict[str, Any]:
    """ablation.csv (one row per level), ablation.md and ablation.png for one ablation study."""
    import optuna

    comp = competitions.get(competition)
    study = optuna.load_study(study_name=name, storage=open_storage(storage_url))
    facts = study.user_attrs
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    scores = trial_scores(facts, done, comp.evaluation.reported)
    if scores.empty:
        raise KtError(f"the ablation {name} has no finished trial yet")
    table = summarise(scores, facts["levels"])
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "ablation.csv") as tmp:
        table.to_csv(tmp, index=False)
    what = comp.evaluation.reported or "validation"
    metric = f"{comp.task.metric} ({what})"
    plots.ablation(
        table, metric=metric, title=f"{competition}: {facts['arch']}", path=out_dir / "ablation.png"
    )
    lines = [
        f"# Ablation: {competition}, {facts['arch']}",
        "",
        f"{len(done)} of {facts['points']} runs finished; {facts['seeds']} paired seeds per level; "
        f"{metric}. Baseline: `{facts['levels'][0]}`.",
        "",
    ]
    lines += [f"- {line}" for line in level_lines(table)]
    order = {name: k for k, name in enumerate(facts["levels"])}
    shown = scores.assign(order=scores["level"].map(order)).sort_values(["order", "seed"])
    lines += ["", "![ablation](ablation.png)", "", "## Every run", "", "```"]
    lines += [shown.drop(columns=["run_dir", "order"]).to_string(index=False), "```", ""]
    write_text(out_dir / "ablation.md", "\n".join(lines))
    return {"table": table, "scores": scores, "files": [str(out_dir / f) for f in REPORT_FILES]}


def _num(value: float, fmt: str) -> str:
    return format(value, fmt) if np.isfinite(value) else "n/a"


def level_lines(table: pd.DataFrame) -> list[str]:
    """One line per level: mean [95 % CI] (n); against the baseline: difference [CI], p, verdict."""
    out = []
    for row in table.itertuples():
        line = (
            f"`{row.level}`: {_num(row.mean, '.4f')} [{_num(row.ci_low, '.4f')}, "
            f"{_num(row.ci_high, '.4f')}] (n {row.n})"
        )
        if not row.baseline:
            p = _num(row.p_value, ".3g")
            if np.isfinite(row.diff_low) and not np.isfinite(row.p_value):
                p = "n/a (the same difference on every seed)"
            line += (
                f"; vs baseline {_num(row.diff, '+.4f')} [{_num(row.diff_low, '+.4f')}, "
                f"{_num(row.diff_high, '+.4f')}], p {p}: {row.verdict}"
            )
        out.append(line)
    return out


def report_dir(root: Path, competition: str, name: str) -> Path:
    """One report folder per ablation, whatever its seed count: the newest report replaces it."""
    return Path(root) / competition / "ablation-report" / base_name(name)
