"""The layer-wise skeleton shared by ``kfac``, ``efb`` and ``block_diagonal``.

A layer-wise structure keeps, per Dense/Conv block of ``blocks.Structure``, a precision that is
diagonal in some orthonormal basis, ``P_block = Q diag(D) Q^T``, and a diagonal precision
``d`` for every other leaf. Given one function ``layer_precisions(state, scale, prior_prec) ->
LayerPrecisions``, :func:`operations` builds every operation of a ``Curvature``:

    P v      = Q (D * Q^T v),      P^-1 v = Q (Q^T v / D),
    z        = Q (eps / sqrt(D)),  eps ~ N(0, I)   (one ``tree.standard_normals`` draw),
    log det  = sum log D + sum log d.

A basis is ``None`` (identity: the diagonal structure), a ``kron.KronBasis`` (``Q_A ⊗ Q_G``,
acting on block matrices ``[rows, cols]``; ``kfac``, ``efb``) or any object with
``rotate(V) -> W`` and ``unrotate(W) -> V`` (``block_diagonal``'s dense eigenvectors). A
structure whose bases are all ``None`` or ``KronBasis`` with ``D [rows, cols]`` may declare
``layer_precisions`` as its ``Curvature.layer_precisions`` capability: the linearised and
local-reparameterisation predictives then work through it without per-input Jacobians.

Example (a KFAC variant with its own block precisions, from public pieces only):
  >>> def precisions(state, scale, prior_prec):
  ...     taus, other_taus = prior_parts(state.structure, prior_prec)
  ...     d = [scale * jnp.outer(f.a_eigenvalues, f.g_eigenvalues) + t
  ...          for f, t in zip(state.factors, taus)]
  ...     return LayerPrecisions(state.structure, tuple(kron.basis(f) for f in state.factors),
  ...                            tuple(d), other_precisions(state.others, scale, other_taus))
  >>> precision_mvp, solve, sample, log_det = operations(precisions)
"""

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bnn_jax import checks, tree
from bnn_jax.curvature import blocks
from bnn_jax.curvature.base import is_scalar_prior, prior_per_leaf
from bnn_jax.curvature.blocks import BiasLayout, Structure
from bnn_jax.curvature.subset import Subset
from bnn_jax.types import ApplyFn, Params

__all__ = [
    "LayerPrecisions",
    "add_others",
    "find_structure",
    "operations",
    "other_precisions",
    "prior_parts",
    "zero_others",
]


class LayerPrecisions(NamedTuple):
    """The precision of a layer-wise structure at given ``(scale, prior_prec)``.

    Attributes:
      structure: the blocks and other leaves (static).
      bases: per block, ``None`` (identity), a ``kron.KronBasis`` or another basis object.
      blocks: per block, the precision's eigenvalues ``D`` in that basis (``[rows, cols]``
        for the identity and Kronecker bases).
      others: per other leaf, its diagonal precision ``d`` (shaped like the leaf).
    """

    structure: Structure
    bases: tuple[Any, ...]
    blocks: tuple[jax.Array, ...]
    others: tuple[jax.Array, ...]


def find_structure(
    apply_fn: ApplyFn, params: Params, subset: Subset, x, *, bias: BiasLayout, name: str
) -> Structure:
    """``blocks.build_structure`` on inputs like ``x``; ``ValueError`` without any block."""
    structure = blocks.build_structure(apply_fn, params, subset, x, bias=bias)
    blocks.require_blocks(structure, name)
    return structure


def zero_others(structure: Structure) -> tuple[jax.Array, ...]:
    """Zero diagonals for the other leaves."""
    layout = structure.layout
    shapes = dict(zip(layout.paths, layout.shapes, strict=True))
    return tuple(jnp.zeros(shapes[p], layout.dtype) for p in structure.other_paths)


def add_others(
    apply_fn: ApplyFn,
    structure: Structure,
    others: Sequence[jax.Array],
    params: Params,
    x: jax.Array,
    factors: jax.Array,
    *,
    chunk_size: int | None,
) -> tuple[jax.Array, ...]:
    """Add ``sum_nm g_nm^2`` of a batch (output factors ``[B, K, M]``) to the other leaves'
    diagonals (per-example gradients, ``chunk_size`` examples at a time)."""
    deltas = blocks.other_diagonals(apply_fn, structure, params, x, factors, chunk_size=chunk_size)
    return tuple(o + d.astype(o.dtype) for o, d in zip(others, deltas, strict=True))


