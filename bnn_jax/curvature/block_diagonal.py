"""Block-diagonal curvature: a dense block per Dense/Conv layer (the post's block-wise form).

Each selected Dense/Conv layer's kernel and bias (``W = [kernel; bias]``, raveled row-major)
get the exact block ``B = sum_nm vec(g_nm) vec(g_nm)^T`` with per-example pseudo-gradients
``g_nm = sum_t a_nt b_nmt^T`` formed from captured inputs/patches and output gradients in
chunks of ``chunk_size`` examples (``O(chunk x block size)`` memory). Other parameters get
a diagonal block. Memory is ``O(sum of (rows cols)^2)``: meant for small layers or a subset.

``finalize`` stores each block's eigendecomposition ``B = V diag(lam) V^T`` (eigenvalues
clamped at 0); the precision is ``scale B + tau I`` per block and ``scale d + tau`` for the
other parameters.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from bnn_jax.curvature import blocks, per_example
from bnn_jax.curvature.base import Curvature, with_checks
from bnn_jax.curvature.blocks import Structure
from bnn_jax.curvature.fisher import Fisher
from bnn_jax.curvature.subset import Subset, everything
from bnn_jax.losses import Likelihood
from bnn_jax.types import ApplyFn

__all__ = ["BlockDiagonalState", "block_diagonal"]


class BlockDiagonalState(NamedTuple):
    """``matrices``: dense blocks ``[rows cols, rows cols]`` (sums over examples);
    ``eigenvalues``/``eigenvectors``: their eigendecompositions after ``finalize``;
    ``others``: diagonals of the other leaves; ``num_data``; ``structure`` (static)."""

    matrices: tuple[jax.Array, ...]
    eigenvalues: tuple[jax.Array, ...]
    eigenvectors: tuple[jax.Array, ...]
    others: tuple[jax.Array, ...]
    num_data: jax.Array
    structure: Structure


def _block_sum(a: jax.Array, b: jax.Array, chunk_size: int | None) -> jax.Array:
    size = a.shape[-1] * b.shape[-1]
    b = jnp.moveaxis(b, 0, -1)  # [B, T, cols, M]: chunks split examples

    def chunk(a_c, b_c):
        g = blocks.per_example_grads(a_c, jnp.moveaxis(b_c, -1, 0)).reshape(-1, size)
        return g.T @ g

    return per_example.chunked_sum(chunk, a, b, chunk_size=chunk_size)


def block_diagonal(
    apply_fn: ApplyFn,
    likelihood: Likelihood,
    *,
    fisher: Fisher,
    input_shape: tuple[int, ...],
    input_dtype=jnp.float32,
    subset: Subset | None = None,
    chunk_size: int | None = 32,
) -> Curvature:
    """Dense per-layer blocks over the selected parameters.

    Args:
      apply_fn: ``apply_fn(params, x) -> outputs [B, K]`` of a flax.linen model.
      likelihood: from ``bnn_jax.losses``.
      fisher: a Fisher type.
      input_shape: shape of one example, to find the Dense/Conv layers in ``init``.
      input_dtype: dtype of the inputs for that trace.
      subset: parameters to cover (default: all).
      chunk_size: examples per chunk of per-example gradients.

    Example:
      >>> curv = block_diagonal(apply_fn, losses.categorical(), fisher=exact_fisher(),
      ...                       input_shape=(2,))
    """
    per_example.check_chunk_size(chunk_size)
    input_shape = blocks.check_input_shape(input_shape)
    subset = everything() if subset is None else subset

    def init(params):
        x = jax.ShapeDtypeStruct((1, *input_shape), input_dtype)
        structure = blocks.build_structure(apply_fn, params, subset, x)
        blocks.require_blocks(structure, "block_diagonal")
        dtype = structure.layout.dtype
        sizes = [b.rows * b.cols for b in structure.blocks]
        shapes = dict(zip(structure.layout.paths, structure.layout.shapes, strict=True))
        return BlockDiagonalState(
            matrices=tuple(jnp.zeros((n, n), dtype) for n in sizes),
            eigenvalues=tuple(jnp.zeros((n,), dtype) for n in sizes),
            eigenvectors=tuple(jnp.zeros((n, n), dtype) for n in sizes),
            others=tuple(jnp.zeros(shapes[p], dtype) for p in structure.other_paths),
            num_data=jnp.zeros((), jnp.int32),
            structure=structure,
        )

    def update(state, params, batch, key):
        stats = blocks.batch_statistics(
            apply_fn, likelihood, fisher, state.structure, params, batch, key
        )
        matrices = tuple(
            m + _block_sum(a, b, chunk_size).astype(m.dtype)
            for m, a, b in zip(state.matrices, stats.inputs, stats.output_grads, strict=True)
        )
        deltas = blocks.other_diagonals(
            apply_fn, state.structure, params, batch.x, stats.factors, chunk_size=chunk_size
        )
        others = tuple(o + d.astype(o.dtype) for o, d in zip(state.others, deltas, strict=True))
        return state._replace(
            matrices=matrices, others=others, num_data=state.num_data + batch.x.shape[0]
        )

    def finalize(state):
        pairs = [jnp.linalg.eigh(0.5 * (m + m.T)) for m in state.matrices]
        return state._replace(
            eigenvalues=tuple(jnp.maximum(w, 0.0) for w, _ in pairs),
            eigenvectors=tuple(q for _, q in pairs),
        )

    def _flat_blocks(state, v):
        mats, others = blocks.to_blocks(state.structure, v)
        return [m.ravel() for m in mats], others

    def _unflat(state, flat, others):
        mats = [
            f.reshape(b.rows, b.cols) for f, b in zip(flat, state.structure.blocks, strict=True)
        ]
        return blocks.from_blocks(state.structure, mats, others)

    def _other_precisions(state, scale, prior_prec):
        return [scale * d + prior_prec for d in state.others]

    def precision_mvp(state, v, scale, prior_prec):
        flat, others = _flat_blocks(state, v)
        out = [scale * (m @ f) + prior_prec * f for m, f in zip(state.matrices, flat, strict=True)]
        prec = _other_precisions(state, scale, prior_prec)
        return _unflat(state, out, [p * o for p, o in zip(prec, others, strict=True)])

    def solve(state, v, scale, prior_prec):
        flat, others = _flat_blocks(state, v)
        out = [
            q @ ((q.T @ f) / (scale * w + prior_prec))
            for q, w, f in zip(state.eigenvectors, state.eigenvalues, flat, strict=True)
        ]
        prec = _other_precisions(state, scale, prior_prec)
        return _unflat(state, out, [o / p for p, o in zip(prec, others, strict=True)])

    def sample(state, key, scale, prior_prec):
        prec = _other_precisions(state, scale, prior_prec)
        keys = jax.random.split(key, len(state.eigenvalues) + len(prec))
        out = [
            q @ (jax.random.normal(k, w.shape, w.dtype) * jax.lax.rsqrt(scale * w + prior_prec))
            for q, w, k in zip(
                state.eigenvectors, state.eigenvalues, keys[: len(state.eigenvalues)], strict=True
            )
        ]
        others = [
            jax.random.normal(k, p.shape, p.dtype) * jax.lax.rsqrt(p)
            for k, p in zip(keys[len(out) :], prec, strict=True)
        ]
        return _unflat(state, out, others)

    def log_det(state, scale, prior_prec):
        terms = [jnp.sum(jnp.log(scale * w + prior_prec)) for w in state.eigenvalues]
        terms += [jnp.sum(jnp.log(p)) for p in _other_precisions(state, scale, prior_prec)]
        return sum(terms)

    def to_dense(state):
        return blocks.assemble_dense(state.structure, state.matrices, state.others)

    return with_checks(
        Curvature(init, update, finalize, precision_mvp, solve, sample, log_det, to_dense)
    )
