"""kt ensemble --budget: the selector on recorded member costs and OOF (no timing), against a brute
force written here with scikit-learn; the cost model's shared decode; the command end to end."""

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score

from kaggle_transfer import competitions
from kaggle_transfer.errors import KtError
from kaggle_transfer.inference.budget import select
from kaggle_transfer.inference.costs import Costs, scale

TASK = competitions.get("cct20").task  # multiclass accuracy: argmax of the mean logits
RNG = np.random.default_rng(4)
Y = RNG.integers(0, TASK.num_classes, 300)


def _member(quality: float) -> np.ndarray:
    logits = RNG.normal(0, 1, (len(Y), TASK.num_classes))
    logits[np.arange(len(Y)), Y] += quality  # a better model puts more weight on the truth
    return logits


RAWS = np.stack([_member(q) for q in (0.4, 0.9, 1.3, 1.6, 2.0)])


def SCORE(members):  # kt ensemble's own: equal weights, the competition metric
    from kaggle_transfer.inference.ensemble import _score

    return _score(TASK, RAWS[list(members)], Y, None, method="mean")[0]
COSTS = Costs(model_s=(0.01, 0.03, 0.05, 0.09, 0.2), sides=(224, 224, 384, 384, 512),
              decode_s={224: 0.02, 384: 0.04, 512: 0.06})


def brute_force(budget_s: float, images: int) -> tuple[float, float]:
    """The best equal-weight blend within the budget, by hand: (score, seconds)."""
    best = (-1.0, 0.0)
    for k in range(1, len(RAWS) + 1):
        for chosen in itertools.combinations(range(len(RAWS)), k):
            side = max(COSTS.sides[m] for m in chosen)
            seconds = images * (COSTS.decode_s[side] + sum(COSTS.model_s[m] for m in chosen))
            if seconds <= budget_s:
                score = accuracy_score(Y, RAWS[list(chosen)].mean(axis=0).argmax(axis=1))
                if score > best[0] + 1e-12 or (abs(score - best[0]) <= 1e-12 and seconds < best[1]):
                    best = (score, seconds)
    return best


def test_decode_is_paid_once_at_the_largest_side():
    assert COSTS.per_image([0, 1]) == pytest.approx(0.02 + 0.01 + 0.03)
    assert COSTS.per_image([0, 4]) == pytest.approx(0.06 + 0.01 + 0.2)  # decoded once, at 512
    assert COSTS.per_image([1, 1]) == COSTS.per_image([1])  # a member twice is weight, not time


@pytest.mark.parametrize("hours", [0.05, 0.1, 0.15, 0.25, 0.4, 1.0, 5.0])
def test_the_chosen_blend_is_the_best_that_fits(hours):
    images = 1000
    chosen, rows = select(SCORE, len(RAWS), COSTS, hours * 3600, images)
    seconds = images * COSTS.per_image(chosen)
    assert seconds <= hours * 3600
    score = accuracy_score(Y, RAWS[chosen].mean(axis=0).argmax(axis=1))
    assert (score, seconds) == pytest.approx(brute_force(hours * 3600, images))
    assert len(rows) == 2 ** len(RAWS) - 1  # every blend is on the frontier table


def test_a_tighter_budget_never_picks_a_slower_blend():
    images, picked = 1000, []
    for hours in np.linspace(0.05, 1.0, 40):
        chosen, _ = select(SCORE, len(RAWS), COSTS, hours * 3600, images)
        picked.append(images * COSTS.per_image(chosen))
    assert all(a <= b + 1e-9 for a, b in zip(picked, picked[1:], strict=False))


def test_a_budget_nothing_fits_names_the_cheapest_members_time():
    with pytest.raises(KtError, match=r"the cheapest alone needs 30 s for 1,000 images on this machine"):
        select(SCORE, len(RAWS), COSTS, 10, 1000)


