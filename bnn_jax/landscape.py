"""Loss landscapes along random directions and Gaussians on their planes (Li et al. 2018).

Around trained parameters ``w`` the landscape is any scalar ``fn(params)`` (the loss or the
accuracy on a fixed batch) evaluated at ``w + a d1`` (1-D) or ``w + a d1 + b d2`` (2-D) for
random, filter-normalised directions ``d1, d2``. Near a minimum ``exp(-loss)`` looks like an
unnormalised Gaussian ``c exp(-1/2 (z - m)^T S^-1 (z - m))`` in the plane coordinates
``z = (a, b)``; :func:`fit_gaussian_2d` fits one by least squares, and :func:`plane_gaussian`
gives the Gaussian a Laplace posterior ``N(w, P^-1)`` implies on the same plane.

Grids use ``"ij"`` indexing: ``values[i, j]`` belongs to ``(alphas[i], betas[j])``, so
``ax.contourf(alphas, betas, values.T)`` draws it (``bnn_jax.plotting`` does this for you).
All functions are pure and jittable (static: ``fn``, ``precision_mvp``, ``chunk_size``,
``num_steps``); value checks (finite grids, non-negative values) run only on concrete inputs.

Example:
  >>> loss = lambda p: nll(apply_fn(p, x), y)                   # a fixed batch
  >>> k1, k2 = jax.random.split(jax.random.key(0))
  >>> d1, d2 = random_direction(k1, params), random_direction(k2, params)
  >>> grid = jnp.linspace(-1.0, 1.0, 41)
  >>> surface = slice_2d(loss, params, d1, d2, grid, grid, chunk_size=64)
  >>> fit, fitted = fit_gaussian_2d(grid, grid, jnp.exp(-surface))
"""

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bnn_jax import checks, chunking
from bnn_jax.tree import normal_like, tree_dot
from bnn_jax.types import Key, Params
from bnn_jax.uncertainty import is_concrete

__all__ = [
    "Gaussian2D",
    "fit_gaussian_2d",
    "gaussian_on_grid",
    "plane_gaussian",
    "plane_precision",
    "random_direction",
    "slice_1d",
    "slice_2d",
]


class Gaussian2D(NamedTuple):
    """An unnormalised 2-D Gaussian ``c exp(-1/2 (z - m)^T S^-1 (z - m))`` in plane coordinates."""

    amplitude: jax.Array
    """The peak value ``c`` (scalar)."""
    mean: jax.Array
    """The centre ``m``, shape ``[2]``."""
    covariance: jax.Array
    """``S``, symmetric positive definite, shape ``[2, 2]``."""


def _check_params(params: Params, name: str = "params") -> None:
    leaves = jax.tree.leaves(params)
    if not leaves:
        raise ValueError(f"{name}: expected a pytree with at least one array leaf, got none")
    for leaf in leaves:
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise ValueError(f"{name}: expected floating-point leaves, got {jnp.result_type(leaf)}")


def _check_direction(params: Params, direction: Params, name: str) -> None:
    _check_params(direction, name)
    if jax.tree.structure(direction) != jax.tree.structure(params):
        raise ValueError(
            f"{name}: expected the tree structure of params {jax.tree.structure(params)}, "
            f"got {jax.tree.structure(direction)}"
        )
    for p, d in zip(jax.tree.leaves(params), jax.tree.leaves(direction), strict=True):
        if jnp.shape(p) != jnp.shape(d):
            raise ValueError(
                f"{name}: expected leaf shapes equal to params', got {jnp.shape(d)} for a "
                f"params leaf of shape {jnp.shape(p)}"
            )


def _check_axis(name: str, values) -> jax.Array:
    if jnp.ndim(values) != 1 or jnp.shape(values)[0] == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D array, got shape {jnp.shape(values)}")
    if is_concrete(values) and not np.all(np.isfinite(np.asarray(values, dtype=np.float64))):
        raise ValueError(f"{name}: expected finite values (no NaN or inf)")
    return jnp.asarray(values)


