"""OOD metrics against scikit-learn (including ties) and naive threshold loops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sklearn.metrics
from hypothesis import given, settings
from hypothesis import strategies as st

from bnn_jax import ood


def tied_scores(seed, n_in=40, n_out=30, levels=6):
    """Integer scores with many ties; OOD scores shifted up so that the metrics are non-trivial."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, levels, n_in).astype(float), rng.integers(2, levels + 2, n_out) * 1.0


def sklearn_reference(scores_in, scores_out):
    y_out = np.r_[np.zeros(len(scores_in)), np.ones(len(scores_out))]
    scores = np.r_[scores_in, scores_out]
    return (
        sklearn.metrics.roc_auc_score(y_out, scores),
        sklearn.metrics.average_precision_score(y_out, scores),
        sklearn.metrics.average_precision_score(1 - y_out, -scores),
    )


def loop_fpr_at_tpr(scores_in, scores_out, target):
    """Lowest FPR over all thresholds (flag score >= t) whose TPR reaches the target."""
    best = 1.0
    for t in sorted(set(scores_in) | set(scores_out)):
        tpr = sum(s >= t for s in scores_out) / len(scores_out)
        if tpr >= target:
            best = min(best, sum(s >= t for s in scores_in) / len(scores_in))
    return best


@pytest.mark.parametrize("seed", range(3))
def test_auroc_aupr_match_sklearn_with_ties(x64, seed):
    scores_in, scores_out = tied_scores(seed)
    auroc, aupr_out, aupr_in = sklearn_reference(scores_in, scores_out)
    args = jnp.asarray(scores_in), jnp.asarray(scores_out)
    np.testing.assert_allclose(ood.auroc(*args), auroc, rtol=1e-12)
    np.testing.assert_allclose(ood.aupr(*args), aupr_out, rtol=1e-12)
    np.testing.assert_allclose(ood.aupr(*args, positive="in"), aupr_in, rtol=1e-12)


def test_continuous_scores_match_sklearn():
    rng = np.random.default_rng(5)
    scores_in, scores_out = rng.normal(size=40), rng.normal(0.7, 1.3, size=30)
    auroc, aupr_out, aupr_in = sklearn_reference(scores_in, scores_out)
    args = jnp.asarray(scores_in, jnp.float32), jnp.asarray(scores_out, jnp.float32)
    np.testing.assert_allclose(ood.auroc(*args), auroc, rtol=1e-5)
    np.testing.assert_allclose(ood.aupr(*args), aupr_out, rtol=1e-5)
    np.testing.assert_allclose(ood.aupr(*args, positive="in"), aupr_in, rtol=1e-5)


@pytest.mark.parametrize("tpr", [0.95, 0.5, 1.0, 0.01])
@pytest.mark.parametrize("seed", range(2))
def test_fpr_at_tpr_matches_loop_and_roc_curve(x64, seed, tpr):
    scores_in, scores_out = tied_scores(seed, n_out=20)
    expected = loop_fpr_at_tpr(scores_in, scores_out, tpr)
    result = ood.fpr_at_tpr(jnp.asarray(scores_in), jnp.asarray(scores_out), tpr)
    np.testing.assert_allclose(result, expected, rtol=1e-15)
    y_out = np.r_[np.zeros(len(scores_in)), np.ones(len(scores_out))]
    fpr, tpr_curve, _ = sklearn.metrics.roc_curve(
        y_out, np.r_[scores_in, scores_out], drop_intermediate=False
    )
    np.testing.assert_allclose(result, fpr[np.searchsorted(tpr_curve, tpr)], rtol=1e-15)


def test_separable_reversed_and_tied_extremes():
    low, high = jnp.arange(5.0), jnp.arange(5.0) + 10.0
    assert float(ood.auroc(low, high)) == 1.0
    assert float(ood.auroc(high, low)) == 0.0
    assert float(ood.aupr(low, high)) == 1.0
    assert float(ood.aupr(low, high, positive="in")) == 1.0
    assert float(ood.fpr_at_tpr(low, high)) == 0.0
    assert float(ood.fpr_at_tpr(high, low)) == 1.0
    same_in, same_out = jnp.ones(6), jnp.ones(2)
    assert float(ood.auroc(same_in, same_out)) == 0.5
    np.testing.assert_allclose(ood.aupr(same_in, same_out), 2 / 8)
    assert float(ood.fpr_at_tpr(same_in, same_out)) == 1.0


