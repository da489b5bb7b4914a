"""Uncertainty measures against closed forms and float64 numpy/scipy references."""

import collections

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bnn_jax import uncertainty

SAMPLE_FUNCTIONS = [
    uncertainty.predictive_entropy,
    uncertainty.expected_entropy,
    uncertainty.bald,
    uncertainty.variation_ratio,
]


def log(p):
    with np.errstate(divide="ignore"):
        return np.log(p)


def random_sample_probs(rng, shape, zero_fraction=0.3):
    """Probabilities ``shape`` with exact zeros (every row keeps at least one positive entry)."""
    weights = rng.gamma(0.5, size=shape) * (rng.uniform(size=shape) > zero_fraction)
    weights[..., 0] += weights.sum(-1) == 0
    return weights / weights.sum(-1, keepdims=True)


def reference(probs):
    """Float64 reference: predictive entropy, expected entropy and BALD from ``[T, batch, C]``."""
    mean = probs.mean(0)
    predictive = scipy.stats.entropy(mean, axis=-1)
    expected = scipy.stats.entropy(probs, axis=-1).mean(0)
    return predictive, expected, predictive - expected


@pytest.mark.parametrize("num_classes", [2, 10, 1000])
def test_entropy_of_uniform_is_log_num_classes(x64, num_classes):
    log_probs = jax.nn.log_softmax(jnp.zeros((3, num_classes)))
    np.testing.assert_allclose(uncertainty.entropy(log_probs), np.log(num_classes), rtol=1e-12)


def test_one_hot_has_exactly_zero_uncertainty_and_finite_gradients():
    one_hot = jnp.log(jnp.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))  # -inf entries
    samples = jnp.stack([one_hot, one_hot])
    assert np.all(np.asarray(uncertainty.entropy(one_hot)) == 0.0)
    for fn in SAMPLE_FUNCTIONS:
        assert np.all(np.asarray(fn(samples)) == 0.0), fn.__name__
    assert np.all(np.asarray(uncertainty.max_probability(one_hot)) == 1.0)
    # BALD goes through both entropies and mean_log_probs; a class that is 0 in every sample too.
    grads = [jax.grad(lambda lp: uncertainty.entropy(lp).sum())(one_hot)]
    grads.append(jax.grad(lambda lp: uncertainty.bald(lp).sum())(samples))
    assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)


def test_disagreeing_one_hot_samples_are_purely_epistemic(x64):
    # Two samples, each certain, of different classes: H = log 2, E[H] = 0, BALD = log 2.
    samples = jnp.log(jnp.array([[[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]]]))
    assert float(uncertainty.expected_entropy(samples)[0]) == 0.0
    np.testing.assert_allclose(uncertainty.predictive_entropy(samples), np.log(2), rtol=1e-15)
    np.testing.assert_allclose(uncertainty.bald(samples), np.log(2), rtol=1e-15)
    np.testing.assert_allclose(uncertainty.variation_ratio(samples), 0.5)


