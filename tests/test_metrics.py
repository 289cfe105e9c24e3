import numpy as np
import pytest
from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score, roc_auc_score

from kaggle_transfer import metrics
from kaggle_transfer.errors import KtError


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_metrics_match_sklearn(rng):
    y, p = rng.integers(0, 5, 200), rng.integers(0, 5, 200)
    assert metrics.qwk(y, p) == pytest.approx(cohen_kappa_score(y, p, weights="quadratic"))
    assert metrics.accuracy(y, p) == pytest.approx(accuracy_score(y, p))
    yb, score = rng.integers(0, 2, 200), rng.random(200)
    assert metrics.roc_auc(yb, score) == pytest.approx(roc_auc_score(yb, score))
    ym, pm = rng.integers(0, 2, (200, 6)), rng.integers(0, 2, (200, 6))
    assert metrics.macro_f1(ym, pm) == pytest.approx(f1_score(ym, pm, average="macro"))


def test_qwk_known_values():
    y = np.array([0, 1, 2, 3, 4, 2])
    assert metrics.qwk(y, y) == 1.0
    assert metrics.qwk(y, np.zeros_like(y)) == 0.0  # a constant prediction scores 0
    assert metrics.qwk(np.full(4, 2), np.full(4, 2)) == 0.0  # sklearn gives nan here


def test_roc_auc_one_class_is_a_clear_error():
    with pytest.raises(KtError, match="both classes"):
        metrics.roc_auc(np.ones(5), np.random.rand(5))


def test_fitted_cutpoints_beat_rounding_on_held_out_data(rng):
    """Regression outputs that are compressed and shifted, as a model trained with L1 on imbalanced
    grades produces: fitted cut points must recover QWK that rounding loses, on data not fitted on."""
    def sample(n):
        y = rng.choice(5, size=n, p=[0.5, 0.1, 0.25, 0.05, 0.1])
        raw = 0.6 * y + 0.4 + rng.normal(0, 0.35, n)
        return raw, y

    raw_fit, y_fit = sample(2000)
    raw_test, y_test = sample(2000)
    cuts = metrics.fit_cutpoints(raw_fit, y_fit, 5)
    assert list(cuts) == sorted(cuts)
    rounded = metrics.qwk(y_test, metrics.apply_cutpoints(raw_test, [0.5, 1.5, 2.5, 3.5]))
    fitted = metrics.qwk(y_test, metrics.apply_cutpoints(raw_test, cuts))
    assert fitted > rounded + 0.03
    # known answer: the midpoints of 0.6*y+0.4 (0.7, 1.3, 1.9, 2.5) separate the grades as well as
    # any cuts can; fitted cuts must do about as well on data they never saw
    oracle = metrics.qwk(y_test, metrics.apply_cutpoints(raw_test, [0.7, 1.3, 1.9, 2.5]))
    assert fitted > oracle - 0.01


def test_fitted_cutpoints_never_worse_than_rounding_on_fit_data(rng):
    y = rng.integers(0, 5, 300)
    raw = y + rng.normal(0, 0.8, 300)
    cuts = metrics.fit_cutpoints(raw, y, 5)
    assert metrics.qwk(y, metrics.apply_cutpoints(raw, cuts)) >= metrics.qwk(y, np.clip(np.rint(raw), 0, 4))


def test_class_thresholds_improve_macro_f1_and_report_unfittable_classes(rng):
    y = (rng.random((500, 4)) < [0.3, 0.1, 0.05, 0.0]).astype(int)
    prob = np.clip(0.25 * y + rng.normal(0.2, 0.1, y.shape), 0, 1)  # calibrated low: 0.5 misses positives
    thresholds, unfitted = metrics.fit_class_thresholds(prob, y)
    assert unfitted == [3]
    tuned = metrics.macro_f1(y[:, :3], (prob >= thresholds)[:, :3])
    default = metrics.macro_f1(y[:, :3], (prob >= 0.5)[:, :3])
    assert tuned > default + 0.2


def test_unknown_metric_lists_valid_ones():
    with pytest.raises(KtError, match="valid: accuracy"):
        metrics.get_metric("kappa")


@pytest.mark.parametrize("case", ["all grades", "grades missing", "one side constant", "both constant"])
def test_the_searchs_kappa_equals_sklearns(rng, case):
    """The cut-point search scores candidates with its own counts: the same number as cohen_kappa_score,
    whose label set is the values present (a missing grade closes the gap between its neighbours)."""
    from sklearn.metrics import cohen_kappa_score

    for _ in range(25):
        n = int(rng.integers(5, 300))
        y, pred = rng.integers(0, 5, n), rng.integers(0, 5, n)
        if case == "grades missing":
            y, pred = np.where(y == 2, 4, y), np.where(pred == 1, 0, pred)
        elif case == "one side constant":
            pred = np.full(n, 3)
        elif case == "both constant":
            y = pred = np.full(n, 1)
        expected = 0.0 if case == "both constant" else cohen_kappa_score(y, pred, weights="quadratic")
        assert metrics._qwk_of_counts(y, pred) == pytest.approx(expected, abs=1e-12)
        assert metrics._qwk_of_counts(y, pred) == pytest.approx(metrics.qwk(y, pred), abs=1e-12)


def test_class_thresholds_are_the_ones_sklearns_f1_picks(rng):
    from sklearn.metrics import f1_score

    y = (rng.random((150, 6)) < [0.02, 0.1, 0.3, 0.5, 0.9, 0.0]).astype(int)
    prob = np.clip(0.35 * y + rng.random((150, 6)) * 0.7, 0, 1)
    thresholds, unfitted = metrics.fit_class_thresholds(prob, y)
    candidates = np.linspace(0.01, 0.99, 99)
    for k in range(6):
        if k in unfitted:
            continue
        scores = [f1_score(y[:, k], prob[:, k] >= t, zero_division=0) for t in candidates]
        assert thresholds[k] == pytest.approx(candidates[int(np.argmax(scores))])
    assert 5 in unfitted and unfitted == [k for k in range(6) if y[:, k].sum() == 0]


def test_cut_points_sit_between_outputs_so_float_noise_cannot_flip_a_row():
    """The same model in ONNX or int8 gives outputs a few ulps apart: no validation row may change grade."""
    from kaggle_transfer.metrics import apply_cutpoints, fit_cutpoints

    rng = np.random.default_rng(5)
    for _ in range(20):
        y = rng.integers(0, 5, 40)
        raw = (y + rng.normal(0, 0.8, 40)).astype(np.float32).astype(float)
        cuts = fit_cutpoints(raw, y, 5)
        assert not set(cuts) & set(raw.tolist())
        for noise in (1e-7, -1e-7):
            assert np.array_equal(apply_cutpoints(raw + noise, cuts), apply_cutpoints(raw, cuts))
