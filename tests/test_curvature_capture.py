"""Layer capture, parameter subsets and layouts against hand-written references."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnn_jax import models
from bnn_jax.curvature import blocks, capture, find_layers, subset
from bnn_jax.curvature.layout import Layout
from bnn_jax.curvature.patches import _sliced_patches, conv_patches


class SharedNet(nn.Module):
    """A CNN whose Dense layer is applied twice (weight sharing) and a grouped conv."""

    @nn.compact
    def __call__(self, x):
        h = nn.tanh(nn.Conv(2, (3, 3), strides=2, padding="CIRCULAR", kernel_dilation=1)(x))
        h = nn.Conv(2, (1, 1), feature_group_count=2)(h)
        h = h.reshape(h.shape[0], -1, 2)
        dense = nn.Dense(2)
        return dense(jnp.tanh(dense(h))).reshape(h.shape[0], -1)


def _captured(apply_fn, params, x, cotangent):
    """Inputs and output gradients from ``capture``, jitted (op-by-op dispatch is slower)."""

    @jax.jit
    def run(params, x, cotangent):
        cap = capture(apply_fn, params, x)
        return cap.inputs, cap.backward(cotangent)

    return run(params, x, cotangent)


def _setup(model, shape, batch=3):
    x = jax.random.normal(jax.random.key(1), (batch, *shape), jnp.float64)
    variables = jax.jit(model.init)(jax.random.key(0), x)
    variables = jax.tree.map(lambda a: a.astype(jnp.float64), variables)
    return (lambda p, inputs: model.apply({**variables, "params": p}, inputs)), variables, x


def test_find_layers_on_resnet_with_batchnorm():
    model = models.ResNet(depth=8, width=2, num_outputs=3)
    x = jnp.zeros((1, 8, 8, 1))
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)  # values do not matter here
    variables = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    apply_fn = models.make_apply_fn(model, variables)
    layers = find_layers(apply_fn, variables["params"], jnp.zeros((1, 8, 8, 1)))
    assert [layer.kind for layer in layers] == ["conv"] * 9 + ["dense"]
    assert layers[-1].path == ("Dense_0",) and layers[-1].use_bias
    assert layers[0].kernel_shape == (3, 3, 1, 2) and not layers[0].use_bias
    # calling twice gives the same answer (no stale trace cache)
    assert find_layers(apply_fn, variables["params"], jnp.zeros((1, 8, 8, 1))) == layers


def test_capture_dense_inputs_and_output_gradients_match_manual_mlp(x64):
    model = models.MLP(widths=(4,), num_outputs=3, activation=jnp.tanh)
    apply_fn, variables, x = _setup(model, (5,))
    p = variables["params"]
    cotangent = jax.random.normal(jax.random.key(2), (3, 3), jnp.float64)
    inputs, grads = _captured(apply_fn, p, x, cotangent)
    # manual forward
    w0, b0 = p["Dense_0"]["kernel"], p["Dense_0"]["bias"]
    w1 = p["Dense_1"]["kernel"]
    pre = x @ w0 + b0
    h = jnp.tanh(pre)
    np.testing.assert_allclose(inputs[("Dense_0",)][:, 0], x)
    np.testing.assert_allclose(inputs[("Dense_1",)][:, 0], h)
    np.testing.assert_allclose(grads[("Dense_1",)][:, 0], cotangent)
    np.testing.assert_allclose(grads[("Dense_0",)][:, 0], (cotangent @ w1.T) * (1 - h**2))
    # the weight gradient is sum_t a_t b_t^T
    loss = lambda k: jnp.sum(
        cotangent * apply_fn({**p, "Dense_0": {**p["Dense_0"], "kernel": k}}, x)
    )
    kernel_grad = jax.jit(jax.grad(loss))(w0)
    np.testing.assert_allclose(
        jnp.einsum("bti,bto->io", inputs[("Dense_0",)], grads[("Dense_0",)]), kernel_grad
    )


def test_capture_conv_patches_and_shared_dense(x64):
    apply_fn, variables, x = _setup(SharedNet(), (5, 5, 2))
    p = variables["params"]
    layers = find_layers(apply_fn, p, x)
    # the grouped convolution is not captured; the shared Dense is found once
    assert [layer.path for layer in layers] == [("Conv_0",), ("Dense_0",)]
    cotangent = jax.random.normal(jax.random.key(3), (3, 18), jnp.float64)
    inputs, grads = _captured(apply_fn, p, x, cotangent)
    a = inputs[("Conv_0",)]
    assert a.shape == (3, 9, 18)
    # reference patches: circular padding by hand, then lax patches reordered to (kh, kw, c)
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="wrap")
    ref = jax.lax.conv_general_dilated_patches(
        padded, (3, 3), (2, 2), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )  # features ordered (c, kh, kw)
    ref = ref.reshape(3, 3, 3, 2, 3, 3).transpose(0, 1, 2, 4, 5, 3).reshape(3, 9, 18)
    np.testing.assert_allclose(a, ref, atol=1e-12)
    # weight sharing: positions of both calls are concatenated; gradients sum over them
    assert inputs[("Dense_0",)].shape == (3, 18, 2)
    for path in [("Conv_0",), ("Dense_0",)]:
        kernel = p[path[0]]["kernel"]
        loss = lambda k, m=path[0]: jnp.sum(
            cotangent * apply_fn({**p, m: {**p[m], "kernel": k}}, x)
        )
        ref_grad = jax.jit(jax.grad(loss))(kernel)
        got = jnp.einsum("bti,bto->io", inputs[path], grads[path])
        np.testing.assert_allclose(got, ref_grad.reshape(got.shape), atol=1e-12)


def test_subset_select_merge_and_last_layer():
    model = models.MLP(widths=(4, 4), num_outputs=3)
    variables = models.init(model, jax.random.key(0), (2,))
    apply_fn = models.make_apply_fn(model, variables)
    p = variables["params"]
    last = subset.last_layer(apply_fn, p, jnp.zeros((1, 2)))
    selected = last.select(p)
    assert Layout.of(selected).paths == (("Dense_2", "bias"), ("Dense_2", "kernel"))
    doubled = jax.tree.map(lambda a: 2 * a, selected)
    merged = last.merge(p, doubled)
    np.testing.assert_array_equal(merged["Dense_2"]["kernel"], 2 * p["Dense_2"]["kernel"])
    np.testing.assert_array_equal(merged["Dense_0"]["kernel"], p["Dense_0"]["kernel"])
    kernels = subset.where(lambda path: path[-1] == "kernel")
    assert len(jax.tree.leaves(kernels.select(p))) == 3
    with pytest.raises(ValueError, match="subset: no parameter matches"):
        subset.where(lambda path: path[0] == "Conv_9").select(p)
    with pytest.raises(ValueError, match="subset: no parameter matches"):
        subset.modules(("Dense_7",)).select(p)
    with pytest.raises(ValueError, match="selected: expected 2 leaves"):
        last.merge(p, {"x": jnp.zeros(1)})


def test_layout_ravel_matches_tree_ravel_and_round_trips():
    tree = {"b": jnp.arange(3.0), "a": {"k": jnp.ones((2, 2)), "z": None}}
    layout = Layout.of(tree)
    flat = jax.flatten_util.ravel_pytree(tree)[0]
    np.testing.assert_array_equal(layout.ravel(tree), flat)
    back = layout.unravel(flat)
    np.testing.assert_array_equal(back["a"]["k"], tree["a"]["k"])
    stacked = jax.tree.map(lambda a: jnp.stack([a, 2 * a]), tree)
    np.testing.assert_array_equal(layout.ravel(stacked, batch_dims=1)[1], 2 * flat)


@pytest.mark.parametrize("num_columns", [3, blocks.UNROLLED_BACKWARD_PASSES + 2])
def test_backward_per_factor_equals_one_backward_per_column(x64, num_columns):
    """Unrolled (few columns) or vmapped (many): column ``m`` is ``backward(factors[..., m])``,
    through a max pool, whose batched gradient is where the two paths differ."""
    model = models.LeNet5(num_outputs=4, conv2_padding="SAME")
    apply_fn, variables, x = _setup(model, (8, 8, 1), batch=2)
    params = variables["params"]
    factors = jax.random.normal(jax.random.key(2), (2, 4, num_columns), jnp.float64)

    @jax.jit
    def run(params, x, factors):
        cap = capture(apply_fn, params, x)
        stacked = blocks.backward_per_factor(cap.backward, factors)
        return stacked, [cap.backward(factors[..., m]) for m in range(num_columns)]

    stacked, columns = run(params, x, factors)
    for m, column in enumerate(columns):
        for path, grad in column.items():
            np.testing.assert_allclose(stacked[path][m], grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("options", "sliced"),
    [
        ({"kernel_size": (3, 3), "padding": "SAME"}, True),
        ({"kernel_size": (3, 2), "padding": "VALID", "strides": 2}, True),
        ({"kernel_size": (3, 3), "padding": "SAME", "strides": (2, 1), "kernel_dilation": 2}, True),
        ({"kernel_size": (2, 3), "padding": ((1, 0), (2, 1))}, True),
        ({"kernel_size": (3, 3), "padding": 1, "strides": 3}, True),
        ({"kernel_size": (4,), "padding": "SAME", "strides": 2}, True),  # 1-D
        ({"kernel_size": (3, 3), "padding": "CIRCULAR"}, False),
        ({"kernel_size": (3, 3), "padding": "REFLECT"}, False),
        ({"kernel_size": (3,), "padding": "CAUSAL"}, False),
        ({"kernel_size": (3, 3), "padding": ((1, 1), (2, 0)), "input_dilation": 2}, False),
    ],
)
def test_conv_patches_reproduce_the_convolution(x64, options, sliced):
    """``patches @ kernel.reshape(-1, c_out) + bias`` is the module's output, by strided slices
    for zero padding and by the identity-kernel fallback otherwise."""
    module = nn.Conv(3, **options)
    shape = (2, 7, 6, 2) if len(options["kernel_size"]) == 2 else (2, 9, 2)
    x = jax.random.normal(jax.random.key(0), shape, jnp.float64)
    variables = module.init(jax.random.key(1), x)
    kernel, bias = variables["params"]["kernel"], variables["params"]["bias"]
    patches = conv_patches(module, x)
    rebuilt = patches @ kernel.reshape(-1, kernel.shape[-1]) + bias
    np.testing.assert_allclose(rebuilt, module.apply(variables, x), rtol=1e-12, atol=1e-12)
    fast = _sliced_patches(module, tuple(module.kernel_size), x)
    assert (fast is not None) == sliced
