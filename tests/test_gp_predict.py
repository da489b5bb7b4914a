"""Predictive moments, probabilities, entropy and BALD against quadrature and dense algebra."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import log_ndtr

from bnn_jax import data, gp, uncertainty

Z = np.linspace(-12.0, 12.0, 4001)


def _binary_entropy_of_probit(z):
    """h(Phi(z)) in nats, from log Phi(z) and log Phi(-z)."""
    log_p, log_q = log_ndtr(z), log_ndtr(-z)
    return -(np.exp(log_p) * log_p + np.exp(log_q) * log_q)


def _quadrature(fn, mean, var):
    """E[fn(f)] for f ~ N(mean, var), elementwise: trapezoid rule in z = (f - mean) / sd on a
    grid fine enough for the narrow bump of h(Phi(f)) even at sd = 10."""
    f = mean[..., None] + np.sqrt(var)[..., None] * Z
    density = np.exp(-0.5 * Z**2) / np.sqrt(2 * np.pi)
    return np.trapezoid(density * fn(f), Z, axis=-1)


def _grid():
    mean, var = np.meshgrid(np.linspace(-6, 6, 31), np.geomspace(1e-4, 100, 19))
    return mean.ravel(), var.ravel()


def test_houlsby_bald_matches_quadrature(x64):
    mean, var = _grid()
    entropy = _binary_entropy_of_probit(mean / np.sqrt(1 + var))
    reference = entropy - _quadrature(_binary_entropy_of_probit, mean, var)
    bald = np.asarray(gp.houlsby_bald(jnp.asarray(mean), jnp.asarray(var)))
    np.testing.assert_allclose(bald, reference, atol=5e-3)
    assert np.all(bald < np.asarray(gp.predictive_entropy(gp.probit(), mean, var)))
    # The notebook's exponent, -mean^2 / (2 var + C^2), misses the same tolerance.
    c2 = np.pi * np.log(2) / 2
    notebook = entropy - np.log(2) * np.sqrt(c2 / (var + c2)) * np.exp(-(mean**2) / (2 * var + c2))
    assert np.max(np.abs(notebook - reference)) > 5e-2


def test_monte_carlo_bald_matches_quadrature_and_is_below_entropy(x64):
    mean = jnp.array([-3.0, -0.5, 0.0, 0.7, 2.0, 4.0])
    var = jnp.array([0.01, 4.0, 1.0, 25.0, 0.5, 9.0])
    num_samples = 100_000
    monte_carlo_bald = jax.jit(gp.monte_carlo_bald, static_argnames=("likelihood", "num_samples"))
    mc = np.asarray(
        monte_carlo_bald(gp.probit(), mean, var, jax.random.key(1), num_samples=num_samples)
    )
    m, v = np.asarray(mean), np.asarray(var)
    reference = _binary_entropy_of_probit(m / np.sqrt(1 + v)) - _quadrature(
        _binary_entropy_of_probit, m, v
    )
    np.testing.assert_allclose(mc, reference, atol=4 * np.log(2) / np.sqrt(num_samples))
    np.testing.assert_allclose(mc, gp.houlsby_bald(mean, var), atol=5e-3)
    entropy = np.asarray(gp.predictive_entropy(gp.probit(), mean, var))
    assert np.all((mc >= -1e-12) & (mc <= entropy))


@pytest.mark.parametrize("likelihood", ["probit", "logistic"])
def test_predictive_probabilities_and_entropy(x64, likelihood):
    mean, var = _grid()
    lik = getattr(gp, likelihood)()
    log_probs = np.asarray(gp.predictive_log_probs(lik, jnp.asarray(mean), jnp.asarray(var)))
    np.testing.assert_allclose(np.exp(log_probs).sum(-1), 1.0, rtol=1e-12)
    sigmoid = (
        (lambda f: np.exp(log_ndtr(f)))
        if likelihood == "probit"
        else (lambda f: 1 / (1 + np.exp(-f)))
    )
    exact = _quadrature(sigmoid, mean, var)
    # exact for the probit; MacKay's approximation for the logistic
    np.testing.assert_allclose(
        np.exp(log_probs[:, 1]), exact, atol=1e-10 if likelihood == "probit" else 2e-2
    )
    p = np.exp(log_probs)
    entropy = -np.sum(p * log_probs, -1)
    np.testing.assert_allclose(gp.predictive_entropy(lik, mean, var), entropy, rtol=1e-12)


def test_latent_predictive_at_the_training_inputs_is_the_laplace_posterior(x64):
    """At x_train: mean = f_hat and var = diag((K^-1 + W)^-1) = diag(K - K (K + W^-1)^-1 K)."""
    ds = data.load("toy2d", seed=1)
    x, y = np.asarray(ds.x_train[:30], np.float64), ds.y_train[:30]
    kernel, lik = gp.sum_kernel(gp.arcsine_kernel(), gp.rbf_kernel()), gp.probit()
    posterior = gp.fit(kernel, kernel.init(), x, y, likelihood=lik)
    mean, var = gp.latent_predictive(kernel, posterior, x)
    gram = np.asarray(kernel.matrix(kernel.init(), x, x))
    w = np.asarray(posterior.mode.sqrt_w) ** 2
    covariance = gram - gram @ np.linalg.solve(gram + np.diag(1 / w), gram)  # K is near-singular
    np.testing.assert_allclose(mean, posterior.mode.f, atol=1e-8)
    np.testing.assert_allclose(var, np.diag(covariance), rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="x: expected 2 features"):
        gp.latent_predictive(kernel, posterior, x[:, :1])
    with pytest.raises(ValueError, match="x: expected finite values"):
        gp.latent_predictive(kernel, posterior, np.full((2, 2), np.nan))


def test_joint_predictive_and_function_draws_match_the_dense_posterior(x64):
    """Joint covariance at x_train is K - K (K + W^-1)^-1 K in full; function draws have it as
    their sample covariance."""
    ds = data.load("toy2d", seed=1)
    x, y = np.asarray(ds.x_train[:20], np.float64), ds.y_train[:20]
    kernel, lik = gp.sum_kernel(gp.arcsine_kernel(), gp.rbf_kernel()), gp.probit()
    posterior = gp.fit(kernel, kernel.init(), x, y, likelihood=lik)
    mean, cov = gp.latent_joint_predictive(kernel, posterior, x)
    gram = np.asarray(kernel.matrix(kernel.init(), x, x))
    w = np.asarray(posterior.mode.sqrt_w) ** 2
    reference = gram - gram @ np.linalg.solve(gram + np.diag(1 / w), gram)
    np.testing.assert_allclose(cov, reference, rtol=1e-6, atol=1e-8)
    x_new = np.asarray(ds.x_test[:5], np.float64)
    np.testing.assert_allclose(
        np.diag(gp.latent_joint_predictive(kernel, posterior, x_new)[1]),
        gp.latent_predictive(kernel, posterior, x_new)[1],
        rtol=1e-8,
        atol=1e-10,
    )
    draws = gp.latent_function_samples(
        kernel, posterior, x, key=jax.random.key(0), num_samples=20_000
    )
    np.testing.assert_allclose(np.mean(draws, 0), mean, atol=0.05 * np.sqrt(np.diag(cov)).max())
    np.testing.assert_allclose(np.cov(draws.T), cov, atol=0.05 * np.diag(cov).max())
    with pytest.raises(ValueError, match="num_samples"):
        gp.latent_function_samples(kernel, posterior, x, key=jax.random.key(0), num_samples=0)


def test_bad_moments_raise():
    mean, var = jnp.zeros(3), jnp.ones(3)
    with pytest.raises(ValueError, match=r"var: expected the shape of mean \(3,\)"):
        gp.houlsby_bald(mean, jnp.ones(4))
    with pytest.raises(ValueError, match="var: expected finite non-negative"):
        gp.predictive_log_probs(gp.probit(), mean, -var)
    with pytest.raises(ValueError, match="mean: expected finite latent means"):
        gp.predictive_entropy(gp.logistic(), mean.at[0].set(jnp.nan), var)
    with pytest.raises(ValueError, match="num_samples: expected an integer >= 1, got 0"):
        gp.monte_carlo_bald(gp.probit(), mean, var, jax.random.key(0), num_samples=0)


def _bad_sampling_calls():
    mean, var = jnp.zeros(3), jnp.ones(3)
    ds = data.load("toy2d", seed=1)
    x, y = ds.x_train[:10], ds.y_train[:10]
    kernel, lik = gp.rbf_kernel(), gp.probit()
    posterior = gp.fit(kernel, kernel.init(), x, y, likelihood=lik)
    multi = gp.multiclass.sample_log_probs
    calls = [
        lambda k, n: gp.latent_sample_log_probs(lik, mean, var, k, num_samples=n),
        lambda k, n: gp.monte_carlo_bald(lik, mean, var, k, num_samples=n),
        lambda k, n: multi(lik, jnp.zeros((3, 2)), jnp.ones((3, 2)), k, num_samples=n),
        lambda k, n: gp.latent_function_samples(kernel, posterior, x, key=k, num_samples=n),
    ]
    key = jax.random.key(0)
    return [
        *[
            (lambda c=c, k=k: c(k, 4), "key: expected a PRNG key")
            for c in calls
            for k in (0, "abc")
        ],
        *[(lambda c=c: c(None, 4), "key: expected a PRNG key") for c in calls],
        *[
            (lambda c=c: c(key, 2.5), r"num_samples: expected an integer >= 1, got 2\.5")
            for c in calls
        ],
        *[(lambda c=c: c(key, None), "num_samples: expected an integer >= 1") for c in calls],
        (
            lambda: gp.fit("rbf", kernel.init(), x, y, likelihood=lik),
            "kernel: expected a gp.Kernel",
        ),
        (lambda: gp.fit(kernel, kernel.init(), x, y, likelihood=lik, tol=np.inf), "tol: expected"),
    ]


@pytest.mark.parametrize("index", range(len(_bad_sampling_calls())))
def test_bad_keys_and_sample_counts_are_named(index):
    call, match = _bad_sampling_calls()[index]
    with pytest.raises(ValueError, match=match):
        call()


def test_monte_carlo_bald_keeps_the_shape_of_mean():
    key, lik = jax.random.key(0), gp.probit()
    scalar = gp.monte_carlo_bald(lik, jnp.array(0.5), jnp.array(2.0), key, num_samples=64)
    batch = gp.monte_carlo_bald(
        lik, jnp.full((2, 3), 0.5), jnp.full((2, 3), 2.0), key, num_samples=64
    )
    assert scalar.shape == () and batch.shape == (2, 3)
    lp = gp.latent_sample_log_probs(lik, jnp.array(0.5), jnp.array(2.0), key, num_samples=64)
    np.testing.assert_allclose(scalar, uncertainty.bald(lp[:, None])[0], rtol=1e-6)
