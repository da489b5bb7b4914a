"""flax.nnx models as pure functions of their parameters.

The rest of the library sees a model as ``apply_fn(params, x) -> outputs`` with ``params`` a
pytree of arrays. For an ``nnx.Module`` that is ``nnx.merge(graphdef, params, rest)(x)``, with
``params`` the module's ``nnx.Param`` leaves as a nested dict (``nnx.to_pure_dict``; paths such
as ``("layers", "0", "kernel")``) and ``rest`` every other variable (BatchNorm statistics, RNG
streams), closed over. ``nnx.Linear``/``nnx.Conv`` layers are then captured by the curvature
structures like linen's ``nn.Dense``/``nn.Conv``; norm layers' parameters get diagonal blocks.

Example:
  >>> model = MyNet(rngs=nnx.Rngs(0))                       # any nnx.Module
  >>> apply_fn, params = models.nnx_apply_fn(model)
  >>> curv = curvature.kfac(apply_fn, losses.categorical(), fisher=curvature.mc_fisher(), ...)
"""

from collections.abc import Callable

import jax
from flax import nnx

from bnn_jax.types import ApplyFn, Key, Params

__all__ = ["nnx_apply_fn"]


def nnx_apply_fn(module: nnx.Module, state: nnx.State | None = None) -> tuple[ApplyFn, Params]:
    """``(apply_fn, params)`` of an nnx module, in evaluation mode.

    ``apply_fn(params, x) = nnx.merge(graphdef, params, rest)(x)`` after ``.eval()`` (dropout
    off, BatchNorm running averages); ``params`` are the ``nnx.Param`` leaves as a nested dict.
    The module itself is not changed.

    Args:
      module: an ``nnx.Module`` called as ``module(x)``.
      state: use this state (e.g. ``training.train(...).variables``, the full ``nnx.state`` of
        the trained module) instead of the module's own.

    Example:
      >>> result = training.train(model, x, y, key=key, epochs=30, batch_size=64)
      >>> apply_fn, params = models.nnx_apply_fn(model, result.variables)
      >>> logits = apply_fn(params, x_test)
    """
    if not isinstance(module, nnx.Module):
        raise ValueError(f"module: expected an nnx.Module, got {type(module).__name__}")
    if state is not None:
        module = nnx.merge(nnx.graphdef(module), state)
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)

    def apply_fn(p: Params, x: jax.Array) -> jax.Array:
        merged = nnx.merge(graphdef, p, rest)
        merged.eval()
        return merged(x)

    return apply_fn, nnx.to_pure_dict(params)


def split_variables(state: nnx.State) -> tuple[Params, Params]:
    """``(params, rest)``: the ``nnx.Param`` leaves and the other variables, as nested dicts of
    arrays (``nnx.merge`` makes fresh variables from them, so they may cross ``jit``/``grad``
    boundaries)."""
    params, rest = nnx.split_state(state, nnx.Param, ...)
    return nnx.to_pure_dict(params), nnx.to_pure_dict(rest)


def join_variables(module: nnx.Module, params: Params, rest: Params) -> nnx.State:
    """The full state of ``module`` with these ``params`` and other variables."""
    return nnx.state(nnx.merge(nnx.graphdef(module), params, rest))


def forward_fns(module: nnx.Module) -> tuple[Callable, Callable]:
    """``(train_forward, predict)`` of an nnx module, both pure.

    ``train_forward(params, rest, x, key) -> (outputs, rest)`` runs in training mode
    (``.train()``: dropout on, BatchNorm batch statistics) with every RNG stream of the module
    reseeded from ``key`` (``fold_in(key, i)`` for the ``i``-th stream name in sorted order) and
    returns the updated other variables; ``predict(params, rest, x)`` runs in evaluation mode.
    """
    graphdef = nnx.graphdef(module)

    def train_forward(params, rest, x, key: Key):
        merged = nnx.merge(graphdef, params, rest)
        merged.train()
        tags = sorted(
            {s.key.tag for _, s in nnx.iter_graph(merged) if isinstance(s, nnx.RngStream)}
        )
        if tags:
            nnx.reseed(merged, **{t: jax.random.fold_in(key, i) for i, t in enumerate(tags)})
        outputs = merged(x)
        return outputs, nnx.to_pure_dict(nnx.split(merged, nnx.Param, ...)[2])

    def predict(params, rest, x):
        merged = nnx.merge(graphdef, params, rest)
        merged.eval()
        return merged(x)

    return train_forward, predict
