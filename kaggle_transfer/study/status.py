"""`kt study status`: where a study stands, read from its storage alone (any machine can ask).

Per study (a grid, or an ablation's levels x seeds): points done, running (on which host, since
when), failed and not yet re-run, left,
and an ETA from the finished trials' durations and the number of hosts working.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from ..errors import KtError
from .grid import point_key as grid_point_key
from .storage import masked, open_storage


def study_status(
    competition: str, storage_url: str, *, now: dt.datetime | None = None
) -> list[dict[str, Any]]:
    import optuna

    storage = open_storage(storage_url)
    summaries = [
        s
        for s in optuna.get_all_study_summaries(storage)
        if ":claim:" not in s.study_name and s.study_name.startswith(f"{competition}-")
    ]
    if not summaries:
        raise KtError(
            f"no study of {competition} in {masked(storage_url)}; start one with kt study run "
            f"{competition}"
        )
    from .ablate import base_name  # pandas and the plots: not for kt --help

    # an ablation run again with more seeds is a new study over the same runs: the latest stands
    latest: dict[str, Any] = {}
    for s in summaries:
        key = base_name(s.study_name) if s.user_attrs.get("kind") == "ablation" else s.study_name
        if key not in latest or s.user_attrs.get("seeds", 0) > latest[key].user_attrs.get(
            "seeds", 0
        ):
            latest[key] = s
    now = now or dt.datetime.now()
    return [
        _one(optuna.load_study(study_name=s.study_name, storage=storage), now)
        for s in latest.values()
    ]


def _one(study, now: dt.datetime) -> dict[str, Any]:
    from optuna.trial import TrialState

    from .ablate import AblationDesign

    ablation = study.user_attrs.get("kind") == "ablation"
    point_key = AblationDesign.key if ablation else grid_point_key
    needed = "level" if ablation else "arch"
    trials = [t for t in study.get_trials(deepcopy=False) if needed in t.params]
    done = {point_key(t.params): t for t in trials if t.state == TrialState.COMPLETE}
    running = {
        point_key(t.params): t
        for t in trials
        if t.state == TrialState.RUNNING and point_key(t.params) not in done
    }
    waiting = (
        {point_key(t.params) for t in trials if t.state == TrialState.WAITING}
        - set(done)
        - set(running)
    )
    failed = (
        {point_key(t.params) for t in trials if t.state == TrialState.FAIL}
        - set(done)
        - set(running)
        - waiting
    )
    points = int(
        study.user_attrs.get("points") or len(done) + len(running) + len(failed) + len(waiting)
    )
    left = max(points - len(done) - len(running), 0)
    durations = [
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t in done.values()
        if t.datetime_complete and t.datetime_start and t.user_attrs.get("trained_from")
    ]
    hosts = {t.user_attrs.get("host") for t in running.values()} or {None}
    eta = (
        (sum(durations) / len(durations)) * (left + len(running) / 2) / len(hosts)
        if durations
        else None
    )
    facts = study.user_attrs
    return {
        "study": study.study_name,
        "what": f"ablation of {facts.get('arch')}: {' | '.join(facts.get('levels', []))}"
        if ablation
        else f"grid {facts.get('grid')} over {', '.join(facts.get('archs') or [])}",
        "points": points,
        "done": len(done),
        "failed": len(failed),
        "left": left,
        "running": [
            {
                "point": k,
                "host": t.user_attrs.get("host", "?"),
                "since": t.datetime_start,
                "minutes": round((now - t.datetime_start).total_seconds() / 60, 1)
                if t.datetime_start
                else None,
            }
            for k, t in sorted(running.items())
        ],
        "eta_minutes": None if eta is None else round(eta / 60, 1),
        "mean_trial_minutes": round(sum(durations) / len(durations) / 60, 1) if durations else None,
    }