def _filter_normalized(direction: jax.Array, param: jax.Array) -> jax.Array:
    if param.ndim <= 1:
        return jnp.zeros_like(direction)
    axes = tuple(range(param.ndim - 1))
    direction_norm = jnp.sqrt(jnp.sum(direction**2, axis=axes, keepdims=True))
    param_norm = jnp.sqrt(jnp.sum(param**2, axis=axes, keepdims=True))
    return direction * (param_norm / jnp.where(direction_norm > 0, direction_norm, 1.0))


def random_direction(key: Key, params: Params, *, filter_normalize: bool = True) -> Params:
    """A random direction shaped like ``params``: ``d ~ N(0, I)``, filter-normalised by default.

    Filter normalisation (Li et al. 2018): for every leaf with two or more axes (Dense kernels
    ``[in, out]``, Conv kernels ``[h, w, in, out]``) each filter ``d[..., k]`` along the last
    (output-feature) axis is rescaled to the norm of the same filter of ``params``,
    ``d_k <- d_k ||w_k|| / ||d_k||``, so a step ``a`` moves every unit by the same relative
    amount whatever its scale. Leaves with at most one axis (biases, norm scales, scalars) get
    a zero direction, as in Li et al.'s ``ignore="biasbn"``: the slice keeps them at their
    trained values. With ``filter_normalize=False`` the raw Gaussian draw is returned.

    Args:
      key: PRNG key.
      params: the trained parameters (a pytree of floating arrays).
      filter_normalize: rescale per filter as above.

    Returns:
      A pytree with the structure, shapes and dtypes of ``params``.

    Example:
      >>> keys = jax.random.split(jax.random.key(0), 2)
      >>> d1, d2 = (random_direction(k, params) for k in keys)
      >>> stacked = jax.vmap(lambda k: random_direction(k, params))(keys)   # leading axis 2
    """
    checks.key("key", key)
    _check_params(params)
    direction = normal_like(key, params)
    if not filter_normalize:
        return direction
    return jax.tree.map(_filter_normalized, direction, params)


def _plane_points(alphas: jax.Array, betas: jax.Array) -> jax.Array:
    """``[A, B, 2]`` grid points ``(alphas[i], betas[j])``."""
    return jnp.stack(jnp.meshgrid(alphas, betas, indexing="ij"), axis=-1)


def _shifted(params: Params, directions: tuple[Params, ...], coefficients: jax.Array) -> Params:
    """``params + sum_k coefficients[k] directions[k]``, in the dtype of each params leaf."""

    def leaf(p, *ds):
        moved = p + sum(c * d for c, d in zip(coefficients, ds, strict=True))
        return moved.astype(p.dtype)

    return jax.tree.map(leaf, params, *directions)


def _evaluate(fn, params, directions, coefficients, chunk_size):
    """``fn`` at ``params + coefficients[n] . directions`` for every row ``n``."""
    checks.chunk_size("chunk_size", chunk_size)
    out = jax.eval_shape(fn, params)
    if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != ():
        raise ValueError(f"fn: expected a scalar output fn(params), got {out}")

    def at(row):
        return fn(_shifted(params, directions, row))

    return chunking.map_chunks(at, coefficients, chunk_size)


def slice_1d(
    fn: Callable[[Params], jax.Array],
    params: Params,
    direction: Params,
    alphas: jax.Array,
    *,
    chunk_size: int | None = None,
) -> jax.Array:
    """``fn(params + a d)`` for every ``a`` in ``alphas``.

    Args:
      fn: scalar function of the parameters (loss or accuracy on a fixed batch).
      params: the centre of the slice (trained parameters).
      direction: a pytree shaped like ``params`` (e.g. :func:`random_direction`).
      alphas: ``[A]`` step sizes.
      chunk_size: evaluate this many points at once with ``vmap`` (``lax.map`` over chunks);
        ``None`` vmaps over all points at once.

    Returns:
      ``[A]`` values.

    Example:
      >>> curve = slice_1d(loss, params, d1, jnp.linspace(-1.0, 1.0, 51), chunk_size=16)
    """
    _check_params(params)
    _check_direction(params, direction, "direction")
    alphas = _check_axis("alphas", alphas)
    return _evaluate(fn, params, (direction,), alphas[:, None], chunk_size)


