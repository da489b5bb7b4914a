"""Block-diagonal combination of curvatures over disjoint parameter subsets.

``partition([curv_1, ..., curv_k])`` treats the parameters selected by the parts' subsets
(``curv_i.subset``, pairwise disjoint) as independent blocks: with ``v = (v_1, ..., v_k)`` split
by subset,

    C = blockdiag(C_1, ..., C_k),   P v = (P_1 v_1, ..., P_k v_k),   log det P = sum log det P_i,

and samples are independent draws of each part (keys ``jax.random.split(key, k)``). Any
structures combine, e.g. a dense last layer and a diagonal rest, or a KFAC body and a full
head. The parts must be built for the same ``apply_fn`` and likelihood; each sees every batch
with the same key (so MC-Fisher parts draw the same targets) for as many passes as it needs
(the partition makes the largest number of passes; a part that needs fewer skips the rest).
Parameters no part selects stay at the MAP. A per-leaf ``prior_prec`` is split like
``v``. It has no ``layer_precisions`` capability: the
linearised predictive uses Jacobian rows and ``solve``.

Example:
  >>> last = curvature.subset.last_layer(apply_fn, params, x[:1])
  >>> rest = curvature.subset.complement(last)
  >>> curv = curvature.partition([
  ...     curvature.dense(apply_fn, lik, fisher=fisher, subset=last),
  ...     curvature.diagonal(apply_fn, lik, fisher=fisher, subset=rest),
  ... ])
  >>> post = laplace.fit(curv, params, batches, key=key, prior_prec=1.0)
"""

import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bnn_jax.curvature.base import Curvature, is_scalar_prior, prior_per_leaf, with_checks
from bnn_jax.curvature.layout import Layout
from bnn_jax.curvature.subset import where

__all__ = ["PartitionState", "partition"]


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class Parts:
    """Layouts of the union of the parts' subsets and of each part (static)."""

    union: Layout
    parts: tuple[Layout, ...]


class PartitionState(NamedTuple):
    """``parts``: each part's state; ``passes``: passes finalized; ``num_data``: examples seen;
    ``layouts``: static ``Parts``."""

    parts: tuple[Any, ...]
    passes: jax.Array
    num_data: jax.Array
    layouts: Parts


def partition(curvatures: Sequence[Curvature]) -> Curvature:
    """The block-diagonal combination of ``curvatures`` over their disjoint subsets.

    Args:
      curvatures: curvatures built for the same ``apply_fn`` and likelihood, each with its
        ``subset``; the subsets must not overlap (checked by ``init``).

    Returns:
      A ``Curvature`` over the union of the subsets (module docstring).
    """
    parts = tuple(curvatures)
    if not parts or not all(isinstance(c, Curvature) for c in parts):
        raise ValueError(f"curvatures: expected a non-empty list of Curvature, got {curvatures!r}")
    first = parts[0]
    if any(c.apply_fn is not first.apply_fn or c.likelihood is not first.likelihood for c in parts):
        raise ValueError(
            "curvatures: every part must be built for the same apply_fn and likelihood objects"
        )
    union = where(
        lambda path: any(c.subset.contains(path) for c in parts),
        description="the subsets of the partition's parts",
    )
    num_passes = max(c.num_passes for c in parts)

    def init(params, x):
        layouts = Parts(
            Layout.of(union.select(params)),
            tuple(Layout.of(c.subset.select(params)) for c in parts),
        )
        for path in layouts.union.paths:
            owners = [i for i, c in enumerate(parts) if c.subset.contains(path)]
            if len(owners) > 1:
                raise ValueError(
                    f"curvatures: parts {owners} all select {'/'.join(path)}; the subsets of a "
                    "partition must be disjoint"
                )
        states = tuple(c.init(params, x) for c in parts)
        return PartitionState(states, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32), layouts)

    def _gated(curv, passes, fn, state):
        """``fn(state)`` while ``curv`` still needs passes, ``state`` after that."""
        if curv.num_passes == num_passes:
            return fn(state)
        return jax.lax.cond(passes < curv.num_passes, fn, lambda s: s, state)

    def update(state, params, batch, key):
        states = tuple(
            _gated(c, state.passes, lambda s, c=c: c.update(s, params, batch, key), s)
            for c, s in zip(parts, state.parts, strict=True)
        )
        seen = jnp.where(state.passes == 0, batch.x.shape[0], 0)
        return state._replace(parts=states, num_data=state.num_data + seen)

    def finalize(state):
        states = tuple(
            _gated(c, state.passes, c.finalize, s) for c, s in zip(parts, state.parts, strict=True)
        )
        return state._replace(parts=states, passes=state.passes + 1)

    def split(state, v):
        leaves = state.layouts.union.leaves_by_path(v)
        return [layout.from_leaves(leaves) for layout in state.layouts.parts]

    def merge(state, trees):
        leaves = {}
        for layout, t in zip(state.layouts.parts, trees, strict=True):
            leaves.update(layout.leaves_by_path(t))
        return state.layouts.union.from_leaves(leaves)

    def split_prior(state, prior_prec):
        """The prior of each part: the scalar, or each part's leaves of a per-leaf pytree."""
        if is_scalar_prior(prior_prec):
            return [prior_prec] * len(parts)
        union_layout = state.layouts.union
        taus = prior_per_leaf(prior_prec, union_layout)
        by_path = dict(zip(union_layout.paths, taus, strict=True))
        return [layout.from_leaves(by_path) for layout in state.layouts.parts]

    def each(state, name, first, scale, prior_prec):
        taus = split_prior(state, prior_prec)
        return [
            getattr(c, name)(s, x, scale, t)
            for c, s, x, t in zip(parts, state.parts, first, taus, strict=True)
        ]

    def precision_mvp(state, v, scale, prior_prec):
        return merge(state, each(state, "precision_mvp", split(state, v), scale, prior_prec))

    def solve(state, v, scale, prior_prec):
        return merge(state, each(state, "solve", split(state, v), scale, prior_prec))

    def sample(state, key, scale, prior_prec):
        keys = list(jax.random.split(key, len(parts)))
        return merge(state, each(state, "sample", keys, scale, prior_prec))

    def log_det(state, scale, prior_prec):
        taus = split_prior(state, prior_prec)
        return sum(c.log_det(s, scale, t) for c, s, t in zip(parts, state.parts, taus, strict=True))

    def to_dense(state):
        union_layout = state.layouts.union
        index = union_layout.leaves_by_path(union_layout.index_tree())
        out = jnp.zeros((union_layout.size, union_layout.size), union_layout.dtype)
        for c, s, layout in zip(parts, state.parts, state.layouts.parts, strict=True):
            idx = np.concatenate([index[p].ravel() for p in layout.paths])
            out = out.at[np.ix_(idx, idx)].set(c.to_dense(s).astype(out.dtype))
        return out

    return with_checks(
        Curvature(
            init, update, finalize, precision_mvp, solve, sample, log_det, to_dense,
            first.apply_fn, first.likelihood, union, num_passes,
        )
    )  # fmt: skip
