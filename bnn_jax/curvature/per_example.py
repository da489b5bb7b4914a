"""Per-example pseudo-gradients ``g_nm = J_n^T s_nm``, computed in chunks of examples.

Used where captured layer quantities do not suffice: the ``dense`` structure and the
"other" parameters (norm scales, embeddings, ...) of the other structures. Memory is bounded
by ``chunk_size`` examples at a time: ``chunking.sum_batches`` scans over chunks and adds their
contributions, so nothing of size ``batch x parameters`` is held at once.
"""

import jax

from bnn_jax.curvature.subset import Subset
from bnn_jax.types import ApplyFn, Params


def output_vjps(
    apply_fn: ApplyFn, params: Params, subset: Subset, x: jax.Array, factors: jax.Array
) -> Params:
    """``g_nm = J_n^T s_nm`` for every example: selected leaves with leading axes ``[B, M]``.

    Args:
      apply_fn: ``apply_fn(params, x) -> outputs``; called on one example at a time.
      params: full parameters.
      subset: which parameters ``J_n`` differentiates.
      x: inputs ``[B, ...]``.
      factors: output-space factors ``[B, K, M]``.
    """
    selected = subset.select(params)

    def one(x_n, s_n):
        def f(theta):
            return apply_fn(subset.merge(params, theta), x_n[None])[0]

        _, vjp = jax.vjp(f, selected)
        return jax.vmap(lambda s: vjp(s)[0], in_axes=1)(s_n)

    return jax.vmap(one)(x, factors)
