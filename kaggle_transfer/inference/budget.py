"""`kt ensemble --budget`: the best blend whose predicted run time fits a notebook's clock. Torch-free.

The cost model follows how kt predicts (inference/predict.py): each test image is decoded once, at the
largest input side of the blend, and resized for each model; every member then runs each of its ONNX
files (fold models) once per test-time view. So a blend costs, per test image,

    decode(largest side among its members) + sum over members of files x views x model time

The members' and decodes' costs are measured and scaled to the target in inference/costs.py.

With up to `EXHAUSTIVE` members every subset is scored (equal weights, the competition metric, cut
points refitted on OOF) and the best that fits is kept; ties go to the cheaper blend, so a tighter
budget never picks a slower blend. Above that, forward selection adds the member that most improves
the score among those that still fit. The chosen members are then weighted greedily (kt ensemble's
greedy) where that scores higher on OOF than equal weights.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import KtError
from .costs import TARGETS, Costs

EXHAUSTIVE = 10  # members up to which every subset is scored
MAX_SECONDS = 1e7  # about 116 days: a budget past it is a typo, not a plan
MAX_PER_IMAGE_S = 1e4  # seconds per image a record may claim (a blend, views included)


Score = Callable[[Sequence[int]], float]  # a blend's OOF score from its members' indices


def frontier(score: Score, n: int, costs: Costs, images: int) -> list[dict[str, Any]]:
    """Every subset (up to EXHAUSTIVE members) with its predicted seconds and OOF score, cheapest first;
    `pareto` marks the blends no cheaper blend scores as well as."""
    if n > EXHAUSTIVE:
        raise KtError(f"scoring every blend of {n} members is too slow; pass at most {EXHAUSTIVE}")
    rows = []
    for k in range(1, n + 1):
        for chosen in itertools.combinations(range(n), k):
            rows.append(
                {
                    "members": list(chosen),
                    "seconds": images * costs.per_image(chosen),
                    "score": float(score(chosen)),
                }
            )
    rows.sort(key=lambda r: (r["seconds"], -r["score"]))
    best = -np.inf
    for row in rows:
        row["pareto"] = row["score"] > best + 1e-12
        best = max(best, row["score"])
    return rows


def select(
    score: Score, n: int, costs: Costs, budget_s: float, images: int
) -> tuple[list[int], list[dict[str, Any]]]:
    """The members (of n) of the best blend predicted to finish within `budget_s` on `images` test
    images, and the frontier. Nothing fits: one line naming the cheapest member's time."""
    cheapest = min(range(n), key=lambda m: costs.per_image([m]))
    if images * costs.per_image([cheapest]) > budget_s:
        raise KtError(
            f"--budget {_hours(budget_s)}: no member fits; the cheapest alone needs "
            f"{_hours(images * costs.per_image([cheapest]))} for {images:,} images on "
            f"{where(costs.target)} "
            "(fewer views, a smaller side, or a faster target)"
        )
    if n <= EXHAUSTIVE:
        rows = frontier(score, n, costs, images)
        fits = [r for r in rows if r["seconds"] <= budget_s]
        best = max(fits, key=lambda r: (r["score"], -r["seconds"]))
        return best["members"], rows
    chosen, rows = [], []  # forward selection among members that still fit
    while True:
        options = [
            (float(score([*chosen, m])), m)
            for m in range(n)
            if m not in chosen and images * costs.per_image([*chosen, m]) <= budget_s
        ]
        if not options or (rows and max(options)[0] <= rows[-1]["score"] + 1e-12):
            break
        best, pick = max(options)
        chosen.append(pick)
        # each step scores higher than the last: every prefix is on the frontier
        seconds = images * costs.per_image(chosen)
        rows.append({"members": sorted(chosen), "seconds": seconds, "score": best, "pareto": True})
    return sorted(chosen), rows


def _hours(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.3g} s"


@dataclass(frozen=True)
class Budget:
    """`--budget 9h --test-images N --target NAME`."""

    seconds: float
    images: int
    target: str = "kaggle-cpu"
    data_dir: Path | None = (
        None  # whose images time decoding (default: where the first run trained)
    )


def where(target: str) -> str:
    return "this machine" if target == "here" else target


def line(record: dict[str, Any]) -> str:
    """The spec's budget record as one line (kt ensemble, kt bundle and kt submit print it)."""
    return (
        f"predicted run: {_hours(record['estimated_s'])} of the {_hours(record['budget_s'])} budget "
        f"for {record['test_images']:,} images on {where(record['target'])} ({record['note']})"
    )


