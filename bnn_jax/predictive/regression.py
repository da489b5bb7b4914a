"""Predictive mean and variance of a Gaussian (regression) Laplace posterior.

The observation model is ``y ~ N(f(x; theta), sigma_s^2 I)`` with the posterior's noise
``sigma_s = laplace.noise_std(posterior) = sigma / sqrt(scale)`` (``laplace.marglik``
explains why the scale is the noise for a Gaussian likelihood). Two predictives, both
returning per-output means and variances ``[batch, K]``:

- ``glm_regression``: the linearised network, ``f(x) ~ N(f(x; theta*), J Sigma J^T)``, so
  ``y ~ N(f(x; theta*), J Sigma J^T + sigma_s^2 I)`` exactly (no sampling); the variance is
  ``diag(J Sigma J^T) + sigma_s^2``.
- ``mc_regression``: the mixture ``(1/T) sum_t N(f(x; theta_t), sigma_s^2 I)`` over weight
  draws ``theta_t`` (``laplace.sample_one`` with ``jax.random.split(key, T)[t]``, common to
  every input), with mean ``mu = (1/T) sum_t f_t`` and variance
  ``(1/T) sum_t (f_t - mu)^2 + sigma_s^2`` (the mixture's own variance: no ``T - 1``).

``variance - laplace.noise_std(post)**2`` is the epistemic part (the function variance).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from bnn_jax import checks, chunking
from bnn_jax.laplace.marglik import noise_std
from bnn_jax.laplace.posterior import Posterior, check_posterior, sample_one
from bnn_jax.losses import check_task
from bnn_jax.predictive.linearised import glm_moments
from bnn_jax.predictive.monte_carlo import check_inputs
from bnn_jax.types import Key

__all__ = ["RegressionPredictive", "glm_regression", "mc_regression"]


class RegressionPredictive(NamedTuple):
    """``mean``: predictive mean ``[batch, K]``; ``variance``: predictive variance ``[batch, K]``
    (function variance plus the observation noise ``sigma_s^2``)."""

    mean: jax.Array
    variance: jax.Array


def glm_regression(
    posterior: Posterior, x: jax.Array, *, chunk_size: int | None = None
) -> RegressionPredictive:
    """Linearised (GLM) predictive ``N(f(x; theta*), diag(J Sigma J^T) + sigma_s^2)``.

    Args:
      posterior: a Laplace posterior with a Gaussian likelihood.
      x: inputs ``[batch, ...]``.
      chunk_size: inputs processed at once (bounds memory; ``None``: all).

    Example:
      >>> mean, variance = predictive.glm_regression(post, x_test)
      >>> band = 2 * jnp.sqrt(variance)                       # ~95% predictive interval
    """
    check_posterior(posterior)
    check_task(posterior.likelihood, "regression", "glm_regression")
    moments = glm_moments(posterior, x, chunk_size=chunk_size)
    function_variance = jnp.diagonal(moments.covariance, axis1=-2, axis2=-1)
    return RegressionPredictive(moments.mean, function_variance + noise_std(posterior) ** 2)


def mc_regression(
    posterior: Posterior,
    x: jax.Array,
    *,
    key: Key,
    num_samples: int,
    chunk_size: int | None = None,
) -> RegressionPredictive:
    """MC predictive: moments of the mixture of ``N(f(x; theta_t), sigma_s^2)`` over ``T``
    weight draws (module docstring). Jit-compiled (static ``num_samples``, ``chunk_size``).

    Args:
      posterior: a Laplace posterior with a Gaussian likelihood.
      x: inputs ``[batch, ...]``.
      key: PRNG key of the weight draws (the same draws as ``laplace.sample``).
      num_samples: ``T >= 1``.
      chunk_size: weight draws evaluated at once (``None``: all ``T``).

    Example:
      >>> mean, variance = predictive.mc_regression(post, x_test, key=key, num_samples=100)
    """
    check_posterior(posterior)
    check_task(posterior.likelihood, "regression", "mc_regression")
    checks.key("key", key)
    checks.positive_int("num_samples", num_samples)
    checks.chunk_size("chunk_size", chunk_size)
    check_inputs(x)
    return _mc_regression(posterior, x, key, num_samples, chunk_size)


@jax.jit(static_argnums=(3, 4))
def _mc_regression(posterior, x, key, num_samples, chunk_size):
    def one(sample_key):
        return posterior.apply_fn(sample_one(posterior, sample_key), x)

    keys = jax.random.split(key, num_samples)
    outputs = chunking.map_chunks(one, keys, chunk_size=chunk_size)
    mean = jnp.mean(outputs, axis=0)
    variance = jnp.mean((outputs - mean) ** 2, axis=0) + noise_std(posterior) ** 2
    return RegressionPredictive(mean, variance.astype(mean.dtype))
