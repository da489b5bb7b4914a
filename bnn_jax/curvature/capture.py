"""Capture each ``nn.Dense``/``nn.Conv`` layer's input and the gradient at its output.

Works for any unmodified flax.linen model behind a pure ``apply_fn(params, x)``: the forward
pass runs under ``nn.intercept_methods``; every Dense/Conv call records its input and adds a
zero perturbation ``eps`` to its output. The vector-Jacobian product of the outputs with respect
to the perturbations is the gradient at each layer's output, ``b = d(c^T f)/d(layer output)``,
for any output-space cotangent ``c``: one forward pass, one backward pass per cotangent, no
parameter gradients and no per-example gradients.

A layer's weight gradient is then ``sum_t a_t b_t^T`` over its positions ``t``:

- ``nn.Dense`` on inputs ``[B, ..., d_in]``: ``a_t`` is the input at position ``t`` (``T`` is
  the product of the middle axes, 1 for ``[B, d_in]``);
- ``nn.Conv``: ``a_t`` is the input patch at output location ``t`` (KFC, Grosse & Martens
  2016), flattened in the order of the kernel's leading axes ``(kh, kw, c_in)``, so that the
  output is ``a_t @ kernel.reshape(-1, c_out) + bias``. Patches follow the module's own
  padding, strides and dilations (``bnn_jax.curvature.patches``).

Convolutions with ``feature_group_count > 1`` or a ``mask`` are not captured (their parameters
count as "other" parameters for the curvature structures). A module called several times
(weight sharing) is captured once, with the positions of all calls concatenated.

Example (the per-layer Jacobian of output ``k`` for a Dense layer is ``a ⊗ b_k``):
  >>> layers = find_layers(apply_fn, params, x)
  >>> cap = capture(apply_fn, params, x)
  >>> eye = jnp.eye(num_classes)
  >>> grads = jax.vmap(lambda e: cap.backward(jnp.broadcast_to(e, cap.outputs.shape)))(eye)
  >>> a, b = cap.inputs[layers[-1].path], grads[layers[-1].path]   # [B,T,d_in], [K,B,T,d_out]
"""

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from bnn_jax.curvature.layout import Path
from bnn_jax.curvature.patches import conv_patches
from bnn_jax.types import ApplyFn, Params

__all__ = ["Capture", "Layer", "capture", "find_layers"]


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class Layer:
    """A Dense or Conv module met in the forward pass (static metadata).

    Attributes:
      path: the module path, e.g. ``("BasicBlock_0", "Conv_1")``; its parameters are
        ``path + ("kernel",)`` and ``path + ("bias",)`` in the ``params`` pytree.
      kind: ``"dense"`` or ``"conv"``.
      kernel_shape: ``[d_in, d_out]`` (Dense) or ``[*window, c_in, c_out]`` (Conv).
      use_bias: whether the module has a bias.
    """

    path: Path
    kind: str
    kernel_shape: tuple[int, ...]
    use_bias: bool

    @property
    def kernel_path(self) -> Path:
        return (*self.path, "kernel")

    @property
    def bias_path(self) -> Path:
        return (*self.path, "bias")

    @property
    def in_features(self) -> int:
        """Length of ``a_t``: ``prod(kernel_shape[:-1])`` (no homogeneous coordinate)."""
        return math.prod(self.kernel_shape[:-1])

    @property
    def out_features(self) -> int:
        return self.kernel_shape[-1]


class _Call(NamedTuple):
    layer: Layer
    output: jax.ShapeDtypeStruct
    patch_module: nn.Module | None


def _kind(module: nn.Module) -> str | None:
    if isinstance(module, nn.Dense):
        return "dense"
    if isinstance(module, nn.Conv) and module.feature_group_count == 1 and module.mask is None:
        return "conv"
    return None


def _trace_calls(apply_fn: ApplyFn, params: Params, x: jax.Array) -> list[_Call]:
    calls: list[_Call] = []

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        kind = _kind(context.module) if context.method_name == "__call__" else None
        if kind is not None:
            module = context.module
            kernel_shape = tuple(int(d) for d in module.get_variable("params", "kernel").shape)
            layer = Layer(tuple(module.path), kind, kernel_shape, bool(module.use_bias))
            patch_module = module.clone(parent=None) if kind == "conv" else None
            calls.append(_Call(layer, jax.ShapeDtypeStruct(out.shape, out.dtype), patch_module))
        return out

    with nn.intercept_methods(interceptor):
        # A fresh function object: jax.eval_shape caches traces by function identity, and a
        # cached trace would not run the interceptor.
        jax.eval_shape(lambda p, inputs: apply_fn(p, inputs), params, x)
    return calls