def slice_2d(
    fn: Callable[[Params], jax.Array],
    params: Params,
    d1: Params,
    d2: Params,
    alphas: jax.Array,
    betas: jax.Array,
    *,
    chunk_size: int | None = None,
) -> jax.Array:
    """``fn(params + a d1 + b d2)`` on the grid ``alphas x betas`` (``"ij"`` indexing).

    Args:
      fn: scalar function of the parameters (loss or accuracy on a fixed batch).
      params: the centre of the slice (trained parameters).
      d1, d2: pytrees shaped like ``params`` spanning the plane.
      alphas: ``[A]`` steps along ``d1``.
      betas: ``[B]`` steps along ``d2``.
      chunk_size: evaluate this many grid points at once with ``vmap`` (``lax.map`` over
        chunks); ``None`` vmaps over all ``A * B`` points at once.

    Returns:
      ``[A, B]`` values, ``values[i, j] = fn(params + alphas[i] d1 + betas[j] d2)``.
    """
    _check_params(params)
    _check_direction(params, d1, "d1")
    _check_direction(params, d2, "d2")
    alphas, betas = _check_axis("alphas", alphas), _check_axis("betas", betas)
    values = _evaluate(
        fn, params, (d1, d2), _plane_points(alphas, betas).reshape(-1, 2), chunk_size
    )
    return values.reshape(alphas.shape[0], betas.shape[0])


def gaussian_on_grid(gaussian: Gaussian2D, alphas: jax.Array, betas: jax.Array) -> jax.Array:
    """``c exp(-1/2 (z - m)^T S^-1 (z - m))`` at ``z = (alphas[i], betas[j])``.

    Args:
      gaussian: a :class:`Gaussian2D`.
      alphas: ``[A]`` first coordinates.
      betas: ``[B]`` second coordinates.

    Returns:
      ``[A, B]`` values.
    """
    alphas, betas = _check_axis("alphas", alphas), _check_axis("betas", betas)
    if jnp.shape(gaussian.mean) != (2,) or jnp.shape(gaussian.covariance) != (2, 2):
        raise ValueError(
            "gaussian: expected mean of shape (2,) and covariance of shape (2, 2), got "
            f"{jnp.shape(gaussian.mean)} and {jnp.shape(gaussian.covariance)}"
        )
    offsets = _plane_points(alphas, betas) - gaussian.mean
    quadratic = jnp.einsum("abi,ij,abj->ab", offsets, jnp.linalg.inv(gaussian.covariance), offsets)
    return gaussian.amplitude * jnp.exp(-0.5 * quadratic)