def test_targets_spread_the_measured_cpu_seconds_over_their_cores_and_say_how():
    cpus = len(os.sched_getaffinity(0))
    here = scale(COSTS, "here")  # kt predict decodes on every CPU while the models run on them too
    assert here.model_s[0] == pytest.approx(0.01 / cpus) and here.decode_s[512] == pytest.approx(0.06 / cpus)
    kaggle = scale(COSTS, "kaggle-cpu")  # 2 physical cores (4 hyper-threads) in Kaggle's notebooks
    assert kaggle.model_s[0] == pytest.approx(0.01 / 2) and kaggle.decode_s[224] == pytest.approx(0.02 / 2)
    assert "Kaggle's 2 cores" in kaggle.note
    t4, p100 = scale(COSTS, "kaggle-t4"), scale(COSTS, "kaggle-p100")
    assert t4.decode_s == kaggle.decode_s and "estimate" in t4.note and "8.1 TFLOPS" in t4.note
    # the GPU's share is this CPU's measured rate over the datasheet's: a real number, the same for both
    assert 0 < t4.model_s[0] < 0.01 and t4.model_s[0] / p100.model_s[0] == pytest.approx(9.3 / 8.1, rel=0.3)
    with pytest.raises(KtError, match="--target"):
        scale(COSTS, "tpu")


def test_the_cpu_rate_is_measured_on_onnxruntime():
    from kaggle_transfer.inference.costs import cpu_gflops

    # any x86-64 or arm64 core runs fp32 GEMM between ~1 and ~500 GFLOP/s; a miscounted size is far off
    assert 1 < cpu_gflops(256) < 500


def test_forward_selection_above_the_exhaustive_limit_scores_every_step():
    from kaggle_transfer.inference import budget

    raws = np.stack([_member(q) for q in np.linspace(0.3, 2.0, budget.EXHAUSTIVE + 2)])
    costs = Costs(model_s=tuple(np.linspace(0.01, 0.05, len(raws))), sides=(224,) * len(raws),
                  decode_s={224: 0.02})

    def score(members):
        return accuracy_score(Y, raws[list(members)].mean(axis=0).argmax(axis=1))

    chosen, rows = select(score, len(raws), costs, 3600, 10_000)
    assert rows and all(r["pareto"] for r in rows) and rows[-1]["members"] == chosen
    assert [r["score"] for r in rows] == sorted(r["score"] for r in rows)  # each step scores higher
    assert rows[-1]["score"] == pytest.approx(score(chosen))
    assert score(chosen) >= max(score([m]) for m in range(len(raws)))
    assert 10_000 * costs.per_image(chosen) <= 3600