def notebook_line(
    record: dict[str, Any],
    tta: str | None,
    views: int | None,
    *,
    accelerator: str | None = None,
    int8: bool = False,
) -> str:
    """The record's line for a notebook that runs `views` test-time views per model (--tta `tta`;
    None: the recorded ones) on `accelerator`: rescaled, with a note where the estimate assumed
    another kind of machine or fp32 models, and a warning when it passes its budget."""
    notes = []
    if views is not None:
        rescaled = with_views(record, views)
        if rescaled is None:
            notes.append(f"for the members' recorded test-time views, not --tta {tta}")
        else:
            record = rescaled
            notes.append(f"rescaled to --tta {tta}: {views} view(s) per model")
    gpu = record["target"] in ("kaggle-t4", "kaggle-p100")
    if accelerator == "none" and gpu:
        notes.append(
            f"estimated for {record['target']} but this notebook runs on the CPU: rerun kt ensemble "
            "--budget with --target kaggle-cpu"
        )
    elif accelerator == "gpu" and not gpu:
        notes.append(f"estimated for {where(record['target'])}; on a GPU the models run faster")
    if int8:
        notes.append("estimated for the fp32 models; int8 ones run faster on a CPU")
    over = record["estimated_s"] > record["budget_s"]  # e.g. more views than the budget counted
    if over:
        notes.append(
            "over the budget: fewer views or members, or rebuild with kt ensemble --budget"
        )
    warn = "warning: " if over else ""
    return f"{warn}the ensemble's {line(record)}" + "".join(f"; {note}" for note in notes)


def with_views(record: dict[str, Any], views: int) -> dict[str, Any] | None:
    """The record's estimate had every chosen member run `views` test-time views instead of its
    recorded ones (None: a record written before members' views were kept)."""
    chosen, counts = record.get("chosen_members"), record.get("member_views")
    if chosen is None or counts is None:
        return None
    model = [record["member_model_s"][m] for m in chosen]
    decode = record["per_image_s"] - sum(model)
    per_image = decode + sum(s / counts[m] * views for s, m in zip(model, chosen, strict=True))
    return {**record, "per_image_s": per_image, "estimated_s": per_image * record["test_images"]}


def check_record(record: Any, source: str) -> None:
    """A spec's `budget` block, as kt ensemble --budget writes it: checked when the spec is loaded, so
    a hand-edited one is refused before a bundle or a submission starts, never printed as nonsense."""
    if not isinstance(record, dict):
        raise KtError(
            f"{source}: its 'budget' is not a record; rebuild it with kt ensemble --budget"
        )

    def number(key: str, high: float, low: float = 0.0) -> bool:
        return in_range(record.get(key), low, high)

    costs = record.get("member_model_s")
    n = len(costs) if isinstance(costs, list) else 0
    chosen = record.get("chosen_members")
    checks = {
        "target": record.get("target") in TARGETS,
        "budget_s": number("budget_s", MAX_SECONDS) and record["budget_s"] > 0,
        "test_images": isinstance(record.get("test_images"), int) and number("test_images", 1e9, 1),
        "per_image_s": number("per_image_s", MAX_PER_IMAGE_S),
        "estimated_s": number("estimated_s", 1e9 * MAX_PER_IMAGE_S),
        "note": isinstance(record.get("note"), str),
        "member_model_s": n > 0 and all(in_range(v, 0, MAX_PER_IMAGE_S) for v in costs),
        "chosen_members": chosen is None
        or (_indices(chosen, 0, n) and len(set(chosen)) == len(chosen)),
        "member_views": record.get("member_views") is None
        or (_indices(record["member_views"], 1, 1025) and len(record["member_views"]) == n),
    }
    bad = [key for key, ok in checks.items() if not ok]
    if not bad:  # the numbers must also add up as kt ensemble wrote them
        per_image, images = record["per_image_s"], record["test_images"]
        if chosen is not None and per_image < sum(costs[m] for m in chosen) * (1 - 1e-9):
            bad = ["per_image_s"]  # less than its members' models: a negative decode time
        elif abs(record["estimated_s"] - per_image * images) > 1e-6 * max(per_image * images, 1):
            bad = ["estimated_s"]  # not per_image_s x test_images
    if bad:
        raise KtError(
            f"{source}: its budget record's {bad[0]!r} is missing or not valid; "
            "rebuild it with kt ensemble --budget"
        )


def in_range(value: Any, low: float, high: float) -> bool:
    """A real number (not a bool), finite, in [low, high]; an int too large for a float is not."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value)) and low <= value <= high
    except OverflowError:
        return False


def _indices(values: Any, low: int, below: int) -> bool:
    """A non-empty list of whole numbers in [low, below)."""
    return (
        isinstance(values, list)
        and bool(values)
        and all(isinstance(v, int) and not isinstance(v, bool) and low <= v < below for v in values)
    )
