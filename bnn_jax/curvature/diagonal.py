"""Diagonal GGN/Fisher ``d = diag(C) = sum_n sum_m g_nm^2`` (the post's DIAG).

Dense/Conv layers use captured quantities (see ``capture``): for a Dense layer on
``[B, d_in]`` inputs the diagonal of the kernel block is ``(a^2)^T (b^2)`` summed over examples
and factors (one forward and one backward pass per factor, no per-example gradients); for
Conv layers (and Dense layers applied at several positions) per-example weight gradients
``sum_t a_nt b_nt^T`` are formed from the captured patches in chunks of ``chunk_size``
examples. Other parameters (norm scales, embeddings) use chunked per-example gradients.
Memory never holds ``batch x parameters`` at once when ``chunk_size`` is set.

With ``p = scale d + prior_prec`` (a per-leaf ``prior_prec`` adds each leaf's value):
``solve(v) = v / p``, ``sample = eps / sqrt(p)``, ``log_det = sum log p``. Declares the
``layer_precisions`` capability (identity bases), so the linearised predictive and local
reparameterisation work per layer.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from bnn_jax import checks, tree
from bnn_jax.curvature import blocks, layerwise
from bnn_jax.curvature.base import Curvature, prior_per_leaf, with_checks
from bnn_jax.curvature.blocks import Structure
from bnn_jax.curvature.fisher import Fisher
from bnn_jax.curvature.layout import Layout
from bnn_jax.curvature.subset import Subset, everything
from bnn_jax.losses import Likelihood
from bnn_jax.types import ApplyFn

__all__ = ["DiagonalState", "diagonal"]


class DiagonalState(NamedTuple):
    """``diagonal``: ``diag(C)`` shaped like the selected parameters; ``num_data``;
    ``structure``: the Dense/Conv blocks and other leaves (static)."""

    diagonal: object
    num_data: jax.Array
    structure: Structure


def diagonal(
    apply_fn: ApplyFn,
    likelihood: Likelihood,
    *,
    fisher: Fisher,
    subset: Subset | None = None,
    chunk_size: int | None = 32,
) -> Curvature:
    """Diagonal curvature over the selected parameters.

    Args:
      apply_fn: ``apply_fn(params, x) -> outputs [B, K]``.
      likelihood: from ``bnn_jax.losses``.
      fisher: a Fisher type (``mc_fisher``, ``exact_fisher``, ``empirical_fisher``).
      subset: parameters to cover (default: all).
      chunk_size: examples per chunk where per-example gradients are needed (Conv layers,
        other parameters); ``None`` processes the whole batch at once.

    Example:
      >>> curv = diagonal(apply_fn, losses.categorical(), fisher=mc_fisher(num_samples=1))
    """
    checks.chunk_size("chunk_size", chunk_size)
    subset = everything() if subset is None else subset

    def init(params, x):
        structure = blocks.build_structure(apply_fn, params, subset, x)
        selected = subset.select(params)
        return DiagonalState(tree.tree_zeros_like(selected), jnp.zeros((), jnp.int32), structure)

    def update(state, params, batch, key):
        structure = state.structure
        stats = blocks.batch_statistics(apply_fn, likelihood, fisher, structure, params, batch, key)
        mats = [
            blocks.block_diagonal_sum(a, b, chunk_size=chunk_size)
            for a, b in zip(stats.inputs, stats.output_grads, strict=True)
        ]
        others = blocks.other_diagonals(
            apply_fn, structure, params, batch.x, stats.factors, chunk_size=chunk_size
        )
        delta = blocks.from_blocks(structure, mats, others)
        return state._replace(
            diagonal=tree.tree_add(state.diagonal, delta),
            num_data=state.num_data + batch.x.shape[0],
        )

    def finalize(state):
        return state

    def _precision(state, scale, prior_prec):
        leaves, treedef = jax.tree.flatten(state.diagonal)
        taus = prior_per_leaf(prior_prec, state.structure.layout)
        return jax.tree.unflatten(
            treedef, [scale * d + t for d, t in zip(leaves, taus, strict=True)]
        )

    def precision_mvp(state, v, scale, prior_prec):
        return jax.tree.map(jnp.multiply, _precision(state, scale, prior_prec), v)

    def solve(state, v, scale, prior_prec):
        return jax.tree.map(jnp.divide, v, _precision(state, scale, prior_prec))

    def sample(state, key, scale, prior_prec):
        precision = _precision(state, scale, prior_prec)
        leaves, treedef = jax.tree.flatten(precision)
        dtype = jnp.result_type(*leaves)
        eps = tree.standard_normals(key, [p.shape for p in leaves], dtype)
        return jax.tree.unflatten(
            treedef, [e * jax.lax.rsqrt(p) for e, p in zip(eps, leaves, strict=True)]
        )

    def log_det(state, scale, prior_prec):
        logs = jax.tree.map(lambda p: jnp.sum(jnp.log(p)), _precision(state, scale, prior_prec))
        return sum(jax.tree.leaves(logs))

    def layer_precisions(state, scale, prior_prec):
        mats, others = blocks.to_blocks(state.structure, _precision(state, scale, prior_prec))
        bases = (None,) * len(mats)
        return layerwise.LayerPrecisions(state.structure, bases, tuple(mats), tuple(others))

    def to_dense(state):
        return jnp.diag(Layout.of(state.diagonal).ravel(state.diagonal))

    return with_checks(
        Curvature(
            init, update, finalize, precision_mvp, solve, sample, log_det, to_dense,
            apply_fn, likelihood, subset, layer_precisions=layer_precisions,
        )
    )  # fmt: skip
