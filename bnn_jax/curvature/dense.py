"""Dense (full) GGN/Fisher ``C = sum_n sum_m g_nm g_nm^T`` over the selected parameters.

``O(P^2)`` memory: for tiny networks and last layers (``subset=``), and as the reference the
other structures are tested against. ``finalize`` stores the eigendecomposition
``C = V diag(lam) V^T`` (eigenvalues clamped at 0: ``C`` is positive semi-definite, negative
values are rounding), so that with ``d = scale lam + prior_prec``:
``solve(v) = V (V^T v / d)``, ``sample = V (eps / sqrt(d))``, ``log_det = sum log d``. A
per-leaf ``prior_prec`` (``base``) gives ``P = scale C + diag(tau)``, no longer diagonal in
``V``: its Cholesky factor ``P = L L^T`` (``O(P^3)`` per call) gives ``solve``,
``sample = L^-T eps`` and ``log_det = 2 sum log diag(L)``.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from bnn_jax import checks, chunking, tree
from bnn_jax.curvature import per_example
from bnn_jax.curvature.base import Curvature, is_scalar_prior, prior_vector, with_checks
from bnn_jax.curvature.fisher import Fisher, batch_factors
from bnn_jax.curvature.layout import Layout
from bnn_jax.curvature.subset import Subset, everything
from bnn_jax.losses import Likelihood
from bnn_jax.types import ApplyFn

__all__ = ["DenseState", "dense"]


class DenseState(NamedTuple):
    """``matrix``: ``C`` (sum over examples) ``[P, P]``; ``eigenvalues``/``eigenvectors``: its
    eigendecomposition after ``finalize``; ``num_data``: examples seen; ``layout``: the
    selected parameters' structure (static)."""

    matrix: jax.Array
    eigenvalues: jax.Array
    eigenvectors: jax.Array
    num_data: jax.Array
    layout: Layout


def dense(
    apply_fn: ApplyFn,
    likelihood: Likelihood,
    *,
    fisher: Fisher,
    subset: Subset | None = None,
    chunk_size: int | None = None,
) -> Curvature:
    """Full curvature matrix over the selected parameters.

    Args:
      apply_fn: ``apply_fn(params, x) -> outputs [B, K]``.
      likelihood: from ``bnn_jax.losses``.
      fisher: ``exact_fisher()``, ``mc_fisher(num_samples=...)`` or ``empirical_fisher()``.
      subset: parameters to cover (default: all).
      chunk_size: examples per chunk of per-example gradients (``None``: whole batch).

    Example:
      >>> curv = dense(apply_fn, losses.categorical(), fisher=exact_fisher(),
      ...              subset=subset.last_layer(apply_fn, params, x[:1]))
    """
    checks.chunk_size("chunk_size", chunk_size)
    subset = everything() if subset is None else subset

    def init(params, x):
        del x  # no layer structure needed
        layout = Layout.of(subset.select(params))
        p, dtype = layout.size, layout.dtype
        return DenseState(
            matrix=jnp.zeros((p, p), dtype),
            eigenvalues=jnp.zeros((p,), dtype),
            eigenvectors=jnp.zeros((p, p), dtype),
            num_data=jnp.zeros((), jnp.int32),
            layout=layout,
        )

    def update(state, params, batch, key):
        _, factors = batch_factors(apply_fn, likelihood, fisher, params, batch, key)

        def contribution(x, s):
            grads = per_example.output_vjps(apply_fn, params, subset, x, s)
            flat = state.layout.ravel(grads, batch_dims=2).reshape(-1, state.layout.size)
            return flat.T @ flat

        delta = chunking.sum_batches(contribution, batch.x, factors, chunk_size=chunk_size)
        return state._replace(
            matrix=state.matrix + delta.astype(state.matrix.dtype),
            num_data=state.num_data + batch.x.shape[0],
        )

    def finalize(state):
        eigenvalues, eigenvectors = jnp.linalg.eigh(0.5 * (state.matrix + state.matrix.T))
        return state._replace(eigenvalues=jnp.maximum(eigenvalues, 0.0), eigenvectors=eigenvectors)

    def precision_mvp(state, v, scale, prior_prec):
        flat = state.layout.ravel(v)
        tau = prior_vector(prior_prec, state.layout)
        return state.layout.unravel(scale * (state.matrix @ flat) + tau * flat)

    def _diag(state, scale, prior_prec):
        return scale * state.eigenvalues + prior_prec

    def _cholesky(state, scale, prior_prec):
        m = 0.5 * (state.matrix + state.matrix.T)
        return jnp.linalg.cholesky(scale * m + jnp.diag(prior_vector(prior_prec, state.layout)))

    def solve(state, v, scale, prior_prec):
        flat = state.layout.ravel(v)
        if not is_scalar_prior(prior_prec):
            chol = _cholesky(state, scale, prior_prec)
            return state.layout.unravel(jax.scipy.linalg.cho_solve((chol, True), flat))
        vecs = state.eigenvectors
        return state.layout.unravel(vecs @ ((vecs.T @ flat) / _diag(state, scale, prior_prec)))

    def sample(state, key, scale, prior_prec):
        (eps,) = tree.standard_normals(key, [state.eigenvalues.shape], state.eigenvalues.dtype)
        if not is_scalar_prior(prior_prec):
            chol = _cholesky(state, scale, prior_prec)
            z = jax.scipy.linalg.solve_triangular(chol.T, eps, lower=False)
            return state.layout.unravel(z)
        z = state.eigenvectors @ (eps * jax.lax.rsqrt(_diag(state, scale, prior_prec)))
        return state.layout.unravel(z)

    def log_det(state, scale, prior_prec):
        if not is_scalar_prior(prior_prec):
            chol = _cholesky(state, scale, prior_prec)
            return 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))
        return jnp.sum(jnp.log(_diag(state, scale, prior_prec)))

    def to_dense(state):
        return state.matrix

    return with_checks(
        Curvature(
            init, update, finalize, precision_mvp, solve, sample, log_det, to_dense,
            apply_fn, likelihood, subset,
        )
    )  # fmt: skip
