"""Reduced-precision forward passes for predictives (bfloat16 in, float32 out).

The library computes in float32 by default; everything stays so unless a caller opts in here.
``bfloat16`` halves the memory traffic of a forward pass and runs on the tensor cores of
accelerators (on CPU it is emulated and slower). It is safe where only the *outputs* of many
forward passes are averaged: the MC predictives (weight samples, dropout masks, ensemble
members), whose Monte Carlo error (~1/sqrt(T)) dwarfs bfloat16's relative rounding of
``2^-8 ~ 0.4%`` per logit. It is not for curvature (sums of outer products over the data
lose small contributions), training, sampling (draws and the posterior's eigendecompositions
stay float32: only the forward pass sees bfloat16 copies) or the GLM predictive (Jacobians).

``in_dtype(apply_fn)`` casts the parameters and the inputs and returns float32 outputs. For
the flax models of ``bnn_jax.models`` every product then runs in bfloat16 (flax layers compute
in the dtype of their inputs and parameters; BatchNorm statistics, which stay float32, only
enter elementwise and its output keeps the input's dtype; ``tests/test_precision.py`` checks
the dtype of every matrix product and convolution).

Example:
  >>> fast = precision.in_dtype(post.apply_fn)                     # bfloat16 forwards
  >>> lp = predictive.laplace_log_probs(post.with_apply_fn(fast), x, key=key,
  ...                                   num_samples=100, chunk_size=10)
"""

from typing import Any

import jax
import jax.numpy as jnp

from bnn_jax.types import ApplyFn

__all__ = ["cast_floating", "in_dtype"]


def cast_floating(tree: Any, dtype) -> Any:
    """Every floating-point leaf of ``tree`` as ``dtype`` (integer and key leaves unchanged)."""

    def cast(leaf):
        is_float = hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.floating)
        return jnp.asarray(leaf, dtype) if is_float else leaf

    return jax.tree.map(cast, tree)


def in_dtype(apply_fn: ApplyFn, dtype=jnp.bfloat16, *, out_dtype=jnp.float32) -> ApplyFn:
    """``apply_fn(params, x)`` computed on ``dtype`` copies of ``params`` and ``x``, outputs
    cast to ``out_dtype``: ``out = apply_fn(cast(params), cast(x)).astype(out_dtype)``.

    Values ``apply_fn`` closes over keep their dtype. Differentiable (the casts are).
    """

    def apply(params, x):
        out = apply_fn(cast_floating(params, dtype), cast_floating(x, dtype))
        return jnp.asarray(out, out_dtype)

    return apply
