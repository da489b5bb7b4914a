"""Predictions of a fitted binary GP classifier: latent moments, class probabilities, entropy, BALD.

Two-class log-probabilities are ``[..., 2]`` arrays ``(log p(y=0), log p(y=1))``, the layout of
:mod:`bnn_jax.uncertainty`; Monte Carlo versions are ``[num_samples, ..., 2]`` log-probabilities of
latent draws ``f_s ~ N(mean, var)``, so ``uncertainty.mean_log_probs``, ``predictive_entropy`` and
``bald`` apply unchanged. All entropies are in nats.

Example:
  >>> posterior = classification.fit(kernel, params, x, y, likelihood=lik)
  >>> mean, var = latent_predictive(kernel, posterior, x_grid)
  >>> entropy = predictive_entropy(lik, mean, var)
  >>> bald = houlsby_bald(mean, var)                      # probit likelihood
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from bnn_jax import checks, uncertainty
from bnn_jax.gp.classification import GPPosterior, validate_inputs
from bnn_jax.gp.kernels import Kernel
from bnn_jax.gp.likelihoods import Likelihood, probit

__all__ = [
    "check_moments",
    "houlsby_bald",
    "latent_function_samples",
    "latent_joint_predictive",
    "latent_predictive",
    "latent_sample_log_probs",
    "monte_carlo_bald",
    "predictive_entropy",
    "predictive_log_probs",
]

HOULSBY_C2 = float(np.pi * np.log(2.0) / 2.0)
"""``C^2 = pi ln 2 / 2`` of Houlsby's approximation ``h(Phi(x)) ~ ln 2 exp(-x^2 / (2 C^2))``."""


