"""Block-diagonal curvature: a dense block per Dense/Conv layer (the post's block-wise form).

Each selected Dense/Conv layer's kernel and bias (``W = [kernel; bias]``, raveled row-major)
get the exact block ``B = sum_nm vec(g_nm) vec(g_nm)^T`` with per-example pseudo-gradients
``g_nm = sum_t a_nt b_nmt^T`` formed from captured inputs/patches and output gradients in
chunks of ``chunk_size`` examples (``O(chunk x block size)`` memory). Other parameters get
a diagonal block. Memory is ``O(sum of (rows cols)^2)``: meant for small layers or a subset.

``finalize`` stores each block's eigendecomposition ``B = V diag(lam) V^T`` (eigenvalues
clamped at 0); the precision is ``scale B + tau I`` per block and ``scale d + tau`` for the
other parameters. Only ``update`` and ``finalize`` are its own: the operations come from the
``layerwise`` skeleton with a dense eigenbasis ``V`` per block. (It does not declare the
``layer_precisions`` capability: ``V`` is not a Kronecker basis.)
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from bnn_jax import checks, chunking
from bnn_jax.curvature import blocks, layerwise
from bnn_jax.curvature.base import Curvature, with_checks
from bnn_jax.curvature.blocks import BiasLayout, Structure
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


class DenseBasis(NamedTuple):
    """Eigenvectors ``V [n, n]`` of a block (``n = rows cols``), acting on ``[rows, cols]``."""

    vectors: jax.Array

    def rotate(self, v: jax.Array) -> jax.Array:
        return self.vectors.T @ v.ravel()

    def unrotate(self, w: jax.Array) -> jax.Array:
        return self.vectors @ w


def _block_sum(a: jax.Array, b: jax.Array, chunk_size: int | None) -> jax.Array:
    size = a.shape[-1] * b.shape[-1]
    b = jnp.moveaxis(b, 0, -1)  # [B, T, cols, M]: chunks split examples

    def chunk(a_c, b_c):
        g = blocks.per_example_grads(a_c, jnp.moveaxis(b_c, -1, 0)).reshape(-1, size)
        return g.T @ g

    return chunking.sum_batches(chunk, a, b, chunk_size=chunk_size)


def block_diagonal(
    apply_fn: ApplyFn,
    likelihood: Likelihood,
    *,
    fisher: Fisher,
    subset: Subset | None = None,
    bias: BiasLayout = blocks.homogeneous_bias(),
    chunk_size: int | None = 32,
) -> Curvature:
    """Dense per-layer blocks over the selected parameters.

    Args:
      apply_fn: ``apply_fn(params, x) -> outputs [B, K]`` of a flax model; the Dense/Conv
        layers are found by ``init`` on the first batch's inputs.
      likelihood: from ``bnn_jax.losses``.
      fisher: a Fisher type.
      subset: parameters to cover (default: all).
      bias: ``blocks.homogeneous_bias()`` (default: kernel and bias in one block) or
        ``blocks.separate_bias()``.
      chunk_size: examples per chunk of per-example gradients (``None``: the whole batch).

    Example:
      >>> curv = block_diagonal(apply_fn, losses.categorical(), fisher=exact_fisher())
    """
    bias = blocks.bias_layout(bias)
    checks.chunk_size("chunk_size", chunk_size)
    subset = everything() if subset is None else subset

    def init(params, x):
        structure = layerwise.find_structure(
            apply_fn, params, subset, x, bias=bias, name="block_diagonal"
        )
        dtype = structure.layout.dtype
        sizes = [b.rows * b.cols for b in structure.blocks]
        return BlockDiagonalState(
            matrices=tuple(jnp.zeros((n, n), dtype) for n in sizes),
            eigenvalues=tuple(jnp.zeros((n,), dtype) for n in sizes),
            eigenvectors=tuple(jnp.zeros((n, n), dtype) for n in sizes),
            others=layerwise.zero_others(structure),
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
        others = layerwise.add_others(
            apply_fn, state.structure, state.others, params, batch.x, stats.factors,
            chunk_size=chunk_size,
        )  # fmt: skip
        return state._replace(
            matrices=matrices, others=others, num_data=state.num_data + batch.x.shape[0]
        )

    def finalize(state):
        pairs = [jnp.linalg.eigh(0.5 * (m + m.T)) for m in state.matrices]
        return state._replace(
            eigenvalues=tuple(jnp.maximum(w, 0.0) for w, _ in pairs),
            eigenvectors=tuple(q for _, q in pairs),
        )

    def precisions(state, scale, prior_prec):
        taus, other_taus = layerwise.prior_parts(state.structure, prior_prec)
        d = tuple(scale * w + t for w, t in zip(state.eigenvalues, taus, strict=True))
        bases = tuple(DenseBasis(q) for q in state.eigenvectors)
        others = layerwise.other_precisions(state.others, scale, other_taus)
        return layerwise.LayerPrecisions(state.structure, bases, d, others)

    precision_mvp, solve, sample, log_det = layerwise.operations(precisions)

    def to_dense(state):
        return blocks.assemble_dense(state.structure, state.matrices, state.others)

    return with_checks(
        Curvature(
            init, update, finalize, precision_mvp, solve, sample, log_det, to_dense,
            apply_fn, likelihood, subset,
        )
    )  # fmt: skip
