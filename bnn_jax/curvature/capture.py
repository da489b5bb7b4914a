"""Capture each Dense/Conv layer's input and the gradient at its output.

Works for any unmodified flax model behind a pure ``apply_fn(params, x)``, linen (``nn.Dense``,
``nn.Conv``) or nnx (``nnx.Linear``, ``nnx.Conv``, e.g. ``apply_fn = lambda p, x:
nnx.merge(graphdef, p, rest)(x)``, see ``models.nnx_apply_fn``). Inside :func:`intercept_layers`
every such call is handed to a function that may record its input and change its output: linen
modules through ``nn.intercept_methods``; nnx modules through ``nnx.Linear.__call__`` and
``nnx.Conv.__call__``, which are swapped for a dispatcher while (and only while) some thread is
inside the block; the dispatcher calls the original method and, in the context that entered
the block (a ``ContextVar``), the interceptor. ``capture`` records every Dense/Conv input and
adds a zero perturbation ``eps`` to its output. The vector-Jacobian product of the outputs with
respect to the perturbations is the gradient at each layer's output,
``b = d(c^T f)/d(layer output)``, for any output-space cotangent ``c``: one forward pass, one
backward pass per cotangent, no parameter gradients and no per-example gradients.

Parameter paths: a linen layer's parameters are ``module.path + ("kernel",)`` (and
``"bias"``). An nnx layer does not know where its parameters sit in ``params``; its kernel and
bias are found by identity among the leaves of the ``params`` given to ``apply_fn`` (what
``nnx.merge`` puts into the module), so ``apply_fn`` must hand those arrays to the module
unchanged (no casting or copying); a layer whose kernel is not among them is not captured (its
parameters count as "other" parameters).

A layer's weight gradient is then ``sum_t a_t b_t^T`` over its positions ``t``:

- Dense on inputs ``[B, ..., d_in]``: ``a_t`` is the input at position ``t`` (``T`` is the
  product of the middle axes, 1 for ``[B, d_in]``);
- Conv: ``a_t`` is the input patch at output location ``t`` (KFC, Grosse & Martens 2016),
  flattened in the order of the kernel's leading axes ``(kh, kw, c_in)``, so that the output is
  ``a_t @ kernel.reshape(-1, c_out) + bias``. Patches follow the module's own padding, strides
  and dilations (``bnn_jax.curvature.patches``).

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

import contextlib
import contextvars
import dataclasses
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from bnn_jax.curvature.layout import Path, leaf_paths
from bnn_jax.curvature.patches import ConvSpec, conv_patches, conv_spec
from bnn_jax.types import ApplyFn, Params

__all__ = ["Capture", "Layer", "capture", "find_layers", "intercept_layers"]


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class Layer:
    """A Dense or Conv module met in the forward pass (static metadata).

    Attributes:
      path: the module's path, e.g. ``("BasicBlock_0", "Conv_1")`` (linen) or
        ``("blocks", "0", "conv")`` (nnx: the parameters' path without the leaf name).
      kind: ``"dense"`` or ``"conv"``.
      kernel_shape: ``[d_in, d_out]`` (Dense) or ``[*window, c_in, c_out]`` (Conv).
      use_bias: whether the module has a bias.
      kernel_path, bias_path: the paths of the kernel and the bias in the ``params`` pytree
        (default ``path + ("kernel",)`` and ``path + ("bias",)``, linen's layout).
    """

    path: Path
    kind: str
    kernel_shape: tuple[int, ...]
    use_bias: bool
    kernel_path: Path = None
    bias_path: Path = None

    def __post_init__(self):
        if self.kernel_path is None:
            object.__setattr__(self, "kernel_path", (*self.path, "kernel"))
        if self.bias_path is None:
            object.__setattr__(self, "bias_path", (*self.path, "bias"))

    @property
    def in_features(self) -> int:
        """Length of ``a_t``: ``prod(kernel_shape[:-1])`` (no homogeneous coordinate)."""
        return math.prod(self.kernel_shape[:-1])

    @property
    def out_features(self) -> int:
        return self.kernel_shape[-1]


Interceptor = Callable[[Layer, ConvSpec | None, jax.Array, jax.Array], jax.Array]
"""``fn(layer, conv, inputs, outputs) -> outputs`` for one Dense/Conv call (``conv`` is the
convolution's :class:`~bnn_jax.curvature.patches.ConvSpec`, ``None`` for Dense layers)."""


def _linen_layer(module: nn.Module) -> Layer | None:
    if isinstance(module, nn.Dense):
        kind = "dense"
    elif isinstance(module, nn.Conv) and module.feature_group_count == 1 and module.mask is None:
        kind = "conv"
    else:
        return None
    kernel_shape = tuple(int(d) for d in module.get_variable("params", "kernel").shape)
    return Layer(tuple(module.path), kind, kernel_shape, bool(module.use_bias))


def _nnx_layer(module: nnx.Module, paths: dict[int, Path]) -> Layer | None:
    grouped = isinstance(module, nnx.Conv) and module.feature_group_count != 1
    if grouped or getattr(module, "mask", None) is not None:
        return None
    kernel = module.kernel.get_value()
    kernel_path = paths.get(id(kernel))
    if kernel_path is None:
        return None
    use_bias = module.bias is not None
    bias_path = paths.get(id(module.bias.get_value())) if use_bias else None
    if use_bias and bias_path is None:
        return None
    kind = "conv" if isinstance(module, nnx.Conv) else "dense"
    shape = tuple(int(d) for d in kernel.shape)
    return Layer(kernel_path[:-1], kind, shape, use_bias, kernel_path, bias_path)


# The nnx dispatcher: installed on nnx.Linear/nnx.Conv while any thread is inside
# ``intercept_layers`` (reference counted), calling the interceptors of the current context.
_NNX_INTERCEPTORS: contextvars.ContextVar[tuple] = contextvars.ContextVar(
    "bnn_jax_nnx_interceptors", default=()
)
_NNX_LOCK = threading.Lock()
_NNX_USERS = 0
_NNX_ORIGINALS = {cls: cls.__call__ for cls in (nnx.Linear, nnx.Conv)}


def _nnx_dispatcher(original):
    def __call__(self, inputs, *args, **kwargs):
        out = original(self, inputs, *args, **kwargs)
        for handler in _NNX_INTERCEPTORS.get():
            out = handler(self, inputs, out)
        return out

    return __call__


@contextlib.contextmanager
def _nnx_hooks(handler) -> Iterator[None]:
    global _NNX_USERS
    with _NNX_LOCK:
        if _NNX_USERS == 0:
            for cls, original in _NNX_ORIGINALS.items():
                cls.__call__ = _nnx_dispatcher(original)
        _NNX_USERS += 1
    token = _NNX_INTERCEPTORS.set((*_NNX_INTERCEPTORS.get(), handler))
    try:
        yield
    finally:
        _NNX_INTERCEPTORS.reset(token)
        with _NNX_LOCK:
            _NNX_USERS -= 1
            if _NNX_USERS == 0:
                for cls, original in _NNX_ORIGINALS.items():
                    cls.__call__ = original


def _identity_paths(params: Params) -> dict[int, Path]:
    """``id(leaf) -> path`` for the leaves of ``params`` (leaves held twice are left out)."""
    paths: dict[int, Path] = {}
    shared = set()
    for path, leaf in zip(leaf_paths(params), jax.tree.leaves(params), strict=True):
        if id(leaf) in paths:
            shared.add(id(leaf))
        paths[id(leaf)] = path
    return {i: p for i, p in paths.items() if i not in shared}


@contextlib.contextmanager
def intercept_layers(params: Params, fn: Interceptor) -> Iterator[None]:
    """Within the block, every Dense/Conv call of a model applied to ``params`` returns
    ``fn(layer, conv, inputs, outputs)`` instead of ``outputs``.

    ``params`` must be the very pytree handed to ``apply_fn`` inside the block (nnx layers are
    matched to their parameters by identity). Trace ``apply_fn`` afresh inside the block: a
    trace cached by ``jax.jit`` does not run the interceptor. Nothing outside the block changes.

    Example (record every layer's input):
      >>> seen = []
      >>> def record(layer, conv, inputs, outputs):
      ...     seen.append((layer.path, inputs.shape))
      ...     return outputs
      >>> with intercept_layers(params, record):
      ...     apply_fn(params, x)
    """
    paths = _identity_paths(params)

    def linen(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name != "__call__":
            return out
        layer = _linen_layer(context.module)
        if layer is None:
            return out
        conv = conv_spec(context.module) if layer.kind == "conv" else None
        return fn(layer, conv, args[0], out)

    def nnx_handler(module, inputs, out):
        layer = _nnx_layer(module, paths)
        if layer is None:
            return out
        conv = conv_spec(module) if layer.kind == "conv" else None
        return fn(layer, conv, inputs, out)

    with nn.intercept_methods(linen), _nnx_hooks(nnx_handler):
        yield


class _Call(NamedTuple):
    layer: Layer
    output: jax.ShapeDtypeStruct
    conv: ConvSpec | None


def _trace_calls(apply_fn: ApplyFn, params: Params, x: jax.Array) -> list[_Call]:
    calls: list[_Call] = []

    def record(layer, conv, inputs, out):
        calls.append(_Call(layer, jax.ShapeDtypeStruct(out.shape, out.dtype), conv))
        return out

    def traced(p, inputs):
        # A fresh function object: jax.eval_shape caches traces by function identity, and a
        # cached trace would not run the interceptor.
        with intercept_layers(p, record):
            return apply_fn(p, inputs)

    jax.eval_shape(traced, params, x)
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
      apply_fn: ``apply_fn(params, x) -> outputs [B, K]`` using flax.linen or nnx modules.
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

        def perturb(layer, conv, inputs, out):
            if len(recorded) < len(calls) and layer.path == calls[len(recorded)].layer.path:
                out = out + eps[len(recorded)]
                recorded.append(inputs)
            return out

        with intercept_layers(params, perturb):
            outputs = apply_fn(params, x)
        return outputs, recorded

    outputs, vjp_fn, raw_inputs = jax.vjp(perturbed, zeros, has_aux=True)
    if len(raw_inputs) != len(calls):
        raise ValueError("apply_fn: the Dense/Conv calls changed between two traces")

    inputs = []
    for call, raw in zip(calls, raw_inputs, strict=True):
        if call.layer.kind == "conv":
            raw = conv_patches(call.conv, raw)
        inputs.append(_per_position(raw, batch, call.layer.in_features, call.layer.path))

    def backward(cotangent: jax.Array) -> dict[Path, jax.Array]:
        (grads,) = vjp_fn(cotangent)
        values = [
            _per_position(g, batch, c.layer.out_features, c.layer.path)
            for c, g in zip(calls, grads, strict=True)
        ]
        return _group(calls, values)

    return Capture(outputs, _group(calls, inputs), backward)