@settings(max_examples=40, deadline=None)
@given(scores=st.lists(st.integers(-3, 3), min_size=8, max_size=8))
def test_auroc_aupr_match_sklearn_property(scores):
    scores = np.asarray(scores, float)
    scores_in, scores_out = scores[:3], scores[3:]
    auroc, aupr_out, aupr_in = sklearn_reference(scores_in, scores_out)
    args = jnp.asarray(scores_in), jnp.asarray(scores_out)
    np.testing.assert_allclose(ood.auroc(*args), auroc, rtol=1e-6)
    np.testing.assert_allclose(ood.aupr(*args), aupr_out, rtol=1e-6)
    np.testing.assert_allclose(ood.aupr(*args, positive="in"), aupr_in, rtol=1e-6)
    np.testing.assert_allclose(ood.auroc(args[1], args[0]), 1 - auroc, rtol=1e-6, atol=1e-7)


def test_ecdf_and_inverse_ecdf_match_counting_loops():
    scores = np.array([0.3, 0.1, 0.3, 0.9, 0.5, 0.3])
    curve = ood.ecdf(jnp.asarray(scores))
    inverse = ood.inverse_ecdf(jnp.asarray(scores))
    np.testing.assert_array_equal(curve.threshold, np.sort(scores).astype(np.float32))
    np.testing.assert_allclose(curve.fraction, [np.mean(scores <= t) for t in np.sort(scores)])
    np.testing.assert_allclose(inverse.fraction, [np.mean(scores > t) for t in np.sort(scores)])
    grid = np.linspace(0.0, 1.0, 11)
    on_grid = ood.inverse_ecdf(jnp.asarray(scores), thresholds=jnp.asarray(grid))
    np.testing.assert_allclose(on_grid.fraction, [np.mean(scores > t) for t in grid], atol=1e-7)
    np.testing.assert_allclose(
        ood.ecdf(jnp.asarray(scores), thresholds=jnp.asarray(grid)).fraction,
        1 - on_grid.fraction,
        atol=1e-7,
    )


@pytest.mark.parametrize(
    "fn",
    [
        ood.auroc,
        ood.aupr,
        ood.fpr_at_tpr,
        lambda a, b: ood.aupr(a, b, positive="in"),
        lambda a, b: ood.ecdf(a, thresholds=b),
        lambda a, b: ood.inverse_ecdf(a, thresholds=b),
    ],
)
def test_jit_matches_eager(fn):
    scores_in, scores_out = tied_scores(7)
    args = jnp.asarray(scores_in, jnp.float32), jnp.asarray(scores_out, jnp.float32)
    for eager, staged in zip(
        jax.tree.leaves(fn(*args)), jax.tree.leaves(jax.jit(fn)(*args)), strict=True
    ):
        np.testing.assert_allclose(eager, staged, rtol=1e-6)


GOOD = jnp.array([0.1, 0.4, 0.2])


@pytest.mark.parametrize(
    ("fn", "args", "kwargs", "match"),
    [
        (ood.auroc, (jnp.zeros(0), GOOD), {}, "scores_in: expected a non-empty 1-D"),
        (ood.auroc, (GOOD, jnp.zeros((2, 2))), {}, "scores_out: expected a non-empty 1-D"),
        (ood.aupr, (GOOD, GOOD.at[1].set(jnp.nan)), {}, "scores_out: expected no NaN"),
        (ood.aupr, (GOOD, GOOD), {"positive": "ood"}, "positive: expected 'out' or 'in'"),
        (ood.fpr_at_tpr, (GOOD, GOOD), {"tpr": 0.0}, "tpr: expected a value in \\(0, 1\\]"),
        (ood.fpr_at_tpr, (GOOD, GOOD), {"tpr": 95}, "tpr: expected a value in"),
        (ood.fpr_at_tpr, (GOOD.at[0].set(jnp.nan), GOOD), {}, "scores_in: expected no NaN"),
        (ood.auroc, (GOOD > 0, GOOD), {}, "scores_in: expected real-valued"),
        (ood.ecdf, (jnp.zeros(0),), {}, "scores: expected a non-empty"),
        (ood.inverse_ecdf, (GOOD,), {"thresholds": jnp.array([jnp.nan])}, "thresholds: expected"),
    ],
)
def test_bad_input_raises(fn, args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fn(*args, **kwargs)
