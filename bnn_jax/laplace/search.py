"""Grid and random search over ``(scale, prior_prec)`` on a validation split (the post's tuning).

The curvature is never re-estimated: every candidate only changes the two traced scalars of
the posterior, and the candidates are evaluated with ``jax.vmap`` (``chunk_size`` at a time)
inside one compiled function. An objective is any ``fn(posterior) -> scalar`` to minimise;
:func:`validation_objective` builds the post's from the MC predictive on validation data with
a metric from ``bnn_jax.calibration`` (``calibration.nll``, ``calibration.ece``) or
:func:`error_plus_ece` (the post's "good accuracy and calibration").
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bnn_jax import calibration, checks, chunking, predictive, uncertainty
from bnn_jax.laplace.posterior import Posterior, check_posterior
from bnn_jax.types import Key

__all__ = ["SearchResult", "error_plus_ece", "search", "validation_objective"]

Objective = Callable[[Posterior], jax.Array]


class SearchResult(NamedTuple):
    """``posterior`` with the best candidate; every candidate's ``scale``, ``prior_prec`` and
    objective ``value`` (``[num_candidates]``); ``best`` the index of the minimum (NaN values
    are never picked; ``search`` raises when no value is finite)."""

    posterior: Posterior
    scale: jax.Array
    prior_prec: jax.Array
    value: jax.Array
    best: jax.Array


def error_plus_ece(log_probs: jax.Array, labels: jax.Array) -> jax.Array:
    """``(1 - accuracy) + ECE`` (10 equal-width bins): the post's accuracy-and-calibration
    objective, both terms in ``[0, 1]``."""
    return 1.0 - calibration.accuracy(log_probs, labels) + calibration.ece(log_probs, labels)


def validation_objective(
    metric: Callable[[jax.Array, jax.Array], jax.Array],
    x: jax.Array,
    y: jax.Array,
    *,
    key: Key,
    num_samples: int = 30,
    chunk_size: int | None = None,
) -> Objective:
    """``fn(posterior) -> metric(MC predictive log-probs on x, y)``, to minimise.

    The same ``key`` (the same standard-normal draws) is used for every candidate, so
    differences between candidates are not Monte Carlo noise (common random numbers).

    Args:
      metric: ``(log_probs [batch, C], labels [batch]) -> scalar``, lower is better, e.g.
        ``calibration.nll``, ``calibration.ece`` or :func:`error_plus_ece`.
      x, y: validation inputs and integer labels.
      key: PRNG key of the posterior samples.
      num_samples: MC samples per candidate.
      chunk_size: samples drawn and evaluated at once (bounds memory).
    """
    checks.positive_int("num_samples", num_samples)
    checks.key("key", key)
    checks.chunk_size("chunk_size", chunk_size)
    x, y = jnp.asarray(x), jnp.asarray(y)
    if x.shape[:1] != y.shape[:1]:
        raise ValueError(f"y: expected {x.shape[0]} labels to match x, got shape {y.shape}")

    def objective(posterior: Posterior) -> jax.Array:
        samples = predictive.laplace_log_probs(
            posterior, x, key=key, num_samples=num_samples, chunk_size=chunk_size
        )
        return metric(uncertainty.mean_log_probs(samples), y)

    return objective


def _candidates(values, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0 or not np.all(np.isfinite(values) & (values > 0)):
        raise ValueError(f"{name}: expected a non-empty 1-D array of values > 0, got {values}")
    return values


def search(
    posterior: Posterior,
    objective_fn: Objective,
    *,
    prior_prec,
    scale=None,
    num_random: int | None = None,
    key: Key | None = None,
    chunk_size: int | None = None,
) -> SearchResult:
    """Minimise ``objective_fn`` over candidate ``(scale, prior_prec)`` pairs, in log space.

    Grid search (``num_random=None``): every pair of the Cartesian product of ``scale`` and
    ``prior_prec`` (e.g. ``jnp.geomspace(1e-2, 1e4, 13)``: log-spaced). Random search
    (``num_random=n`` and ``key``): ``n`` pairs drawn log-uniformly between the smallest and
    the largest given value of each.

    Args:
      posterior: a fitted :class:`Posterior` (its curvature is reused as is).
      objective_fn: ``fn(posterior) -> scalar`` to minimise, e.g. from
        :func:`validation_objective`. Must be jax-traceable.
      prior_prec: 1-D array of candidate prior precisions (> 0); each candidate is one value
        for every parameter (it replaces a layer-wise prior).
      scale: 1-D array of candidate scales (> 0); ``None`` keeps ``posterior.scale``.
      num_random: number of random candidates instead of the grid.
      key: PRNG key of the random candidates (required with ``num_random``).
      chunk_size: candidates evaluated at once with ``vmap`` (``None``: all at once).

    Returns:
      A :class:`SearchResult`; ``result.posterior`` holds the best pair.

    Example:
      >>> objective = laplace.validation_objective(calibration.nll, x_val, y_val, key=key)
      >>> result = laplace.search(post, objective, prior_prec=jnp.geomspace(1e-2, 1e4, 13),
      ...                         scale=jnp.geomspace(1e-1, 1e2, 7))
      >>> post = result.posterior
    """
    check_posterior(posterior)
    prior_precs = _candidates(prior_prec, "prior_prec")
    scales = _candidates(np.asarray(posterior.scale)[None] if scale is None else scale, "scale")
    checks.chunk_size("chunk_size", chunk_size)
    if num_random is None:
        scales, prior_precs = (a.ravel() for a in np.meshgrid(scales, prior_precs, indexing="ij"))
    else:
        num_random = checks.positive_int("num_random", num_random)
        checks.key("key", key)
        scale_key, prior_key = jax.random.split(key)

        def log_uniform(k, values):
            if values.min() == values.max():  # a single value: keep it exactly
                return np.full(num_random, values[0])
            low, high = np.log(values.min()), np.log(values.max())
            return np.exp(np.asarray(jax.random.uniform(k, (num_random,), minval=low, maxval=high)))

        scales, prior_precs = log_uniform(scale_key, scales), log_uniform(prior_key, prior_precs)
    dtype = posterior.scale.dtype
    scales, prior_precs = jnp.asarray(scales, dtype), jnp.asarray(prior_precs, dtype)
    values = _evaluate(posterior, objective_fn, scales, prior_precs, chunk_size)
    if not np.any(np.isfinite(np.asarray(values))):
        raise ValueError(
            f"objective_fn: no candidate gave a finite value (all {values.size} are NaN or "
            "inf); check the objective and the candidate ranges"
        )
    best = jnp.argmin(jnp.where(jnp.isnan(values), jnp.inf, values))
    tuned = posterior.replace(scale=scales[best], prior_prec=prior_precs[best])
    return SearchResult(tuned, scales, prior_precs, values, best)


@jax.jit(static_argnums=(1, 4))
def _evaluate(posterior, objective_fn, scales, prior_precs, chunk_size):
    def one(pair):
        scale, prior_prec = pair
        return objective_fn(posterior.replace(scale=scale, prior_prec=prior_prec))

    return chunking.map_chunks(one, (scales, prior_precs), chunk_size)
