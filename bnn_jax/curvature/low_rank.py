"""Low-rank plus diagonal curvature: top-``k`` eigenpairs of the GGN and an exact diagonal.

``C ≈ U diag(lam) U^T + diag(c)`` with ``U [P, k]`` orthonormal and the correction
``c = max(diag(C) - diag(U diag(lam) U^T), 0)``, so the diagonal is exact (the "INF" form of
Lee, Humt et al. 2020). The eigenpairs come from randomised subspace iteration (Halko et al.
2011) on GGN-vector products ``C q = sum_n J_n^T S_n S_n^T J_n q`` (a JVP and a VJP per column,
never a Jacobian), with one pass over the data per iteration:

- ``init``: ``Q_0 = orth(Omega)``, ``Omega [P, r]`` standard normal from the factory's ``key``,
  ``r = min(k + oversampling, P)``.
- pass ``i`` (``update``): accumulate ``Y = C Q_i``; pass 0 also accumulates ``diag(C)``.
- ``finalize``: Rayleigh-Ritz, ``eig(Q_i^T Y)`` gives ``lam`` and ``U = Q_i V`` (top ``k``;
  eigenvalues clamped at 0), then ``Q_{i+1} = orth(Y)``.

``num_passes = num_iterations + 1``. With ``k = P`` the result is ``C`` itself. Use the same
batches on every pass; with the MC Fisher each pass sees its own sampled labels, so prefer
``exact_fisher()`` here.

With ``D = scale c + tau`` (``tau`` a vector for a per-leaf prior) and ``W = U sqrt(scale
lam)`` the precision is ``D + W W^T``:
``solve`` by Woodbury, ``(D + W W^T)^{-1} = D^{-1} - D^{-1} W K^{-1} W^T D^{-1}``,
``K = I + W^T D^{-1} W``; ``log_det = sum log D + log det K`` (determinant lemma); exact
samples ``z = D^{-1/2} (eps + Q_V ((1 + s^2)^{-1/2} - 1) Q_V^T eps)`` from the thin SVD
``D^{-1/2} W = Q_V diag(s) R^T``.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from bnn_jax import checks, tree
from bnn_jax.curvature.base import Curvature, prior_vector, with_checks
from bnn_jax.curvature.diagonal import diagonal
from bnn_jax.curvature.fisher import Fisher, batch_factors
from bnn_jax.curvature.layout import Layout
from bnn_jax.curvature.subset import Subset, everything
from bnn_jax.losses import Likelihood
from bnn_jax.types import ApplyFn, Key

__all__ = ["LowRankState", "low_rank"]


class LowRankState(NamedTuple):
    """``basis``: the current subspace ``Q [P, r]``; ``products``: ``C Q`` of this pass;
    ``diagonal``: ``diag(C)``; ``eigenvalues [k]``, ``eigenvectors [P, k]``: the top-``k``
    pairs after ``finalize``; ``correction [P]``: the diagonal correction ``c``; ``passes``;
    ``num_data``; ``layout`` (static)."""

    basis: jax.Array
    products: jax.Array
    diagonal: jax.Array
    eigenvalues: jax.Array
    eigenvectors: jax.Array
    correction: jax.Array
    passes: jax.Array
    num_data: jax.Array
    layout: Layout


def low_rank(
    apply_fn: ApplyFn,
    likelihood: Likelihood,
    *,
    fisher: Fisher,
    rank: int,
    key: Key,
    subset: Subset | None = None,
    num_iterations: int = 2,
    oversampling: int = 10,
    chunk_size: int | None = 32,
) -> Curvature:
    """Top-``rank`` eigenpairs plus exact diagonal over the selected parameters.

    Args:
      apply_fn: ``apply_fn(params, x) -> outputs [B, K]``.
      likelihood: from ``bnn_jax.losses``.
      fisher: a Fisher type (``exact_fisher()`` recommended, see the module docstring).
      rank: number ``k`` of eigenpairs, ``1 <= k <= P``.
      key: draws the random starting subspace.
      subset: parameters to cover (default: all).
      num_iterations: subspace iterations (extra passes over the data).
      oversampling: extra columns of the subspace, ``r = min(k + oversampling, P)``.
      chunk_size: examples per chunk for the diagonal's per-example gradients.

    Example:
      >>> curv = low_rank(apply_fn, losses.categorical(), fisher=exact_fisher(), rank=20,
      ...                 key=jax.random.key(0))
      >>> curv.num_passes
      3
    """
    checks.positive_int("rank", rank)
    checks.positive_int("num_iterations", num_iterations, minimum=0)
    checks.positive_int("oversampling", oversampling, minimum=0)
    checks.key("key", key)
    checks.chunk_size("chunk_size", chunk_size)
    subset = everything() if subset is None else subset
    diag_curvature = diagonal(
        apply_fn, likelihood, fisher=fisher, subset=subset, chunk_size=chunk_size
    )

    def init(params, x):
        del x  # no layer structure needed
        layout = Layout.of(subset.select(params))
        p, dtype = layout.size, layout.dtype
        if rank > p:
            raise ValueError(f"rank: expected at most the {p} selected parameters, got {rank}")
        r = min(rank + oversampling, p)
        basis, _ = jnp.linalg.qr(jax.random.normal(key, (p, r), dtype))
        return LowRankState(
            basis=basis,
            products=jnp.zeros((p, r), dtype),
            diagonal=jnp.zeros((p,), dtype),
            eigenvalues=jnp.zeros((rank,), dtype),
            eigenvectors=jnp.zeros((p, rank), dtype),
            correction=jnp.zeros((p,), dtype),
            passes=jnp.zeros((), jnp.int32),
            num_data=jnp.zeros((), jnp.int32),
            layout=layout,
        )

    def update(state, params, batch, step_key):
        layout = state.layout
        selected = subset.select(params)
        outputs, jvp_fn = jax.linearize(
            lambda theta: apply_fn(subset.merge(params, theta), batch.x), selected
        )
        _, factors = batch_factors(apply_fn, likelihood, fisher, params, batch, step_key, outputs)
        vjp_fn = jax.linear_transpose(jvp_fn, selected)

        def ggn_column(q):
            jq = jvp_fn(layout.unravel(q))
            cotangent = jnp.einsum("bkm,bm->bk", factors, jnp.einsum("bkm,bk->bm", factors, jq))
            return layout.ravel(vjp_fn(cotangent)[0])

        products = jax.vmap(ggn_column, in_axes=1, out_axes=1)(state.basis)

        def with_diagonal(st):
            zero = diag_curvature.init(params, batch.x)
            diag = diag_curvature.update(zero, params, batch, step_key).diagonal
            return st._replace(
                diagonal=st.diagonal + layout.ravel(diag),
                num_data=st.num_data + batch.x.shape[0],
            )

        state = jax.lax.cond(state.passes == 0, with_diagonal, lambda st: st, state)
        return state._replace(products=state.products + products.astype(state.products.dtype))

    def finalize(state):
        q, y = state.basis, state.products
        ritz = q.T @ y
        values, vectors = jnp.linalg.eigh(0.5 * (ritz + ritz.T))
        top = jnp.arange(values.shape[0] - 1, values.shape[0] - 1 - rank, -1)
        eigenvalues = jnp.maximum(values[top], 0.0)
        eigenvectors = q @ vectors[:, top]
        explained = jnp.sum(eigenvectors**2 * eigenvalues, axis=1)
        basis, _ = jnp.linalg.qr(y)
        return state._replace(
            basis=basis,
            products=jnp.zeros_like(y),
            eigenvalues=eigenvalues,
            eigenvectors=eigenvectors,
            correction=jnp.maximum(state.diagonal - explained, 0.0),
            passes=state.passes + 1,
        )

    def _parts(state, scale, prior_prec):
        d = scale * state.correction + prior_vector(prior_prec, state.layout)
        w = state.eigenvectors * jnp.sqrt(scale * state.eigenvalues)
        return d, w

    def precision_mvp(state, v, scale, prior_prec):
        u, lam = state.eigenvectors, state.eigenvalues
        x = state.layout.ravel(v)
        tau = prior_vector(prior_prec, state.layout)
        out = scale * (u @ (lam * (u.T @ x)) + state.correction * x) + tau * x
        return state.layout.unravel(out)

    def _capacitance(d, w):
        k = jnp.eye(w.shape[1], dtype=w.dtype) + w.T @ (w / d[:, None])
        return jnp.linalg.cholesky(k)

    def solve(state, v, scale, prior_prec):
        d, w = _parts(state, scale, prior_prec)
        x = state.layout.ravel(v) / d
        chol = _capacitance(d, w)
        inner = jax.scipy.linalg.cho_solve((chol, True), w.T @ x)
        return state.layout.unravel(x - (w @ inner) / d)

    def sample(state, key, scale, prior_prec):
        d, w = _parts(state, scale, prior_prec)
        root = jax.lax.rsqrt(d)
        q_v, s, _ = jnp.linalg.svd(w * root[:, None], full_matrices=False)
        (eps,) = tree.standard_normals(key, [d.shape], d.dtype)
        z = eps + q_v @ ((jax.lax.rsqrt(1.0 + s**2) - 1.0) * (q_v.T @ eps))
        return state.layout.unravel(root * z)

    def log_det(state, scale, prior_prec):
        d, w = _parts(state, scale, prior_prec)
        chol = _capacitance(d, w)
        return jnp.sum(jnp.log(d)) + 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))

    def to_dense(state):
        u, lam = state.eigenvectors, state.eigenvalues
        return (u * lam) @ u.T + jnp.diag(state.correction)

    return with_checks(
        Curvature(
            init, update, finalize, precision_mvp, solve, sample, log_det, to_dense,
            apply_fn, likelihood, subset, num_iterations + 1,
        )
    )  # fmt: skip