@pytest.mark.slow
def test_kt_ensemble_under_a_budget_records_the_estimate_and_the_frontier(tmp_path):
    from kaggle_transfer.competitions import synthetic

    data = synthetic.make("aptos", tmp_path / "data", n_train=60, n_test=6, image_size=48)
    root = tmp_path / "runs"

    from click.testing import CliRunner

    from kaggle_transfer.cli import main

    def kt(*args):
        # in this process (no interpreter and torch start per command); nothing cached, nothing fetched
        out = CliRunner(env={"KT_WHEEL_CACHE": str(tmp_path / "wheels")}).invoke(main, [str(a) for a in args])
        assert out.exit_code == 0, out.output[-1500:]
        return out.output

    for size in ("32", "48"):
        kt("train", "aptos", "--data-dir", str(data), "--arch", "test_resnet", "--size", size, "--epochs", "1",
           "--no-pretrained", "-b", "16", "-j", "0", "--runs-root", str(root), "--no-progress")
    members = sorted(str(p) for p in (root / "aptos").glob("2*"))
    for run in members:
        kt("export", run, "--no-progress")
    spec_path = tmp_path / "ens.json"
    # the one command a user runs for the budget, as a whole process
    done = subprocess.run([sys.executable, "-m", "kaggle_transfer", "ensemble", "aptos", *members, "--budget", "9h",
                           "--test-images", "13000", "-o", str(spec_path)], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-1500:]
    out = done.stdout
    assert "predicted run:" in out and "kaggle-cpu" in out


    spec = json.loads(spec_path.read_text())
    record = spec["budget"]
    assert record["estimated_s"] <= record["budget_s"] == 9 * 3600 and record["test_images"] == 13000
    frontier = pd.read_csv(record["frontier"])
    assert len(frontier) == 3 and (tmp_path / "ens_frontier.png").stat().st_size > 0
    # the chosen blend is the frontier's best within the budget, and its members are the spec's
    best = frontier[frontier["seconds"] <= record["budget_s"]].sort_values(["score", "seconds"],
                                                                           ascending=[False, True]).iloc[0]
    assert best["members"] == record["chosen"]
    weighted = {m["run"].rsplit("/", 1)[1] for m in spec["members"] if m["weight"] > 0}
    assert weighted <= set(record["chosen"].split(" + "))
    # the estimate counts the members prediction runs: those the weighting kept
    assert record["chosen_members"] == [k for k, m in enumerate(spec["members"]) if m["weight"] > 0]
    bundled = kt("bundle", "aptos", "--ensemble", str(spec_path), "-o", str(tmp_path / "bundle"), "--user",
                 "kt-tester", "--no-fetch-wheels", "--image-has-onnxruntime", "--cpu-fallback")
    assert "the ensemble's predicted run:" in bundled
    flipped = kt("bundle", "aptos", "--ensemble", str(spec_path), "-o", str(tmp_path / "bundle2"), "--user",
                 "kt-tester", "--no-fetch-wheels", "--image-has-onnxruntime", "--accelerator", "none",
                 "--tta", "flip")
    assert "rescaled to --tta flip: 2 view(s) per model" in flipped
    # more views than the budget counted can overrun it: the line says so
    tight = json.loads(spec_path.read_text())
    record = tight["budget"]
    record["budget_s"] = record["estimated_s"] * (1 + 1e-9)  # fits one view per model, not eight
    (tmp_path / "tight.json").write_text(json.dumps(tight))
    over = kt("bundle", "aptos", "--ensemble", str(tmp_path / "tight.json"), "-o", str(tmp_path / "bundle4"),
              "--user", "kt-tester", "--no-fetch-wheels", "--image-has-onnxruntime", "--accelerator", "none",
              "--tta", "d4")
    assert "warning: the ensemble's predicted run:" in over and "over the budget" in over
    # a hand-edited budget record is refused when the spec loads: before any bundle folder exists
    edited = json.loads(spec_path.read_text())
    edited["budget"]["test_images"] = "13000"
    (tmp_path / "edited.json").write_text(json.dumps(edited))
    out = CliRunner().invoke(main, ["bundle", "aptos", "--ensemble", str(tmp_path / "edited.json"), "-o",
                                    str(tmp_path / "bundle3"), "--no-fetch-wheels", "--image-has-onnxruntime"])
    assert out.exit_code == 2 and "budget record's 'test_images'" in out.output, out.output[-800:]
    assert not (tmp_path / "bundle3").exists()

    def refused(*args, out_path=tmp_path / "x.json"):
        out = CliRunner().invoke(main, ["ensemble", "aptos", *args, "-o", str(out_path)])
        assert out.exit_code == 2 and out.output.strip().count("\n") == 0, out.output[-800:]
        return out.output

    # -o never replaces a file unasked, nor writes a spec over a model or into a folder's temp name
    before = {p: p.read_bytes() for p in (spec_path, tmp_path / "ens_frontier.csv", Path(members[0]) / "model.onnx")}
    assert "pass --overwrite" in refused(*members, "--budget", "9h", out_path=spec_path)
    assert "ending in .json" in refused(*members, out_path=tmp_path / "model.onnx")
    assert "is inside the run" in refused(*members, out_path=Path(members[0]) / "model.onnx")
    assert "is a folder" in refused(*members, "--budget", "9h", out_path=tmp_path)
    assert "is inside the run" in refused(*members, "--overwrite", out_path=Path(members[1]) / "metrics.json")
    assert all(p.read_bytes() == data for p, data in before.items())
    (tmp_path / "fresh.json").write_text("{}")
    kt("ensemble", "aptos", *members, "-o", tmp_path / "fresh.json", "--overwrite")
    assert json.loads((tmp_path / "fresh.json").read_text())["type"] == "ensemble"
    kt("ensemble", "aptos", *members, "-o", spec_path, "--overwrite")  # no --budget: its old frontier goes
    assert not (tmp_path / "ens_frontier.csv").exists() and "budget" not in json.loads(spec_path.read_text())

    assert "no member fits" in refused(*members, "--budget", "1s", "--test-images", "13000000")
    assert "give at most 116 days" in refused(*members, "--budget", "1e99h", "--target", "here")
    assert "Kaggle stops a notebook after 9 h" in refused(*members, "--budget", "32401s")
    assert "Kaggle stops a notebook after 9 h" in refused(*members, "--budget", "10h", "--target", "kaggle-t4")
    assert "no such run folder" in refused(members[0], str(tmp_path / "nonexistent"), "--budget", "9h")
    assert "given twice" in refused(members[0], members[0], "--budget", "9h")
    assert "--target goes with --budget" in refused(*members, "--target", "kaggle-t4")
    assert "--budget ''" in refused(*members, "--budget", "", "--test-images", "10")


