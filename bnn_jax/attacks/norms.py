"""The geometry of an attack's threat model: steepest-ascent directions, projections onto the
eps-ball and uniform random starts for the L-infinity, L2 and L1 norms.

Every function acts per example on arrays ``[batch, ...]``: norms are taken over all axes
but the first. Zero gradients give a zero direction (the example is not moved); nonzero
gradients of any (normal, not subnormal) magnitude give a direction of norm exactly 1,
because each gradient is first divided by its largest absolute entry (no ``+ 1e-12``
fudge that shortens the step of a nearly saturated model).
"""

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from bnn_jax.types import Key

NORMS = ("linf", "l2", "l1")
"""The norm names accepted by every attack."""


class NormOps(NamedTuple):
    """Pure functions for one norm ``||.||``, all per example over axes ``1:``.

    Attributes:
      size: ``(v) -> [batch]``, the norm of each example.
      direction: ``(g) -> d``, the steepest-ascent direction ``argmax_{||d|| <= 1} <g, d>``.
      project: ``(delta, eps) -> delta'``, a point of the eps-ball ``{||delta'|| <= eps}``;
        the Euclidean projection for every norm.
      random: ``(key, shape, eps, dtype) -> delta``, uniform in the eps-ball.
    """

    size: Callable[[jax.Array], jax.Array]
    direction: Callable[[jax.Array], jax.Array]
    project: Callable[[jax.Array, jax.Array], jax.Array]
    random: Callable[[Key, tuple[int, ...], jax.Array, jnp.dtype], jax.Array]


def _axes(v: jax.Array) -> tuple[int, ...]:
    return tuple(range(1, v.ndim))


def _per_example(s: jax.Array, v: jax.Array) -> jax.Array:
    """Reshape per-example values ``[batch]`` to broadcast against ``v`` ``[batch, ...]``."""
    return s.reshape(s.shape + (1,) * (v.ndim - 1))


def _rescaled(g: jax.Array) -> jax.Array:
    """``g / max|g|`` per example (zero examples stay zero): entries in [-1, 1], max exactly 1."""
    scale = _per_example(jnp.max(jnp.abs(g), axis=_axes(g)), g)
    return g / jnp.where(scale > 0, scale, 1)


def _linf_size(v):
    return jnp.max(jnp.abs(v), axis=_axes(v))


def _linf_direction(g):
    return jnp.sign(g)


def _linf_project(delta, eps):
    return jnp.clip(delta, -eps, eps)


def _linf_random(key, shape, eps, dtype):
    return jax.random.uniform(key, shape, dtype, minval=-1.0, maxval=1.0) * eps


def _l2_size(v):
    return jnp.sqrt(jnp.sum(jnp.square(v), axis=_axes(v)))


def _l2_direction(g):
    g = _rescaled(g)
    norm = _per_example(_l2_size(g), g)
    return g / jnp.where(norm > 0, norm, 1)


def _l2_project(delta, eps):
    norm = _per_example(_l2_size(delta), delta)
    return delta * jnp.minimum(1, eps / jnp.where(norm > 0, norm, 1))


def _l2_random(key, shape, eps, dtype):
    direction_key, radius_key = jax.random.split(key)
    direction = _l2_direction(jax.random.normal(direction_key, shape, dtype))
    dim = math.prod(shape[1:])
    radius = jax.random.uniform(radius_key, shape[:1], dtype) ** (1.0 / dim)
    return direction * _per_example(radius, direction) * eps


def _l1_size(v):
    return jnp.sum(jnp.abs(v), axis=_axes(v))


def _l1_direction(g):
    """Steepest ascent under L1: all mass on the coordinate of largest ``|g|``, split equally
    between exact ties (cleverhans' TF choice), so ``<g, d> = max|g|`` and ``||d||_1 = 1``."""
    magnitude = jnp.abs(g)
    largest = _per_example(jnp.max(magnitude, axis=_axes(g)), g)
    tied = (magnitude == largest) & (largest > 0)
    count = _per_example(jnp.sum(tied, axis=_axes(g)), g)
    return jnp.sign(g) * tied / jnp.maximum(count, 1)


def _l1_project(delta, eps):
    """Euclidean projection onto the L1 ball (Duchi et al. 2008, sort-based, per example)."""
    flat = delta.reshape(delta.shape[0], -1)
    magnitude = jnp.abs(flat)
    descending = -jnp.sort(-magnitude, axis=1)
    cumulative = jnp.cumsum(descending, axis=1)
    ranks = jnp.arange(1, flat.shape[1] + 1, dtype=flat.dtype)
    active = descending - (cumulative - eps) / ranks > 0
    count = jnp.maximum(jnp.sum(active, axis=1), 1)
    threshold = (jnp.take_along_axis(cumulative, count[:, None] - 1, axis=1)[:, 0] - eps) / count
    inside = jnp.sum(magnitude, axis=1) <= eps
    threshold = jnp.where(inside, 0, jnp.maximum(threshold, 0))
    projected = jnp.sign(flat) * jnp.maximum(magnitude - threshold[:, None], 0)
    return projected.reshape(delta.shape)


def _l1_random(key, shape, eps, dtype):
    """Uniform in the L1 ball: the first ``d`` of ``d + 1`` Exp(1) draws over their sum
    (uniform on the simplex interior), with random signs."""
    sign_key, exp_key = jax.random.split(key)
    dim = math.prod(shape[1:])
    draws = jax.random.exponential(exp_key, (shape[0], dim + 1), dtype)
    point = draws[:, :dim] / jnp.sum(draws, axis=1, keepdims=True)
    signs = jax.random.rademacher(sign_key, (shape[0], dim), dtype)
    return (signs * point * eps).reshape(shape)


def norm_ops(norm: str) -> NormOps:
    """The :class:`NormOps` of ``norm``, one of ``"linf"``, ``"l2"``, ``"l1"``.

    Example:
      >>> ops = norm_ops("l2")
      >>> delta = ops.project(delta + step * ops.direction(grad), eps)
    """
    if norm == "linf":
        return NormOps(_linf_size, _linf_direction, _linf_project, _linf_random)
    if norm == "l2":
        return NormOps(_l2_size, _l2_direction, _l2_project, _l2_random)
    if norm == "l1":
        return NormOps(_l1_size, _l1_direction, _l1_project, _l1_random)
    raise ValueError(f"norm: expected one of {NORMS}, got {norm!r}")
