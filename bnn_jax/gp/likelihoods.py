"""Binary likelihoods ``p(y | f) = sigma(y f)``, ``y in {-1, +1}``, for a symmetric sigmoid.

A :class:`Likelihood` is a NamedTuple of two pure functions:

- ``log_sigmoid(z) = log sigma(z)``, elementwise, so ``log p(y | f) = log_sigmoid(y f)``; the
  Laplace method takes its derivatives in ``f`` by autodiff;
- ``log_predictive(mean, var) = log E[sigma(f)]`` for ``f ~ N(mean, var)``: exact for the
  probit, MacKay's probit approximation for the logistic. The class-0 value is
  ``log_predictive(-mean, var)``, because ``1 - sigma(f) = sigma(-f)``.

Example:
  >>> lik = probit()
  >>> lik.log_predictive(jnp.array(0.5), jnp.array(2.0))   # log Phi(0.5 / sqrt(3))
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import log_ndtr

__all__ = ["Likelihood", "logistic", "probit"]


class Likelihood(NamedTuple):
    """``log_sigmoid(z)`` and ``log_predictive(mean, var)`` of a binary likelihood."""

    log_sigmoid: Callable[[jax.Array], jax.Array]
    log_predictive: Callable[[jax.Array, jax.Array], jax.Array]


def _probit_log_predictive(mean: jax.Array, var: jax.Array) -> jax.Array:
    return log_ndtr(mean / jnp.sqrt(1.0 + var))


def _logistic_log_predictive(mean: jax.Array, var: jax.Array) -> jax.Array:
    return jax.nn.log_sigmoid(mean / jnp.sqrt(1.0 + jnp.pi * var / 8.0))


def probit() -> Likelihood:
    """``p(y | f) = Phi(y f)`` (GPy's ``Bernoulli`` default), with the exact predictive
    ``E[Phi(f)] = Phi(mean / sqrt(1 + var))``."""
    return Likelihood(log_ndtr, _probit_log_predictive)


def logistic() -> Likelihood:
    """``p(y | f) = 1 / (1 + exp(-y f))`` (scikit-learn's GPC), with MacKay's approximation
    ``E[sigma(f)] ~ sigma(mean / sqrt(1 + pi var / 8))`` (use
    :func:`bnn_jax.gp.predict.sample_log_probs` for a Monte Carlo predictive)."""
    return Likelihood(jax.nn.log_sigmoid, _logistic_log_predictive)