def find_layers(apply_fn: ApplyFn, params: Params, x: jax.Array) -> tuple[Layer, ...]:
    """The Dense/Conv layers of ``apply_fn``, in order of their first call on inputs like ``x``.

    Only shapes are traced (``jax.eval_shape``); ``x`` may be a ``jax.ShapeDtypeStruct``.
    """
    unique: dict[Path, Layer] = {}
    for call in _trace_calls(apply_fn, params, x):
        unique.setdefault(call.layer.path, call.layer)
    return tuple(unique.values())


class Capture(NamedTuple):
    """Result of ``capture``.

    Attributes:
      outputs: ``apply_fn(params, x)``, e.g. logits ``[B, K]``.
      inputs: ``{layer.path: a}`` with ``a`` of shape ``[B, T, layer.in_features]`` (layer
        inputs, or conv patches), without a homogeneous coordinate.
      backward: ``cotangent [B, K] -> {layer.path: b [B, T, layer.out_features]}``, the
        gradient of ``sum(cotangent * outputs)`` at each layer's output. Linear; vmap it over
        several cotangents.
    """

    outputs: jax.Array
    inputs: dict[Path, jax.Array]
    backward: Callable[[jax.Array], dict[Path, jax.Array]]


def _per_position(value: jax.Array, batch: int, features: int, path: Path) -> jax.Array:
    if value.ndim < 2 or value.shape[0] != batch:
        raise ValueError(
            f"apply_fn: layer {'/'.join(path)} sees an array of shape {tuple(value.shape)}; "
            f"expected a leading batch axis of size {batch} (examples must be processed "
            "independently along axis 0)"
        )
    return value.reshape(batch, -1, features)


def _group(calls: Sequence[_Call], values: Sequence[jax.Array]) -> dict[Path, jax.Array]:
    grouped: dict[Path, list[jax.Array]] = {}
    for call, value in zip(calls, values, strict=True):
        grouped.setdefault(call.layer.path, []).append(value)
    return {p: v[0] if len(v) == 1 else jnp.concatenate(v, axis=1) for p, v in grouped.items()}


def capture(
    apply_fn: ApplyFn, params: Params, x: jax.Array, *, paths: Sequence[Path] | None = None
) -> Capture:
    """One forward pass of ``apply_fn(params, x)`` recording Dense/Conv inputs and a backward
    function for the gradients at their outputs.

    Args:
      apply_fn: ``apply_fn(params, x) -> outputs [B, K]`` using flax.linen modules.
      params: the full parameters.
      x: inputs ``[B, ...]``.
      paths: module paths to capture (default: every Dense/Conv layer). The backward pass
        stops at the earliest captured layer.

    Returns:
      A ``Capture`` (outputs, inputs per layer path, backward function).
    """
    calls = _trace_calls(apply_fn, params, x)
    if paths is not None:
        wanted = set(paths)
        calls = [c for c in calls if c.layer.path in wanted]
    batch = x.shape[0]
    zeros = [jnp.zeros(c.output.shape, c.output.dtype) for c in calls]

    def perturbed(eps: list[jax.Array]) -> tuple[jax.Array, list[jax.Array]]:
        recorded: list[Any] = []

        def interceptor(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            if context.method_name != "__call__" or _kind(context.module) is None:
                return out
            if len(recorded) < len(calls) and tuple(context.module.path) == (
                calls[len(recorded)].layer.path
            ):
                out = out + eps[len(recorded)]
                recorded.append(args[0])
            return out

        with nn.intercept_methods(interceptor):
            outputs = apply_fn(params, x)
        return outputs, recorded

    outputs, vjp_fn, raw_inputs = jax.vjp(perturbed, zeros, has_aux=True)
    if len(raw_inputs) != len(calls):
        raise ValueError("apply_fn: the Dense/Conv calls changed between two traces")

    inputs = []
    for call, raw in zip(calls, raw_inputs, strict=True):
        if call.layer.kind == "conv":
            raw = conv_patches(call.patch_module, raw)
        inputs.append(_per_position(raw, batch, call.layer.in_features, call.layer.path))

    def backward(cotangent: jax.Array) -> dict[Path, jax.Array]:
        (grads,) = vjp_fn(cotangent)
        values = [
            _per_position(g, batch, c.layer.out_features, c.layer.path)
            for c, g in zip(calls, grads, strict=True)
        ]
        return _group(calls, values)

    return Capture(outputs, _group(calls, inputs), backward)
