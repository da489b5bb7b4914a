"""Per-example pseudo-gradients ``g_nm = J_n^T s_nm``, computed in chunks of examples.

Used where captured layer quantities do not suffice: the ``dense`` structure and the
"other" parameters (norm scales, embeddings, ...) of the other structures. Memory is bounded
by ``chunk_size`` examples at a time: ``chunked_sum`` scans over chunks and adds their
contributions, so nothing of size ``batch x parameters`` is held at once.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

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


def chunked_sum(
    fn: Callable[[jax.Array, jax.Array], Any],
    x: jax.Array,
    factors: jax.Array,
    *,
    chunk_size: int | None,
) -> Any:
    """``sum over chunks of fn(x_chunk, factors_chunk)`` (a pytree), ``chunk_size`` examples at
    a time (``None``: one chunk). The last chunk is padded with repeated inputs and zero
    factors, which contribute nothing to sums of pseudo-gradient products."""
    batch = x.shape[0]
    if chunk_size is None or chunk_size >= batch:
        return fn(x, factors)
    num_chunks = -(-batch // chunk_size)
    pad = num_chunks * chunk_size - batch
    x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1), mode="edge")
    factors = jnp.pad(factors, [(0, pad)] + [(0, 0)] * (factors.ndim - 1))
    xs = x.reshape(num_chunks, chunk_size, *x.shape[1:])
    fs = factors.reshape(num_chunks, chunk_size, *factors.shape[1:])
    init = jax.eval_shape(fn, xs[0], fs[0])
    init = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), init)

    def body(total, chunk):
        return jax.tree.map(jnp.add, total, fn(*chunk)), None

    total, _ = jax.lax.scan(body, init, (xs, fs))
    return total
