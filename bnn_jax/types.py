"""Type aliases shared across the library.

A model is used through a pure ``apply_fn(params, x) -> logits`` (``ApplyFn``); anything the
forward pass needs besides the parameters (BatchNorm statistics, a dropout key) is closed
over or passed explicitly, never hidden in global state.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

Params = Any
"""A pytree of arrays (usually the ``"params"`` collection of a flax model)."""

Key = jax.Array
"""A typed PRNG key from ``jax.random.key(seed)``."""

ApplyFn = Callable[[Params, jax.Array], jax.Array]
"""``apply_fn(params, x) -> outputs``: logits ``[batch, classes]`` or regression means."""


class Batch(NamedTuple):
    """One minibatch: inputs ``x`` of shape ``[batch, ...]`` and targets ``y`` of shape ``[batch]``
    (int32 class labels) or ``[batch, outputs]`` (regression)."""

    x: jax.Array
    y: jax.Array
