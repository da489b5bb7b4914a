"""Likelihoods: NLL, gradient, Hessian and its square root against autodiff and closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from bnn_jax import losses


def _logits(shape=(4, 3), seed=0):
    return 2.0 * jax.random.normal(jax.random.key(seed), shape, jnp.float64)


def test_categorical_nll_gradient_hessian_match_autodiff(x64):
    lik = losses.categorical()
    logits = _logits()
    labels = jnp.array([0, 2, 1, 2])
    p = np.exp(logits - scipy.special.logsumexp(logits, axis=-1, keepdims=True))
    np.testing.assert_allclose(lik.nll(logits, labels), -np.log(p[np.arange(4), labels]))

    total = lambda f: jnp.sum(lik.nll(f, labels))
    np.testing.assert_allclose(lik.gradient(logits, labels), jax.grad(total)(logits), atol=1e-14)
    per_example_hessian = jax.jit(jax.vmap(jax.hessian(lambda f, y: lik.nll(f[None], y[None])[0])))
    np.testing.assert_allclose(lik.hessian(logits), per_example_hessian(logits, labels), atol=1e-14)
    root = lik.hessian_sqrt(logits)
    np.testing.assert_allclose(root @ np.swapaxes(root, 1, 2), lik.hessian(logits), atol=1e-14)
    # column c is sqrt(p_c) (e_c - p)
    np.testing.assert_allclose(root[1, :, 2], np.sqrt(p[1, 2]) * (np.eye(3)[2] - p[1]))


def test_categorical_is_stable_for_extreme_logits(x64):
    lik = losses.categorical()
    logits = jnp.array([[800.0, 0.0, -800.0]])
    assert np.isfinite(lik.nll(logits, jnp.array([2]))).all()
    assert np.isfinite(lik.hessian_sqrt(logits)).all()
    np.testing.assert_allclose(lik.nll(logits, jnp.array([2])), [1600.0])


def test_categorical_samples_follow_softmax(x64):
    lik = losses.categorical()
    logits = _logits((2, 3), seed=1)
    draws = lik.sample(jax.random.key(0), logits, 20000)
    assert draws.shape == (20000, 2)
    p = jax.nn.softmax(logits)
    freq = np.stack([(draws == c).mean(axis=0) for c in range(3)], axis=-1)
    # binomial standard error sqrt(p(1-p)/n) <= 0.0036; 5 standard errors
    np.testing.assert_allclose(freq, p, atol=0.018)


def test_gaussian_formulas_match_autodiff_and_scipy(x64):
    sigma = 0.7
    lik = losses.gaussian(sigma=sigma)
    means = _logits((5, 2), seed=2)
    targets = _logits((5, 2), seed=3)
    ref = -scipy.stats.norm.logpdf(targets, means, sigma).sum(axis=-1)
    np.testing.assert_allclose(lik.nll(means, targets), ref)
    total = lambda f: jnp.sum(lik.nll(f, targets))
    np.testing.assert_allclose(lik.gradient(means, targets), jax.grad(total)(means))
    np.testing.assert_allclose(lik.hessian(means)[0], np.eye(2) / sigma**2)
    root = lik.hessian_sqrt(means)
    np.testing.assert_allclose(root @ np.swapaxes(root, 1, 2), lik.hessian(means))
    draws = lik.sample(jax.random.key(0), means, 20000)
    np.testing.assert_allclose(draws.mean(0), means, atol=5 * sigma / np.sqrt(20000))
    np.testing.assert_allclose(draws.std(0), sigma, rtol=0.03)


def test_target_checks():
    cat = losses.categorical()
    cat.check_targets((3, 4), jnp.array([0, 3, 1]))
    with pytest.raises(ValueError, match=r"y: expected labels in \[0, 4\)"):
        cat.check_targets((3, 4), jnp.array([0, 4, 1]))
    with pytest.raises(ValueError, match=r"y: expected labels in \[0, 4\)"):
        cat.check_targets((3, 4), jnp.array([0, -1, 1]))
    with pytest.raises(ValueError, match="y: expected integer labels of shape"):
        cat.check_targets((3, 4), jnp.array([0, 1]))
    with pytest.raises(ValueError, match="y: expected an integer dtype"):
        cat.check_targets((3, 4), jnp.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="outputs: expected shape"):
        cat.check_targets((3,), jnp.array([0, 1, 2]))
    reg = losses.gaussian(sigma=1.0)
    with pytest.raises(ValueError, match="y: expected regression targets of shape"):
        reg.check_targets((3, 2), jnp.zeros((3,)))
    with pytest.raises(ValueError, match="y: expected finite"):
        reg.check_targets((1, 2), jnp.array([[0.0, jnp.nan]]))
    with pytest.raises(ValueError, match="y: expected a floating dtype"):
        reg.check_targets((1, 2), jnp.array([[0, 1]]))
    for sigma in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="sigma"):
            losses.gaussian(sigma=sigma)
