import numpy as np
import pytest

from kaggle_transfer.errors import KtError
from kaggle_transfer.tasks import Task


def test_heads_and_default_losses():
    assert Task("ordinal", 5, "qwk").num_outputs == 1
    assert Task("binary", 2, "roc_auc").num_outputs == 1
    assert Task("multiclass", 5, "accuracy").num_outputs == 5
    assert Task("multilabel", 28, "macro_f1").num_outputs == 28
    assert Task("ordinal", 5, "qwk").default_loss == "smooth_l1"
    assert Task("multiclass", 5, "accuracy").default_loss == "ce"


def test_loss_must_fit_the_task():
    with pytest.raises(KtError, match="does not fit an ordinal task"):
        Task("ordinal", 5, "qwk").check_loss("bce")
    with pytest.raises(KtError, match="unknown task"):
        Task("regression", 1, "qwk")


def test_decode_each_kind():
    raw = np.array([[-0.2], [0.6], [1.49], [3.7], [9.0]])
    assert Task("ordinal", 5, "qwk").decode(raw).tolist() == [0, 1, 1, 4, 4]
    assert Task("ordinal", 5, "qwk").decode(raw, {"cutpoints": [0.7, 1.3, 1.9, 2.5]}).tolist() == [0, 0, 2, 4, 4]
    assert Task("multiclass", 3, "accuracy").decode(np.array([[0, 2, 1], [5, 0, 0]])).tolist() == [1, 0]
    prob = Task("binary", 2, "roc_auc").decode(np.array([[0.0], [100.0]]))
    assert prob.tolist() == pytest.approx([0.5, 1.0])
    multi = Task("multilabel", 3, "macro_f1").decode(np.array([[0.0, -1.0, 2.0]]), {"thresholds": [0.4, 0.2, 0.95]})
    assert multi.tolist() == [[1, 1, 0]]


def test_multilabel_targets_are_multi_hot():
    y = Task("multilabel", 4, "macro_f1").targets([(0, 3), (), (2,)])
    assert y.tolist() == [[1, 0, 0, 1], [0, 0, 0, 0], [0, 0, 1, 0]]


def test_ordinal_fit_then_score_uses_fitted_cuts():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 5, 400)
    raw = 0.5 * y + rng.normal(0, 0.2, 400)
    task = Task("ordinal", 5, "qwk")
    fitted = task.fit(raw, y)
    assert task.score(y, raw, fitted) > task.score(y, raw, {}) + 0.1


def test_ordinal_with_ce_has_a_logit_per_grade_and_decodes_by_argmax():
    """The study's APTOS baseline: cross-entropy over the five grades; QWK still scores it."""
    from sklearn.metrics import cohen_kappa_score

    task = Task("ordinal", 5, "qwk").trained_with("ce")
    assert task.num_outputs == 5 and task.classifies
    assert task.targets([0, 4, 2]).dtype == np.int64
    assert Task("ordinal", 5, "qwk").trained_with(None).num_outputs == 1
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 200)
    logits = rng.normal(size=(200, 5))
    logits[np.arange(200), y] += 1.5
    plain = Task("ordinal", 5, "qwk")  # what prediction holds: the competition's task, told apart by width
    assert plain.fit(logits, y) == {}
    assert plain.decode(logits).tolist() == logits.argmax(1).tolist()
    assert plain.score(y, logits) == pytest.approx(cohen_kappa_score(y, logits.argmax(1), weights="quadratic"))
