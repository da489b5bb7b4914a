"""Grid and random search over ``(scale, prior_prec)`` on a validation split (the post's tuning).

The curvature is never re-estimated: every candidate only changes the two traced scalars of
the posterior, and the candidates are evaluated with ``jax.vmap`` (``chunk_size`` at a time)
inside one compiled function. An objective is any ``fn(posterior) -> scalar`` to minimise;
:func:`validation_objective` builds the post's from the MC predictive on validation data with
a metric from ``bnn_jax.calibration`` (``calibration.nll``, ``calibration.ece``) or
:func:`error_plus_ece` (the post's "good accuracy and calibration").
"""

import warnings
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bnn_jax import calibration, checks, chunking, predictive, uncertainty
from bnn_jax.laplace.posterior import Posterior, check_posterior
from bnn_jax.types import Key

__all__ = ["GridEdgeWarning", "SearchResult", "error_plus_ece", "search", "validation_objective"]


class GridEdgeWarning(UserWarning):
    """The optimum of a grid search lies on an outer edge of its grid: the true optimum may lie
    outside it (grow the grid: ``search(..., grow=n)``)."""


Objective = Callable[[Posterior], jax.Array]


class SearchResult(NamedTuple):
    """``posterior`` with the best candidate; every candidate's ``scale``, ``prior_prec`` and
    objective ``value`` (``[num_candidates]``); ``best`` the index of the minimum (NaN values
    are never picked; ``search`` raises when no value is finite). For a grid search,
    ``rounds`` is the number of growths made and ``scale_edge`` / ``prior_prec_edge`` where the
    final optimum lies on its axis: ``"low"``, ``"high"`` (an outer edge of the final grid) or
    ``"interior"`` (also for an axis of one value, which was not searched); ``""`` for a
    random search."""

    posterior: Posterior
    scale: jax.Array
    prior_prec: jax.Array
    value: jax.Array
    best: jax.Array
    rounds: int = 0
    scale_edge: str = ""
    prior_prec_edge: str = ""

    @property
    def on_edge(self) -> bool:
        """Whether the optimum lies on an outer edge of its grid (the grid should grow)."""
        return "low" in (self.scale_edge, self.prior_prec_edge) or "high" in (
            self.scale_edge,
            self.prior_prec_edge,
        )


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
    grow: int = 0,
    warn: bool = True,
    args: tuple = (),
) -> SearchResult:
    """Minimise ``objective_fn`` over candidate ``(scale, prior_prec)`` pairs, in log space.

    Grid search (``num_random=None``): every pair of the Cartesian product of ``scale`` and
    ``prior_prec`` (e.g. ``jnp.geomspace(1e-2, 1e4, 13)``: log-spaced). While the optimum lies
    on an outer edge of an axis (its smallest or largest value; an axis of one value has no
    edge), ``grow`` more times at most the grid is extended on that side by one decade of 3
    log-spaced points (``edge * 10^(+-k/3)``, ``k = 1, 2, 3``) and only the new pairs are
    evaluated. An optimum still on an edge at the end is reported in the result
    (``scale_edge``, ``prior_prec_edge``) and, with ``warn``, by a :class:`GridEdgeWarning`
    naming the value and the edge: the objective may still decrease beyond the grid (a
    ``scale`` run to the low edge usually means the data part of the posterior vanished).
    Random search (``num_random=n`` and ``key``): ``n`` pairs drawn log-uniformly between the
    smallest and the largest given value of each (no edges, no growth).

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
      grow: at most this many growths of the grid (grid search only; 0: the grid as given).
      warn: warn when the final optimum lies on an edge of the grid.
      args: arrays passed on as ``objective_fn(posterior, *args)``, traced: a module-level
        objective with its data (validation inputs, labels, keys) as ``args`` compiles once
        for all data of the same shapes, where a closure over the data compiles per closure.

    Returns:
      A :class:`SearchResult`; ``result.posterior`` holds the best pair.

    Example:
      >>> objective = laplace.validation_objective(calibration.nll, x_val, y_val, key=key)
      >>> result = laplace.search(post, objective, prior_prec=jnp.geomspace(1e-2, 1e4, 13),
      ...                         scale=jnp.geomspace(1e-1, 1e2, 7), grow=4)
      >>> post, rounds = result.posterior, result.rounds
    """
    check_posterior(posterior)
    prior_precs = _candidates(prior_prec, "prior_prec")
    scales = _candidates(np.asarray(posterior.scale)[None] if scale is None else scale, "scale")
    checks.chunk_size("chunk_size", chunk_size)
    grow = checks.positive_int("grow", grow, minimum=0)
    dtype = posterior.scale.dtype
    if num_random is not None:
        if grow:
            raise ValueError("grow: a random search does not grow; use a grid (num_random=None)")
        num_random = checks.positive_int("num_random", num_random)
        checks.key("key", key)
        scale_key, prior_key = jax.random.split(key)

        def log_uniform(k, values):
            if values.min() == values.max():  # a single value: keep it exactly
                return np.full(num_random, values[0])
            low, high = np.log(values.min()), np.log(values.max())
            return np.exp(np.asarray(jax.random.uniform(k, (num_random,), minval=low, maxval=high)))

        scales, prior_precs = log_uniform(scale_key, scales), log_uniform(prior_key, prior_precs)
        scales, prior_precs = jnp.asarray(scales, dtype), jnp.asarray(prior_precs, dtype)
        values = _evaluate(posterior, objective_fn, scales, prior_precs, chunk_size, args)
        best = _argmin(values)
        tuned = posterior.replace(scale=scales[best], prior_prec=prior_precs[best])
        return SearchResult(tuned, scales, prior_precs, values, best)

    axes, found, block, rounds = [scales, prior_precs], {}, scales.size * prior_precs.size, 0
    while True:
        grid = [a.ravel() for a in np.meshgrid(*axes, indexing="ij")]
        new = [(s, t) for s, t in zip(*grid, strict=True) if (s, t) not in found]
        for start in range(0, len(new), block):  # fixed-size blocks: compiled once
            part = new[start : start + block]
            padded = np.asarray(part + [part[-1]] * (block - len(part)), np.float64)
            out = _evaluate(
                posterior,
                objective_fn,
                jnp.asarray(padded[:, 0], dtype),
                jnp.asarray(padded[:, 1], dtype),
                chunk_size,
                args,
            )
            found |= dict(zip(part, np.asarray(out)[: len(part)].tolist(), strict=True))
        values = np.asarray([found[pair] for pair in zip(*grid, strict=True)])
        best = _argmin(values)
        edges = [_edge(axis, value[best]) for axis, value in zip(axes, grid, strict=True)]
        if rounds == grow or edges == ["interior", "interior"]:
            break
        axes = [_grown(axis, edge) for axis, edge in zip(axes, edges, strict=True)]
        rounds += 1
    if warn and edges != ["interior", "interior"]:
        where = [
            f"{name} = {value[best]:.3g} on the {edge} edge of its grid "
            f"[{axis.min():.3g}, {axis.max():.3g}]"
            for name, axis, value, edge in zip(NAMES, axes, grid, edges, strict=True)
            if edge != "interior"
        ]
        warnings.warn(
            f"laplace.search: the optimum lies on an edge after {rounds} growth(s) of the grid: "
            f"{'; '.join(where)}; the objective may still decrease outside it (grow=n extends "
            "the grid)",
            GridEdgeWarning,
            stacklevel=2,
        )
    scales, prior_precs = (jnp.asarray(a, dtype) for a in grid)
    tuned = posterior.replace(scale=scales[best], prior_prec=prior_precs[best])
    return SearchResult(
        tuned, scales, prior_precs, jnp.asarray(values, dtype), jnp.asarray(best), rounds, *edges
    )


