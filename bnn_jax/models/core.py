"""Initialising models and turning them into pure functions of their parameters.

Every model in :mod:`bnn_jax.models` follows one calling convention:
``model.apply(variables, x, train=False, mc_dropout=False, rngs=...)``. The helpers here
close over the non-trainable collections (BatchNorm ``batch_stats``) so that the rest of the
library sees a model as ``apply_fn(params, x) -> logits`` (deterministic) or
``apply_fn(params, x, key) -> logits`` (one dropout mask).
"""

from collections.abc import Callable
from typing import Any

import flax.errors
import flax.linen as nn
import jax
import jax.numpy as jnp

from bnn_jax.types import ApplyFn, Key, Params

Variables = dict[str, Any]


def init(model: nn.Module, key: Key, input_shape: tuple[int, ...]) -> Variables:
    """Initialise ``model`` for inputs of shape ``[batch, *input_shape]``.

    Returns the variables dict (``"params"`` and, for BatchNorm models, ``"batch_stats"``);
    regularisers a model sows into ``"losses"`` (Concrete Dropout) are not variables and are
    dropped.
    """
    if any(int(d) < 1 for d in input_shape):
        raise ValueError(f"input_shape: expected positive dimensions, got {input_shape}")
    params_key, dropout_key = jax.random.split(key)
    x = jnp.zeros((1, *input_shape), jnp.float32)
    variables = model.init({"params": params_key, "dropout": dropout_key}, x)
    return {name: value for name, value in variables.items() if name != "losses"}


def apply(model: nn.Module, variables: Variables, x: jax.Array, **kwargs) -> jax.Array:
    """``model.apply`` that reports an input of the wrong shape as a ``ValueError`` on ``x``."""
    try:
        return model.apply(variables, x, **kwargs)
    except flax.errors.ScopeParamShapeError as err:
        raise ValueError(
            f"x: inputs of shape {tuple(x.shape)} do not fit the model's parameters ({err})"
        ) from None


def make_apply_fn(model: nn.Module, variables: Variables) -> ApplyFn:
    """A pure ``apply_fn(params, x) -> logits`` in inference mode (dropout off, BatchNorm
    running averages), with every collection except ``"params"`` closed over."""
    state = {k: v for k, v in variables.items() if k != "params"}

    def apply_fn(params: Params, x: jax.Array) -> jax.Array:
        return apply(model, {"params": params, **state}, x)

    return apply_fn


def make_per_example_dropout_apply_fn(
    model: nn.Module, variables: Variables
) -> Callable[[Params, jax.Array, Key], jax.Array]:
    """A pure ``apply_fn(params, x, key) -> logits`` with one dropout mask drawn from ``key``
    (MC dropout: dropout on, BatchNorm in inference mode)."""
    state = {k: v for k, v in variables.items() if k != "params"}

    def apply_fn(params: Params, x: jax.Array, key: Key) -> jax.Array:
        return apply(model, {"params": params, **state}, x, mc_dropout=True, rngs={"dropout": key})

    return apply_fn
