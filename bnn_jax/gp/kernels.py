"""Covariance functions with positive hyperparameters stored in log space.

A kernel is a :class:`Kernel`, a NamedTuple of pure functions built by a factory that closes over
the initial hyperparameter values (optax style):

- ``init() -> params``: the log hyperparameters, a NamedTuple of arrays (a pytree that an
  optimiser can update without constraints);
- ``matrix(params, x1, x2) -> [n, m]``: the cross-covariance of inputs ``[n, d]`` and ``[m, d]``;
- ``diag(params, x) -> [n]``: ``k(x_i, x_i)`` without forming the matrix.

The two network kernels use the augmented inner product of a layer with Gaussian weights and bias,
``S(x, y) = sw2 * x.y + sb2`` (``sw2`` a scalar, or one variance per input dimension for ARD).

Example:
  >>> kernel = sum_kernel(arcsine_kernel(), rbf_kernel(lengthscale=2.0))
  >>> params = kernel.init()                     # (ArcSineParams(...), RBFParams(...))
  >>> gram = kernel.matrix(params, x, x)         # [n, n], symmetric PSD
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "ArcCosineParams",
    "ArcSineParams",
    "Kernel",
    "RBFParams",
    "arccosine_kernel",
    "arcsine_kernel",
    "rbf_kernel",
    "sum_kernel",
]


class Kernel(NamedTuple):
    """A covariance function: ``init()``, ``matrix(params, x1, x2)`` and ``diag(params, x)``."""

    init: Callable[[], Any]
    matrix: Callable[[Any, jax.Array, jax.Array], jax.Array]
    diag: Callable[[Any, jax.Array], jax.Array]


class ArcSineParams(NamedTuple):
    """Log hyperparameters of :func:`arcsine_kernel` (GPy's ``MLP`` kernel)."""

    log_variance: jax.Array
    log_weight_variance: jax.Array
    log_bias_variance: jax.Array


class ArcCosineParams(NamedTuple):
    """Log hyperparameters of :func:`arccosine_kernel`."""

    log_variance: jax.Array
    log_weight_variance: jax.Array
    log_bias_variance: jax.Array


class RBFParams(NamedTuple):
    """Log hyperparameters of :func:`rbf_kernel`."""

    log_variance: jax.Array
    log_lengthscale: jax.Array


def _log_positive(name: str, value: Any) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim > 1 or array.size == 0 or not np.all(np.isfinite(array)) or np.any(array <= 0):
        raise ValueError(
            f"{name}: expected a finite positive scalar or 1-d array of them, got {value!r}"
        )
    return np.log(array)


def _augmented_products(params, x1, x2):
    """``S(x1, x2) [n, m]`` and the diagonals ``S(x1, x1) [n]``, ``S(x2, x2) [m]``."""
    weight_variance = jnp.exp(params.log_weight_variance)
    bias_variance = jnp.exp(params.log_bias_variance)
    cross = (x1 * weight_variance) @ x2.T + bias_variance
    return cross, _augmented_norms(params, x1), _augmented_norms(params, x2)


def _augmented_norms(params, x):
    weight_variance = jnp.exp(params.log_weight_variance)
    return jnp.sum(x * x * weight_variance, axis=-1) + jnp.exp(params.log_bias_variance)


def _arcsine_matrix(params: ArcSineParams, x1: jax.Array, x2: jax.Array) -> jax.Array:
    cross, norms1, norms2 = _augmented_products(params, x1, x2)
    ratio = cross / jnp.sqrt((norms1[:, None] + 1.0) * (norms2[None, :] + 1.0))
    return jnp.exp(params.log_variance) * (2.0 / jnp.pi) * jnp.arcsin(ratio)


def _arcsine_diag(params: ArcSineParams, x: jax.Array) -> jax.Array:
    norms = _augmented_norms(params, x)
    return jnp.exp(params.log_variance) * (2.0 / jnp.pi) * jnp.arcsin(norms / (norms + 1.0))


def arcsine_kernel(
    *, variance: float = 1.0, weight_variance: Any = 1.0, bias_variance: float = 1.0
) -> Kernel:
    """The arc-sine ("MLP") kernel of Williams (1998), in GPy's ``MLP`` parametrisation.

    ``k(x, y) = s2 (2/pi) arcsin(S(x, y) / sqrt((S(x, x) + 1) (S(y, y) + 1)))`` with
    ``S(x, y) = sw2 x.y + sb2``: the covariance ``s2 E[erf(w.x + b) erf(w.y + b)]`` of one
    infinitely wide erf layer with ``w ~ N(0, sw2/2 I)``, ``b ~ N(0, sb2/2)``. The defaults are
    GPy's (all ones), the notebook's starting point.

    Args:
      variance: ``s2 > 0``.
      weight_variance: ``sw2 > 0``, a scalar or one per input dimension (ARD).
      bias_variance: ``sb2 > 0``.

    Returns:
      A :class:`Kernel` whose params are :class:`ArcSineParams`.
    """
    logs = ArcSineParams(
        _log_positive("variance", variance),
        _log_positive("weight_variance", weight_variance),
        _log_positive("bias_variance", bias_variance),
    )
    return Kernel(lambda: jax.tree.map(jnp.asarray, logs), _arcsine_matrix, _arcsine_diag)


@jax.custom_jvp
def _arccos_j1(cosine: jax.Array) -> jax.Array:
    """Cho & Saul's ``J_1(theta) = sin(theta) + (pi - theta) cos(theta)`` as a function of
    ``cos(theta)``; its derivative ``pi - theta`` stays finite at ``cos(theta) = +-1``."""
    return jnp.sqrt(jnp.maximum(1.0 - cosine**2, 0.0)) + (jnp.pi - jnp.arccos(cosine)) * cosine


@_arccos_j1.defjvp
def _arccos_j1_jvp(primals, tangents):
    (cosine,), (tangent,) = primals, tangents
    return _arccos_j1(cosine), (jnp.pi - jnp.arccos(cosine)) * tangent


def _arccosine_matrix(params: ArcCosineParams, x1: jax.Array, x2: jax.Array) -> jax.Array:
    cross, norms1, norms2 = _augmented_products(params, x1, x2)
    scale = jnp.sqrt(norms1[:, None] * norms2[None, :])
    cosine = jnp.clip(cross / scale, -1.0, 1.0)
    return jnp.exp(params.log_variance) / jnp.pi * scale * _arccos_j1(cosine)


def _arccosine_diag(params: ArcCosineParams, x: jax.Array) -> jax.Array:
    return jnp.exp(params.log_variance) * _augmented_norms(params, x)


def arccosine_kernel(
    *, variance: float = 1.0, weight_variance: Any = 1.0, bias_variance: float = 1.0
) -> Kernel:
    """The arc-cosine kernel of order 1 (Cho & Saul 2009): one infinitely wide ReLU layer.

    ``k(x, y) = (s2/pi) sqrt(S(x, x) S(y, y)) (sin t + (pi - t) cos t)``, with
    ``cos t = S(x, y) / sqrt(S(x, x) S(y, y))`` and ``S(x, y) = sw2 x.y + sb2``. This equals
    ``2 s2 E[relu(w.x + b) relu(w.y + b)]`` for ``w ~ N(0, sw2 I)``, ``b ~ N(0, sb2)``, so
    ``k(x, x) = s2 S(x, x)``; with ``s2 = sw2 = 1`` and ``sb2 -> 0`` it is Cho & Saul's ``k_1``.

    Args:
      variance: ``s2 > 0``.
      weight_variance: ``sw2 > 0``, a scalar or one per input dimension (ARD).
      bias_variance: ``sb2 > 0`` (keeps ``S(x, x) > 0`` at ``x = 0``).

    Returns:
      A :class:`Kernel` whose params are :class:`ArcCosineParams`.
    """
    logs = ArcCosineParams(
        _log_positive("variance", variance),
        _log_positive("weight_variance", weight_variance),
        _log_positive("bias_variance", bias_variance),
    )
    return Kernel(lambda: jax.tree.map(jnp.asarray, logs), _arccosine_matrix, _arccosine_diag)


def _rbf_matrix(params: RBFParams, x1: jax.Array, x2: jax.Array) -> jax.Array:
    scaled1 = x1 / jnp.exp(params.log_lengthscale)
    scaled2 = x2 / jnp.exp(params.log_lengthscale)
    squared_distances = jnp.sum((scaled1[:, None, :] - scaled2[None, :, :]) ** 2, axis=-1)
    return jnp.exp(params.log_variance) * jnp.exp(-0.5 * squared_distances)


def _rbf_diag(params: RBFParams, x: jax.Array) -> jax.Array:
    return jnp.full(x.shape[:1], jnp.exp(params.log_variance))


def rbf_kernel(*, variance: float = 1.0, lengthscale: Any = 1.0) -> Kernel:
    """The squared-exponential kernel ``k(x, y) = s2 exp(-|(x - y) / l|^2 / 2)``.

    Args:
      variance: ``s2 > 0``.
      lengthscale: ``l > 0``, a scalar or one per input dimension (ARD).

    Returns:
      A :class:`Kernel` whose params are :class:`RBFParams`.
    """
    logs = RBFParams(_log_positive("variance", variance), _log_positive("lengthscale", lengthscale))
    return Kernel(lambda: jax.tree.map(jnp.asarray, logs), _rbf_matrix, _rbf_diag)


def sum_kernel(*kernels: Kernel) -> Kernel:
    """``k(x, y) = sum_i k_i(x, y)``; its params are the tuple of the summands' params.

    Example:
      >>> kernel = sum_kernel(arcsine_kernel(), rbf_kernel())   # the notebook's musing
    """
    if len(kernels) < 2 or not all(isinstance(k, Kernel) for k in kernels):
        raise ValueError(f"kernels: expected at least two Kernel instances, got {kernels!r}")

    def init():
        return tuple(k.init() for k in kernels)

    def matrix(params, x1, x2):
        return sum(k.matrix(p, x1, x2) for k, p in zip(kernels, params, strict=True))

    def diag(params, x):
        return sum(k.diag(p, x) for k, p in zip(kernels, params, strict=True))

    return Kernel(init, matrix, diag)