def _unpack(theta: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``theta = (log c, m1, m2, log L11, L21, log L22)`` -> ``(log c, m, precision L L^T)``."""
    lower = jnp.array([[jnp.exp(theta[3]), 0.0], [theta[4], jnp.exp(theta[5])]], theta.dtype)
    return theta[0], theta[1:3], lower @ lower.T


def _model(theta: jax.Array, points: jax.Array) -> jax.Array:
    log_amplitude, mean, precision = _unpack(theta)
    offsets = points - mean
    quadratic = jnp.einsum("ni,ij,nj->n", offsets, precision, offsets)
    return jnp.exp(log_amplitude - 0.5 * quadratic)


def _moment_start(points: jax.Array, values: jax.Array) -> jax.Array:
    """Start from the moments of ``values`` seen as an unnormalised density on the grid."""
    weights = jnp.maximum(values, 0.0) / jnp.sum(jnp.maximum(values, 0.0))
    mean = weights @ points
    offsets = points - mean
    spread = jnp.max(points, axis=0) - jnp.min(points, axis=0)
    jitter = jnp.diag((1e-3 * jnp.where(spread > 0, spread, 1.0)) ** 2)
    covariance = (offsets * weights[:, None]).T @ offsets + jitter
    lower = jnp.linalg.cholesky(jnp.linalg.inv(covariance))
    log_diagonal = jnp.log(jnp.diag(lower))
    head = jnp.stack([jnp.log(jnp.max(values)), mean[0], mean[1]])
    return jnp.concatenate([head, jnp.stack([log_diagonal[0], lower[1, 0], log_diagonal[1]])])


def fit_gaussian_2d(
    alphas: jax.Array, betas: jax.Array, values: jax.Array, *, num_steps: int = 100
) -> tuple[Gaussian2D, jax.Array]:
    """Least-squares fit of ``c exp(-1/2 (z - m)^T S^-1 (z - m))`` to ``values`` on the grid.

    Minimises ``sum_ij (g(alphas[i], betas[j]) - values[i, j])^2`` over ``c > 0``, ``m`` and a
    positive-definite ``S`` (parametrised by the Cholesky factor of ``S^-1`` with log
    diagonal), with Levenberg-Marquardt started from the moments of ``values`` seen as an
    unnormalised density. ``num_steps`` iterations run in a ``lax.fori_loop``.

    Args:
      alphas: ``[A]`` first coordinates of the grid.
      betas: ``[B]`` second coordinates of the grid.
      values: ``[A, B]`` non-negative values, typically ``exp(-loss)`` from :func:`slice_2d`,
        not all zero.
      num_steps: Levenberg-Marquardt iterations, >= 1 (static).

    Returns:
      ``(gaussian, fitted)``: the :class:`Gaussian2D` and its ``[A, B]`` values on the grid.

    Example:
      >>> fit, fitted = fit_gaussian_2d(grid, grid, jnp.exp(-surface))
      >>> fit.covariance                                  # the landscape's width in the plane
    """
    alphas, betas = _check_axis("alphas", alphas), _check_axis("betas", betas)
    shape = (alphas.shape[0], betas.shape[0])
    if jnp.shape(values) != shape:
        raise ValueError(f"values: expected shape {shape} (alphas, betas), got {jnp.shape(values)}")
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps: expected an integer >= 1, got {num_steps!r}")
    if is_concrete(values):
        concrete = np.asarray(values, dtype=np.float64)
        if not np.all(np.isfinite(concrete)) or np.any(concrete < 0) or not np.any(concrete > 0):
            raise ValueError(
                "values: expected finite values >= 0, not all zero (exp(-loss) on the grid)"
            )

    dtype = jnp.result_type(values, alphas, betas, jnp.float32)
    points = _plane_points(alphas, betas).reshape(-1, 2).astype(dtype)
    theta = _levenberg_marquardt(points, jnp.asarray(values, dtype).reshape(-1), num_steps)
    log_amplitude, mean, precision = _unpack(theta)
    gaussian = Gaussian2D(jnp.exp(log_amplitude), mean, jnp.linalg.inv(precision))
    return gaussian, _model(theta, points).reshape(shape)


@functools.partial(jax.jit, static_argnames="num_steps")
def _levenberg_marquardt(points: jax.Array, targets: jax.Array, num_steps: int) -> jax.Array:
    """Minimise ``sum (_model(theta, points) - targets)^2`` from the moment start (jitted once
    per shape, so repeated eager fits do not re-trace the loop)."""
    dtype = targets.dtype

    def residuals(theta):
        return _model(theta, points) - targets

    def step(_, carry):
        theta, damping = carry
        r = residuals(theta)
        jac = jax.jacfwd(residuals)(theta)
        normal = jac.T @ jac
        scaled = normal + damping * jnp.diag(jnp.diag(normal) + jnp.finfo(dtype).tiny)
        trial = theta - jnp.linalg.solve(scaled, jac.T @ r)
        better = jnp.all(jnp.isfinite(trial)) & (jnp.sum(residuals(trial) ** 2) < jnp.sum(r**2))
        return jnp.where(better, trial, theta), jnp.where(better, damping / 3, damping * 2)

    start = _moment_start(points, targets)
    theta, _ = jax.lax.fori_loop(0, num_steps, step, (start, jnp.asarray(1e-3, dtype)))
    return theta


def plane_precision(precision_mvp: Callable[[Params], Params], d1: Params, d2: Params) -> jax.Array:
    """The ``2 x 2`` precision ``D^T P D`` of a Gaussian posterior on the plane ``D = [d1 d2]``.

    A posterior ``N(w, P^-1)`` evaluated on the slice ``w + a d1 + b d2`` is, as a function of
    ``z = (a, b)``, proportional to ``exp(-1/2 z^T (D^T P D) z)``: this is the slice of the
    posterior density that :func:`slice_2d` draws for ``exp(-loss)`` (not the marginal of the
    projection). The result is symmetrised, ``(M + M^T) / 2``.

    Args:
      precision_mvp: ``v -> P v`` on pytrees shaped like ``d1``, e.g. a curvature's
        ``lambda v: curv.precision_mvp(state, v, scale, prior_prec)``.
      d1, d2: the plane's directions, pytrees of the parameters the curvature covers
        (``subset.select(direction)`` for a subset).

    Returns:
      ``[2, 2]`` symmetric matrix ``[[d1.P d1, d1.P d2], [d2.P d1, d2.P d2]]``.

    Example:
      >>> mvp = lambda v: curv.precision_mvp(state, v, scale, prior_prec)
      >>> plane_precision(mvp, d1, d2)
    """
    _check_params(d1, "d1")
    _check_direction(d1, d2, "d2")
    columns = [precision_mvp(d1), precision_mvp(d2)]
    structures = {jax.tree.structure(column) for column in columns}
    if structures != {jax.tree.structure(d1)}:
        raise ValueError(
            f"precision_mvp: expected outputs with the tree structure of d1, got {structures}"
        )
    gram = jnp.stack([jnp.stack([tree_dot(d, column) for column in columns]) for d in (d1, d2)])
    return 0.5 * (gram + gram.T)


def plane_gaussian(
    precision_mvp: Callable[[Params], Params],
    d1: Params,
    d2: Params,
    *,
    amplitude: jax.Array | float = 1.0,
) -> Gaussian2D:
    """The Gaussian a posterior ``N(w, P^-1)`` implies on the slice ``w + a d1 + b d2``.

    ``amplitude * exp(-1/2 z^T (D^T P D) z)``: mean 0 (the slice is centred on the posterior
    mean ``w``) and covariance ``(D^T P D)^-1`` (see :func:`plane_precision`). To compare it with
    ``exp(-loss)`` of a mean loss over ``n`` examples (with weight decay
    ``tau / (2 n) ||w||^2``), use the precision of that loss, ``scale = 1 / n`` and
    ``prior_prec = tau / n`` for a curvature summed over the ``n`` examples, and
    ``amplitude = exp(-loss(w))``.

    Args:
      precision_mvp: ``v -> P v`` on pytrees shaped like ``d1``.
      d1, d2: the plane's directions.
      amplitude: the peak value ``c``.

    Returns:
      A :class:`Gaussian2D`; :func:`gaussian_on_grid` evaluates it.

    Example:
      >>> mvp = lambda v: curv.precision_mvp(state, v, 1.0 / n, tau / n)
      >>> implied = plane_gaussian(mvp, d1, d2, amplitude=jnp.exp(-loss(params)))
      >>> values = gaussian_on_grid(implied, grid, grid)
    """
    precision = plane_precision(precision_mvp, d1, d2)
    dtype = precision.dtype
    return Gaussian2D(jnp.asarray(amplitude, dtype), jnp.zeros(2, dtype), jnp.linalg.inv(precision))