RECORD = {"target": "kaggle-cpu", "budget_s": 32400.0, "test_images": 13000, "estimated_s": 1300.0,
          "per_image_s": 0.1, "member_model_s": [0.02, 0.05, 0.01], "member_views": [1, 2, 1],
          "chosen_members": [0, 1], "decode_s": {"224": 0.03}, "note": "CPU-seconds measured here / 2"}


@pytest.mark.parametrize("key, value", [
    ("test_images", "13000"), ("test_images", 0), ("test_images", 1.5), ("estimated_s", "2.3"),
    ("estimated_s", float("nan")), ("budget_s", -5), ("budget_s", float("inf")), ("target", "tpu"),
    ("note", None), ("member_model_s", [0.1, -1, 0.2]), ("member_model_s", []), ("chosen_members", [0, 3]),
    ("chosen_members", [True]), ("member_views", [1, 0, 1]), ("member_views", [1, 1]), ("per_image_s", None),
    ("test_images", 10**40), ("member_model_s", [1e308, 1e308, 0.01]), ("chosen_members", [1, 1]),
    ("budget_s", 1e300), ("estimated_s", 1e308), ("member_views", [1, 2000, 1]),
    ("per_image_s", 0.05),  # less than its chosen members' models: decoding would take negative time
    ("estimated_s", 5.0),  # not per_image_s x test_images
])
def test_a_hand_edited_budget_record_is_refused_with_its_key(key, value):
    from kaggle_transfer.inference.budget import check_record

    check_record(RECORD, "spec.json")  # the record kt ensemble writes passes
    broken = {**RECORD, key: value} if value is not None else {k: v for k, v in RECORD.items() if k != key}
    with pytest.raises(KtError, match=rf"spec.json: its budget record's '{key}' is missing or not valid; rebuild"):
        check_record(broken, "spec.json")


def test_the_estimate_rescales_to_the_notebooks_views():
    from kaggle_transfer.inference.budget import with_views

    # chosen: member 0 (0.02 s, 1 view) and member 1 (0.05 s, 2 views); decoding is the rest: 0.03 s
    flip = with_views(RECORD, 2)
    assert flip["per_image_s"] == pytest.approx(0.03 + 0.04 + 0.05)
    assert flip["estimated_s"] == pytest.approx(13000 * 0.12)
    assert with_views(RECORD, 8)["per_image_s"] == pytest.approx(0.03 + 0.16 + 0.20)
    assert with_views({k: v for k, v in RECORD.items() if k != "member_views"}, 2) is None


def test_a_member_the_weighting_drops_leaves_the_estimate():
    from kaggle_transfer.inference.ensemble import _drop_unweighted

    record = {"test_images": 1000, "chosen_members": [0, 1, 4], "per_image_s": COSTS.per_image([0, 1, 4])}
    record["estimated_s"] = 1000 * record["per_image_s"]
    planned = {"record": record, "chosen": [0, 1, 4], "costs": COSTS}
    _drop_unweighted(planned, np.array([0.5, 0.5, 0, 0, 0.0]))  # greedy gave member 4 nothing
    assert record["chosen_members"] == [0, 1]
    assert record["per_image_s"] == pytest.approx(0.02 + 0.01 + 0.03)  # decoded at 224 now, not 512
    assert record["estimated_s"] == pytest.approx(1000 * (0.02 + 0.01 + 0.03))
