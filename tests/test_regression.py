"""Regression: Gaussian likelihood, predictive mean and variance against dense float64
references, the Gaussian evidence and noise learned by the marginal likelihood."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bnn_jax import curvature, data, laplace, losses, models, predictive, training
from bnn_jax.curvature.layout import Layout


def _problem(num_outputs=2, n=12):
    model = models.MLP((6,), num_outputs, activation=jnp.tanh)
    x = jax.random.normal(jax.random.key(0), (n, 3), jnp.float64)
    variables = models.init(model, jax.random.key(1), (3,))
    params = jax.tree.map(lambda a: a.astype(jnp.float64), variables["params"])
    apply_fn = models.make_apply_fn(model, variables)
    noise = 0.3 * jax.random.normal(jax.random.key(2), (n, num_outputs), jnp.float64)
    y = jnp.sin(x[:, :num_outputs]) + noise
    return apply_fn, params, x, y


def _fit(structure, apply_fn, params, x, y, *, sigma, scale=1.0, prior_prec=0.7, num_outputs=2):
    lik = losses.gaussian(sigma=sigma, num_outputs=num_outputs)
    fisher = curvature.exact_fisher()
    curv = {
        "dense": lambda: curvature.dense(apply_fn, lik, fisher=fisher),
        "kfac": lambda: curvature.kfac(apply_fn, lik, fisher=fisher),
    }[structure]()
    return laplace.fit(
        curv,
        params,
        data.Batches(np.asarray(x), np.asarray(y), 5),
        key=jax.random.key(3),
        prior_prec=prior_prec,
        scale=scale,
        progress=False,
    )


def _dense_function_covariance(post, x):
    """``J Sigma J^T`` with ``J`` from ``jax.jacobian`` and ``Sigma`` the inverse of the dense
    precision ``scale C + prior_prec I``."""
    layout = Layout.of(post.mean)
    flat = layout.ravel(post.mean)
    jac = jax.jacobian(lambda v: post.apply_fn(layout.unravel(v), x))(flat)  # [B, K, P]
    dense = post.curvature.to_dense(post.state)
    precision = post.scale * dense + post.prior_prec * jnp.eye(dense.shape[0])
    sigma = jnp.linalg.inv(precision)
    return jnp.einsum("bkp,pq,blq->bkl", jac, sigma, jac)


@pytest.mark.parametrize("structure", ["dense", "kfac"])
def test_glm_regression_variance_equals_the_dense_computation(x64, structure):
    apply_fn, params, x, y = _problem()
    post = _fit(structure, apply_fn, params, x, y, sigma=0.4, scale=2.5)
    x_test = jnp.concatenate([x[:3], 3.0 * jnp.ones((2, 3))])
    mean, variance = predictive.glm_regression(post, x_test)
    cov = _dense_function_covariance(post, x_test)
    noise = 0.4**2 / 2.5  # the scale is the noise precision multiplier
    np.testing.assert_allclose(mean, apply_fn(params, x_test), rtol=1e-12)
    np.testing.assert_allclose(variance, jnp.diagonal(cov, axis1=1, axis2=2) + noise, rtol=1e-9)
    np.testing.assert_allclose(laplace.noise_std(post) ** 2, noise, rtol=1e-12)
    chunked = predictive.glm_regression(post, x_test, chunk_size=2)
    np.testing.assert_allclose(chunked.variance, variance, rtol=1e-12)


def test_mc_regression_is_the_moments_of_the_weight_sample_mixture(x64):
    apply_fn, params, x, y = _problem()
    post = _fit("kfac", apply_fn, params, x, y, sigma=0.4, scale=2.0)
    key = jax.random.key(5)
    mean, variance = predictive.mc_regression(post, x, key=key, num_samples=7, chunk_size=3)
    thetas = laplace.sample(post, key, 7)
    outputs = jax.vmap(apply_fn, (0, None))(thetas, x)
    np.testing.assert_allclose(mean, outputs.mean(0), rtol=1e-12)
    np.testing.assert_allclose(variance, outputs.var(0) + 0.4**2 / 2.0, rtol=1e-10)


def test_mc_regression_of_a_linear_model_converges_to_the_glm(x64):
    """A linear model is its own linearisation: the MC mixture's moments tend to the GLM's."""
    model = nn.Dense(2)
    x = jax.random.normal(jax.random.key(0), (20, 3), jnp.float64)
    y = x @ jnp.ones((3, 2)) + 0.2 * jax.random.normal(jax.random.key(1), (20, 2), jnp.float64)
    params = jax.tree.map(lambda a: a.astype(jnp.float64), model.init(jax.random.key(2), x))
    apply_fn = lambda p, inputs: model.apply({"params": p}, inputs)
    post = _fit("dense", apply_fn, params["params"], x, y, sigma=0.2, prior_prec=1.0)
    glm = predictive.glm_regression(post, x[:4])
    mc = predictive.mc_regression(post, x[:4], key=jax.random.key(3), num_samples=20000)
    np.testing.assert_allclose(
        mc.mean, glm.mean, atol=4 * float(jnp.sqrt(glm.variance.max())) / 141
    )
    np.testing.assert_allclose(mc.variance, glm.variance, rtol=0.05)


def test_classification_and_regression_predictives_refuse_the_other_task(x64):
    apply_fn, params, x, y = _problem()
    regression = _fit("kfac", apply_fn, params, x, y, sigma=0.4)
    key = jax.random.key(0)
    for fn, kwargs in [
        (predictive.laplace_log_probs, {"key": key, "num_samples": 2}),
        (predictive.glm_probit_log_probs, {}),
        (predictive.glm_mc_log_probs, {"key": key, "num_samples": 2}),
        (predictive.local_log_probs, {"key": key, "num_samples": 2}),
    ]:
        with pytest.raises(ValueError, match=f"posterior: {fn.__name__} is for classification"):
            fn(regression, x, **kwargs)
    labels = jnp.arange(x.shape[0]) % 2
    lik = losses.categorical()
    classification = laplace.fit(
        curvature.diagonal(apply_fn, lik, fisher=curvature.exact_fisher()),
        params,
        data.Batches(np.asarray(x), np.asarray(labels), 6),
        key=key,
        prior_prec=1.0,
        progress=False,
    )
    with pytest.raises(ValueError, match="posterior: glm_regression is for regression"):
        predictive.glm_regression(classification, x)
    with pytest.raises(ValueError, match="posterior: mc_regression is for regression"):
        predictive.mc_regression(classification, x, key=key, num_samples=2)
    with pytest.raises(ValueError, match="posterior: noise_std is for regression"):
        laplace.noise_std(classification)
    with pytest.raises(ValueError, match="tune_noise: the posterior's likelihood is for"):
        laplace.optimize_marglik(classification, steps=1, learning_rate=0.1, tune_noise=True)
    with pytest.raises(ValueError, match="tune_scale: for a Gaussian posterior"):
        laplace.optimize_marglik(regression, steps=1, learning_rate=0.1, tune_scale=True)


def test_gaussian_evidence_is_the_evidence_of_the_noise_sigma_over_root_scale(x64):
    """A posterior fitted at noise sigma with scale s is the posterior fitted at noise
    sigma / sqrt(s) with scale 1: the same evidence (against a closed form from the squared
    residuals) and the same predictive."""
    apply_fn, params, x, y = _problem()
    sigma, s, tau = 0.5, 3.0, 0.7
    post = _fit("dense", apply_fn, params, x, y, sigma=sigma, scale=s, prior_prec=tau)
    direct = _fit("dense", apply_fn, params, x, y, sigma=sigma / s**0.5, prior_prec=tau)
    sse = float(jnp.sum((apply_fn(params, x) - y) ** 2))
    m = y.size
    noise2 = sigma**2 / s
    theta = Layout.of(params).ravel(params)
    dense = post.curvature.to_dense(post.state)
    _, logdet = jnp.linalg.slogdet(s * dense + tau * jnp.eye(dense.shape[0]))
    expected = (
        -(sse / (2 * noise2) + m / 2 * np.log(2 * np.pi * noise2))
        - tau / 2 * float(theta @ theta)
        + theta.size / 2 * np.log(tau)
        - logdet / 2
    )
    np.testing.assert_allclose(laplace.log_marginal_likelihood(post), expected, rtol=1e-10)
    np.testing.assert_allclose(laplace.log_marginal_likelihood(direct), expected, rtol=1e-10)
    a, b = predictive.glm_regression(post, x), predictive.glm_regression(direct, x)
    np.testing.assert_allclose(a.variance, b.variance, rtol=1e-9)


def test_gaussian_evidence_needs_the_number_of_outputs(x64):
    apply_fn, params, x, y = _problem()
    lik = losses.gaussian(sigma=0.5)  # K not given
    post = laplace.fit(
        curvature.diagonal(apply_fn, lik, fisher=curvature.exact_fisher()),
        params,
        data.Batches(np.asarray(x), np.asarray(y), 6),
        key=jax.random.key(0),
        prior_prec=1.0,
        progress=False,
    )
    with pytest.raises(ValueError, match="num_outputs=K"):
        laplace.log_marginal_likelihood(post)
    with pytest.raises(ValueError, match=r"apply_fn: the likelihood is gaussian\(num_outputs=1\)"):
        losses.gaussian(sigma=0.5, num_outputs=1).check_targets((4, 2), jnp.zeros((4, 2)))


def test_gaussian_accepts_a_traced_sigma(x64):
    """The NLL is differentiable in sigma: d/dsigma mean NLL = -mean SSE / sigma^3 + K / sigma."""
    f = jnp.array([[0.0, 1.0], [2.0, -1.0]])
    y = jnp.array([[0.5, 1.0], [1.0, 0.0]])

    def mean_nll(sigma):
        return jnp.mean(losses.gaussian(sigma=sigma).nll(f, y))

    sse = jnp.sum((f - y) ** 2, -1)
    for sigma in (0.3, 1.7):
        expected = jnp.mean(-sse / sigma**3 + 2 / sigma)
        np.testing.assert_allclose(jax.grad(mean_nll)(sigma), expected, rtol=1e-12)
        np.testing.assert_allclose(jax.jit(jax.grad(mean_nll))(sigma), expected, rtol=1e-12)
    batch = jax.vmap(mean_nll)(jnp.array([0.3, 1.7]))
    np.testing.assert_allclose(batch, [mean_nll(0.3), mean_nll(1.7)], rtol=1e-12)
    for bad in (0.0, float("nan"), "abc", None, jnp.ones(2)):
        with pytest.raises(ValueError, match="sigma"):
            losses.gaussian(sigma=bad)


def test_marginal_likelihood_learns_the_observation_noise():
    """y = sin(3x) + 0.1 eps on 200 points: a small MLP trained by MAP, a Laplace fit at a
    wrong noise (sigma = 1) and the evidence maximised over (noise, tau) recover 0.1 within
    10%; the tuned posterior's evidence is the trace's last value."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, size=(200, 1)).astype(np.float32)
    y = (np.sin(3 * x) + 0.1 * rng.normal(size=(200, 1))).astype(np.float32)
    model = models.MLP((32, 32), 1, activation=jnp.tanh)
    result = training.train(
        model,
        x,
        y,
        key=jax.random.key(0),
        epochs=2000,
        batch_size=200,
        optimizer=optax.adam(optax.cosine_decay_schedule(2e-2, 2000)),  # to convergence
        prior_prec=0.25,
        likelihood=losses.gaussian(sigma=0.2),
        progress=False,
    )
    assert "accuracy" not in result.history
    apply_fn = models.make_apply_fn(model, result.variables)
    lik = losses.gaussian(sigma=1.0, num_outputs=1)
    post = laplace.fit(
        curvature.dense(apply_fn, lik, fisher=curvature.exact_fisher()),
        result.variables["params"],
        data.Batches(x, y, 200),
        key=jax.random.key(1),
        prior_prec=1.0,
        progress=False,
    )
    tuned, trace = laplace.optimize_marglik(post, steps=500, learning_rate=0.05, tune_noise=True)
    noise = float(laplace.noise_std(tuned))
    assert abs(noise - 0.1) < 0.01, noise  # the sample's own noise is 0.102
    assert trace.log_marglik[-1] > trace.log_marglik[0]
    np.testing.assert_allclose(
        laplace.log_marginal_likelihood(tuned), trace.log_marglik[-1], rtol=1e-4
    )
    np.testing.assert_allclose(float(tuned.scale), 1.0 / noise**2, rtol=1e-5)