def latent_predictive(
    kernel: Kernel, posterior: GPPosterior, x: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Mean and variance of the latent ``f(x)`` under the Laplace posterior (R&W Alg. 3.2).

    ``mean = k_*^T grad log p(y | f_hat)``, ``var = k(x, x) - |L^-1 W^1/2 k_*|^2`` (clamped at 0
    against rounding).

    Args:
      kernel: the kernel the posterior was fitted with.
      posterior: from :func:`bnn_jax.gp.classification.fit`.
      x: test inputs ``[m, d]``.

    Returns:
      ``(mean [m], var [m])``.
    """
    validate_inputs("x", x, num_features=posterior.x_train.shape[1])
    return _latent_predictive(kernel.matrix, kernel.diag, posterior, jnp.asarray(x))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _latent_predictive(matrix_fn, diag_fn, posterior, x):
    mode = posterior.mode
    k_star = matrix_fn(posterior.params, posterior.x_train, x)
    mean = k_star.T @ mode.grad_log_lik
    v = jax.scipy.linalg.solve_triangular(mode.chol, mode.sqrt_w[:, None] * k_star, lower=True)
    var = diag_fn(posterior.params, x) - jnp.sum(v * v, axis=0)
    return mean, jnp.maximum(var, 0.0)


def latent_joint_predictive(
    kernel: Kernel, posterior: GPPosterior, x: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Joint mean ``[m]`` and covariance ``[m, m]`` of the latent ``f(x)`` (R&W Alg. 3.2):
    ``cov = K(x, x) - V^T V`` with ``V = L^-1 W^1/2 K(X, x)``. Its diagonal is the variance of
    :func:`latent_predictive`. Memory ``O(m^2)``: use it for function draws on small grids."""
    validate_inputs("x", x, num_features=posterior.x_train.shape[1])
    return _latent_joint(kernel.matrix, posterior, jnp.asarray(x))


@functools.partial(jax.jit, static_argnums=(0,))
def _latent_joint(matrix_fn, posterior, x):
    mode = posterior.mode
    k_star = matrix_fn(posterior.params, posterior.x_train, x)
    v = jax.scipy.linalg.solve_triangular(mode.chol, mode.sqrt_w[:, None] * k_star, lower=True)
    cov = matrix_fn(posterior.params, x, x) - v.T @ v
    return k_star.T @ mode.grad_log_lik, 0.5 * (cov + cov.T)


def latent_function_samples(
    kernel: Kernel, posterior: GPPosterior, x: jax.Array, *, key: jax.Array, num_samples: int
) -> jax.Array:
    """Joint draws ``[num_samples, m]`` of the latent function at ``x`` from the Laplace
    posterior: whole functions, the GP's "draws from the posterior" (for the decision regions
    of each draw, threshold at 0). The covariance is factored by its eigendecomposition with
    negative eigenvalues (rounding) clamped at 0."""
    num_samples = checks.positive_int("num_samples", num_samples)
    checks.key("key", key)
    mean, cov = latent_joint_predictive(kernel, posterior, x)
    eigenvalues, eigenvectors = jnp.linalg.eigh(cov)
    root = eigenvectors * jnp.sqrt(jnp.maximum(eigenvalues, 0.0))
    z = jax.random.normal(key, (num_samples, mean.shape[0]), mean.dtype)
    return mean + z @ root.T


def check_moments(mean: jax.Array, var: jax.Array) -> None:
    """Raise ``ValueError`` unless ``mean`` and ``var`` have one shape, are finite and
    ``var >= 0`` (value checks skipped for traced arrays)."""
    if jnp.shape(mean) != jnp.shape(var):
        raise ValueError(f"var: expected the shape of mean {jnp.shape(mean)}, got {jnp.shape(var)}")
    if uncertainty.is_concrete(mean) and not np.all(np.isfinite(np.asarray(mean))):
        raise ValueError("mean: expected finite latent means, got NaN or inf")
    if uncertainty.is_concrete(var):
        values = np.asarray(var)
        if not np.all(np.isfinite(values) & (values >= 0)):
            raise ValueError("var: expected finite non-negative latent variances")


def predictive_log_probs(likelihood: Likelihood, mean: jax.Array, var: jax.Array) -> jax.Array:
    """``log p(y | x)`` ``[..., 2]`` from the latent moments, ``p(y=1) = E[sigma(f)]``.

    Exact for the probit, ``Phi(mean / sqrt(1 + var))``; MacKay's approximation for the logistic
    (see :func:`latent_sample_log_probs` for Monte Carlo).
    """
    check_moments(mean, var)
    mean, var = jnp.asarray(mean), jnp.asarray(var)
    return jnp.stack(
        [likelihood.log_predictive(-mean, var), likelihood.log_predictive(mean, var)], axis=-1
    )


def predictive_entropy(likelihood: Likelihood, mean: jax.Array, var: jax.Array) -> jax.Array:
    """``H[p(y | x)] = -sum_y p log p`` in nats of :func:`predictive_log_probs`."""
    return uncertainty.entropy(predictive_log_probs(likelihood, mean, var))


def latent_sample_log_probs(
    likelihood: Likelihood, mean: jax.Array, var: jax.Array, key: jax.Array, *, num_samples: int
) -> jax.Array:
    """``log p(y | f_s)`` ``[num_samples, ..., 2]`` for latent draws ``f_s ~ N(mean, var)``.

    Args:
      likelihood: the binary likelihood.
      mean, var: latent moments of the same shape.
      key: PRNG key of the draws.
      num_samples: number of draws (>= 1).

    Example:
      >>> lp = latent_sample_log_probs(logistic(), mean, var, key, num_samples=1000)
      >>> uncertainty.mean_log_probs(lp)                # MC predictive of the logistic GP
    """
    check_moments(mean, var)
    mean, var = jnp.asarray(mean), jnp.asarray(var)
    num_samples = checks.positive_int("num_samples", num_samples)
    checks.key("key", key)
    noise = jax.random.normal(key, (num_samples, *jnp.shape(mean)), jnp.result_type(mean))
    f = mean + jnp.sqrt(var) * noise
    return jnp.stack([likelihood.log_sigmoid(-f), likelihood.log_sigmoid(f)], axis=-1)


def monte_carlo_bald(
    likelihood: Likelihood, mean: jax.Array, var: jax.Array, key: jax.Array, *, num_samples: int
) -> jax.Array:
    """BALD ``H[E p(y | f)] - E H[p(y | f)]`` in nats, estimated from latent draws.

    Unbiased in the expected entropy; the entropy of the MC mean is biased low by
    ``O(1 / num_samples)``. Works for any likelihood (Houlsby's closed form is probit-only).
    """
    lp = latent_sample_log_probs(likelihood, mean, var, key, num_samples=num_samples)
    # [num_samples, batch, 2] with one batch axis, whatever the shape of mean (a scalar too)
    return uncertainty.bald(lp.reshape(num_samples, -1, 2)).reshape(jnp.shape(mean))


def houlsby_bald(mean: jax.Array, var: jax.Array) -> jax.Array:
    """BALD of the probit GP classifier with Houlsby's closed form (Houlsby et al. 2011), nats.

    ``I = h(Phi(mean / sqrt(var + 1))) - ln 2 * C / sqrt(var + C^2)
    * exp(-mean^2 / (2 (var + C^2)))`` with ``C^2 = pi ln 2 / 2`` and ``h`` the binary entropy in
    nats. The second term is ``E_f[h(Phi(f))]`` under ``h(Phi(x)) ~ ln 2 exp(-x^2 / (pi ln 2))``,
    which errs by up to about 2e-3 nats, so values can dip to about -2e-3 where ``var -> 0``; the
    result is not clipped. The notebook's GPy cell writes the exponent's denominator as
    ``2 * var + C^2``; that is a bug (it understates the expected entropy, hence overstates BALD,
    wherever ``mean != 0``); the correct form is ``2 (var + C^2)``.

    Args:
      mean, var: latent moments of the same shape (:func:`latent_predictive`).

    Returns:
      BALD in nats, shaped like ``mean``; always below the predictive entropy.
    """
    check_moments(mean, var)
    mean, var = jnp.asarray(mean), jnp.asarray(var)
    entropy = predictive_entropy(probit(), mean, var)
    spread = var + HOULSBY_C2
    expected_entropy = jnp.log(2.0) * jnp.sqrt(HOULSBY_C2 / spread)
    # exp(-mean^2 / (2 spread)), written so that huge moments give 0, not inf / inf = NaN
    return entropy - expected_entropy * jnp.exp(-0.5 * jnp.square(mean / jnp.sqrt(spread)))