def test_matches_scipy_reference_with_exact_zeros(x64):
    probs = random_sample_probs(np.random.default_rng(0), (7, 20, 5))
    log_probs = jnp.asarray(log(probs))
    predictive, expected, mutual_info = reference(probs)
    np.testing.assert_allclose(
        uncertainty.entropy(log_probs), scipy.stats.entropy(probs, axis=-1), rtol=1e-12, atol=1e-15
    )
    np.testing.assert_allclose(uncertainty.predictive_entropy(log_probs), predictive, rtol=1e-12)
    np.testing.assert_allclose(uncertainty.expected_entropy(log_probs), expected, rtol=1e-12)
    np.testing.assert_allclose(uncertainty.bald(log_probs), mutual_info, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(uncertainty.max_probability(log_probs), probs.max(-1), rtol=1e-14)
    np.testing.assert_allclose(
        uncertainty.mean_log_probs(log_probs), log(probs.mean(0)), rtol=1e-12
    )


def test_variation_ratio_matches_vote_counting_loop():
    rng = np.random.default_rng(1)
    probs = random_sample_probs(rng, (9, 30, 4), zero_fraction=0.0)
    expected = []
    for i in range(probs.shape[1]):
        votes = collections.Counter(int(np.argmax(probs[t, i])) for t in range(probs.shape[0]))
        expected.append(1 - max(votes.values()) / probs.shape[0])
    ratio = uncertainty.variation_ratio(jnp.log(jnp.asarray(probs, jnp.float32)))
    np.testing.assert_allclose(ratio, expected, rtol=1e-6)


@pytest.mark.parametrize(
    "fn", [uncertainty.entropy, uncertainty.max_probability, *SAMPLE_FUNCTIONS]
)
def test_jit_matches_eager(fn):
    probs = random_sample_probs(np.random.default_rng(3), (5, 8, 3))
    log_probs = jnp.log(jnp.asarray(probs, jnp.float32))
    np.testing.assert_allclose(jax.jit(fn)(log_probs), fn(log_probs), rtol=1e-6, atol=1e-7)


@st.composite
def sample_simplices(draw):
    shape = draw(st.sampled_from([(1, 3, 2), (4, 3, 5)]))
    weights = draw(
        hnp.arrays(
            np.float64,
            shape,
            elements=st.floats(0.0, 1.0, allow_subnormal=False)
            | st.sampled_from([0.0, 1.0, 1e-30]),
        )
    )
    assume(np.all(weights.sum(-1) > 0))
    return weights / weights.sum(-1, keepdims=True)


@settings(max_examples=40, deadline=None)
@given(probs=sample_simplices())
def test_properties_on_random_simplices(probs):
    log_probs = jnp.asarray(log(probs), jnp.float32)
    num_classes = probs.shape[-1]
    tol = 1e-5
    entropy = np.asarray(uncertainty.entropy(log_probs))
    predictive = np.asarray(uncertainty.predictive_entropy(log_probs))
    expected = np.asarray(uncertainty.expected_entropy(log_probs))
    mutual_info = np.asarray(uncertainty.bald(log_probs))
    ratio = np.asarray(uncertainty.variation_ratio(log_probs))
    for value in (entropy, predictive, expected, mutual_info, ratio):
        assert np.all(np.isfinite(value))
    assert np.all((entropy >= -tol) & (entropy <= np.log(num_classes) + tol))
    assert np.all(mutual_info >= -tol)
    assert np.all(mutual_info <= predictive + tol)
    assert np.all(expected >= -tol)
    assert np.all((ratio >= 0) & (ratio <= 1 - 1 / min(probs.shape[0], num_classes) + 1e-6))
    np.testing.assert_allclose(predictive, reference(probs)[0], atol=tol)


@pytest.mark.parametrize(
    ("fn", "arg", "match"),
    [
        (
            uncertainty.entropy,
            jnp.array([[0.0, 1.0, 2.0]]),
            "log_probs: expected log-probabilities",
        ),
        (uncertainty.entropy, jnp.array([[0.5, 0.5]]), "log_probs: expected log-probabilities"),
        (uncertainty.entropy, jnp.array([[-jnp.inf, -jnp.inf]]), "log_probs: expected log-prob"),
        (uncertainty.entropy, jnp.array([[jnp.nan, 0.0]]), "log_probs: expected no NaN"),
        (uncertainty.entropy, jnp.zeros((2, 0)), "log_probs: expected non-empty"),
        (uncertainty.entropy, jnp.zeros(()), "log_probs: expected an array with at least 1"),
        (uncertainty.entropy, jnp.zeros((1, 1), jnp.int32), "log_probs: expected a floating"),
        (uncertainty.max_probability, jnp.zeros((1, 2)), "log_probs: expected log-probabilities"),
        (uncertainty.bald, jnp.zeros((1, 1, 2)), "sample_log_probs: expected log-probabilities"),
        (uncertainty.bald, jnp.zeros((0, 2, 1)), "sample_log_probs: expected non-empty"),
        (uncertainty.predictive_entropy, jnp.zeros(1), "sample_log_probs: expected posterior"),
        (uncertainty.expected_entropy, jnp.full((2, 1, 1), jnp.nan), "sample_log_probs: expect"),
        (uncertainty.variation_ratio, jnp.ones((2, 1, 1)), "sample_log_probs: expected log-prob"),
    ],
)
def test_bad_input_raises(fn, arg, match):
    with pytest.raises(ValueError, match=match):
        fn(arg)


@pytest.mark.parametrize("fn", [*SAMPLE_FUNCTIONS, uncertainty.mean_log_probs])
def test_a_batch_of_predictions_is_not_taken_for_samples(fn):
    # [n, C]: n deterministic predictions, once averaged over n as if they were T samples.
    log_probs = jax.nn.log_softmax(jnp.array([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0]]))
    with pytest.raises(ValueError, match=r"expected posterior samples \[T, batch, C\].*\[None\]"):
        fn(log_probs)
    with pytest.raises(ValueError, match="expected posterior samples"):
        jax.jit(fn)(log_probs)  # a shape check: it runs under jit too
    assert fn(log_probs[None]).shape == (3,) + ((2,) if fn is uncertainty.mean_log_probs else ())