def prior_parts(structure: Structure, prior_prec) -> tuple[list, list]:
    """The prior precision of every block and of every other leaf, from a scalar or a
    per-leaf pytree (``base``). A block that holds both a kernel and a bias (the homogeneous
    layout) takes one value: the kernel's; ``ValueError`` when the bias's differs (checked
    when the values are concrete; use ``blocks.separate_bias()`` for separate values)."""
    if is_scalar_prior(prior_prec):
        return [prior_prec] * len(structure.blocks), [prior_prec] * len(structure.other_paths)
    layout = structure.layout
    leaves = dict(zip(layout.paths, prior_per_leaf(prior_prec, layout), strict=True))
    taus = []
    for block in structure.blocks:
        kernel, bias = block.layer.kernel_path, block.layer.bias_path
        if block.kernel and block.bias:
            k, b = checks.concrete(leaves[kernel]), checks.concrete(leaves[bias])
            if k is not None and b is not None and not np.array_equal(k, b):
                raise ValueError(
                    f"prior_prec: {'/'.join(block.layer.path)} holds its kernel and bias in one "
                    f"block (blocks.homogeneous_bias()), which takes one prior precision; got "
                    f"{k} and {b}: give both the same value or build the curvature with "
                    "bias=blocks.separate_bias()"
                )
        taus.append(leaves[kernel] if block.kernel else leaves[bias])
    return taus, [leaves[p] for p in structure.other_paths]


def other_precisions(others: Sequence[jax.Array], scale, prior_precs: Sequence) -> tuple:
    """``scale d + tau`` per other leaf."""
    return tuple(scale * d + t for d, t in zip(others, prior_precs, strict=True))


def _rotate(basis, m: jax.Array) -> jax.Array:
    return m if basis is None else basis.rotate(m)


def _unrotate(basis, w: jax.Array, block: blocks.Block) -> jax.Array:
    return w if basis is None else basis.unrotate(w).reshape(block.rows, block.cols)


def operations(layer_precisions: Callable[[Any, Any, Any], LayerPrecisions]):
    """``(precision_mvp, solve, sample, log_det)`` of a layer-wise structure from its
    ``layer_precisions(state, scale, prior_prec)`` (module docstring)."""

    def precision_mvp(state, v, scale, prior_prec):
        p = layer_precisions(state, scale, prior_prec)
        mats, others = blocks.to_blocks(p.structure, v)
        out = [
            _unrotate(q, d * _rotate(q, m), b)
            for q, d, m, b in zip(p.bases, p.blocks, mats, p.structure.blocks, strict=True)
        ]
        prec_others = [d * o for d, o in zip(p.others, others, strict=True)]
        return blocks.from_blocks(p.structure, out, prec_others)

    def solve(state, v, scale, prior_prec):
        p = layer_precisions(state, scale, prior_prec)
        mats, others = blocks.to_blocks(p.structure, v)
        out = [
            _unrotate(q, _rotate(q, m) / d, b)
            for q, d, m, b in zip(p.bases, p.blocks, mats, p.structure.blocks, strict=True)
        ]
        solved_others = [o / d for d, o in zip(p.others, others, strict=True)]
        return blocks.from_blocks(p.structure, out, solved_others)

    def sample(state, key, scale, prior_prec):
        p = layer_precisions(state, scale, prior_prec)
        precisions = [*p.blocks, *p.others]
        dtype = jnp.result_type(*precisions)
        # one draw for every block (the cost of sampling is dominated by random bits and the
        # basis rotations; one call needs the fewest threefry hashes)
        z = tree.standard_normals(key, [d.shape for d in precisions], dtype)
        n = len(p.blocks)
        out = [
            _unrotate(q, zi * jax.lax.rsqrt(d), b)
            for q, zi, d, b in zip(p.bases, z[:n], p.blocks, p.structure.blocks, strict=True)
        ]
        others = [zi * jax.lax.rsqrt(d) for zi, d in zip(z[n:], p.others, strict=True)]
        return blocks.from_blocks(p.structure, out, others)

    def log_det(state, scale, prior_prec):
        p = layer_precisions(state, scale, prior_prec)
        return sum(jnp.sum(jnp.log(d)) for d in [*p.blocks, *p.others])

    return precision_mvp, solve, sample, log_det
