"""Chunked evaluation along a leading axis: the one place where ``chunk_size`` is applied.

Every ``chunk_size`` argument of the library counts elements of the leading axis of what is
being mapped over (examples for curvature updates, posterior samples for MC predictives, inputs
for the linearised predictive, candidates for a search, grid points for loss slices; each
docstring names which) and bounds memory to that many at once; ``None`` processes all at
once. Check it with ``checks.chunk_size``.

- ``map_chunks(fn, xs, chunk_size)``: ``fn`` of one element, vmapped within a chunk,
  ``lax.map`` over chunks (the last chunk may be shorter);
- ``map_batches(fn, x, chunk_size)``: ``fn`` of a batch ``[chunk, ...]``, over chunks of
  ``x`` padded to a whole number of chunks (with zeros), results concatenated and trimmed;
- ``sum_batches(fn, x, factors, chunk_size)``: the sum over chunks of ``fn(x_chunk,
  factors_chunk)``, the last chunk padded with repeated inputs and zero factors, which
  contribute nothing to sums of pseudo-gradient products.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["map_batches", "map_chunks", "sum_batches"]


def map_chunks(fn: Callable[[Any], Any], xs: Any, chunk_size: int | None) -> Any:
    """``[fn(x) for x in xs]`` stacked, ``chunk_size`` elements at once (``xs`` a pytree with
    a shared leading axis)."""
    if chunk_size is None:  # lax.map without batch_size would run one element at a time
        return jax.vmap(fn)(xs)
    return jax.lax.map(fn, xs, batch_size=chunk_size)


def map_batches(fn: Callable[[jax.Array], Any], x: jax.Array, chunk_size: int | None) -> Any:
    """``fn(x)`` computed ``chunk_size`` rows at a time (``fn`` must treat rows independently
    and return arrays with a leading axis of rows)."""
    n = x.shape[0]
    if chunk_size is None or chunk_size >= n:
        return fn(x)
    num_chunks = -(-n // chunk_size)
    padded = jnp.concatenate([x, jnp.zeros((num_chunks * chunk_size - n, *x.shape[1:]), x.dtype)])
    out = jax.lax.map(fn, padded.reshape(num_chunks, chunk_size, *x.shape[1:]))
    return jax.tree.map(lambda o: o.reshape(num_chunks * chunk_size, *o.shape[2:])[:n], out)


def sum_batches(
    fn: Callable[[jax.Array, jax.Array], Any],
    x: jax.Array,
    factors: jax.Array,
    *,
    chunk_size: int | None,
) -> Any:
    """``sum over chunks of fn(x_chunk, factors_chunk)`` (a pytree), ``chunk_size`` examples at
    a time; the padding (repeated inputs, zero factors) must contribute zero."""
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