NAMES = ("scale", "prior_prec")


def _argmin(values) -> int:
    values = np.asarray(values)
    if not np.any(np.isfinite(values)):
        raise ValueError(
            f"objective_fn: no candidate gave a finite value (all {values.size} are NaN or "
            "inf); check the objective and the candidate ranges"
        )
    return int(np.argmin(np.where(np.isnan(values), np.inf, values)))


def _edge(axis: np.ndarray, value: float) -> str:
    if axis.size < 2:
        return "interior"
    return "low" if value == axis.min() else "high" if value == axis.max() else "interior"


def _grown(axis: np.ndarray, edge: str) -> np.ndarray:
    """``axis`` extended by one decade of 3 log-spaced points beyond its ``edge``."""
    steps = 10.0 ** (np.arange(1, 4) / 3)
    if edge == "low":
        return np.concatenate([axis.min() / steps[::-1], axis])
    if edge == "high":
        return np.concatenate([axis, axis.max() * steps])
    return axis


@jax.jit(static_argnums=(1, 4))
def _evaluate(posterior, objective_fn, scales, prior_precs, chunk_size, args):
    def one(pair):
        scale, prior_prec = pair
        return objective_fn(posterior.replace(scale=scale, prior_prec=prior_prec), *args)

    return chunking.map_chunks(one, (scales, prior_precs), chunk_size)
