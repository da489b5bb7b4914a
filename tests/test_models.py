import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnn_jax import models

CASES = [
    (models.MLP((16, 8), 3), (5,)),
    (models.MLP((16,), 4), (4, 4, 1)),
    (models.LeNet5(10), (28, 28, 1)),
    (models.LeNet5(7, conv2_padding="SAME"), (8, 8, 1)),
    (models.ResNet(depth=8, width=4, num_outputs=5), (8, 8, 3)),
]


@pytest.mark.parametrize(("model", "shape"), CASES, ids=lambda c: getattr(c, "__name__", None))
def test_output_shapes_and_pure_apply(model, shape):
    variables = models.init(model, jax.random.key(0), shape)
    apply_fn = models.make_apply_fn(model, variables)
    x = jax.random.uniform(jax.random.key(1), (3, *shape))
    out = apply_fn(variables["params"], x)
    assert out.shape == (3, model.num_outputs)
    np.testing.assert_allclose(jax.jit(apply_fn)(variables["params"], x), out, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="x: "):
        apply_fn(variables["params"], jnp.ones((3, 3, 3, 2, 2)) if len(shape) == 3 else jnp.ones(3))


def test_input_size_mismatch_is_a_value_error():
    model = models.MLP((8,), 2)
    variables = models.init(model, jax.random.key(0), (6,))
    with pytest.raises(ValueError, match=r"x: inputs of shape \(2, 5\) do not fit"):
        models.make_apply_fn(model, variables)(variables["params"], jnp.ones((2, 5)))


def test_mc_dropout_masks_depend_on_key_only():
    model = models.MLP((32, 32), 3, dropout_rate=0.5)
    variables = models.init(model, jax.random.key(0), (4,))
    drop = models.make_per_example_dropout_apply_fn(model, variables)
    x = jnp.ones((2, 4))
    a, b = (
        drop(variables["params"], x, jax.random.key(1)),
        drop(variables["params"], x, jax.random.key(2)),
    )
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(a, drop(variables["params"], x, jax.random.key(1)))


def test_resnet_depth_must_be_6n_plus_2():
    with pytest.raises(ValueError, match="depth: expected 6n \\+ 2"):
        models.init(models.ResNet(depth=10), jax.random.key(0), (8, 8, 1))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: models.MLP((16,), 0), r"num_outputs: expected an integer >= 1, got 0"),
        (lambda: models.MLP((16, -3), 2), r"widths\[1\]: expected an integer >= 1, got -3"),
        (lambda: models.MLP((16.5,), 2), r"widths\[0\]: expected an integer >= 1"),
        (lambda: models.MLP(16, 2), "widths: expected a sequence of integers"),
        (lambda: models.MLP((4,), 2.0), "num_outputs: expected an integer"),
        (lambda: models.MLP((4,), 2, activation="relu"), "activation: expected a function"),
        (lambda: models.MLP((4,), 2, dropout_rate=float("nan")), "dropout_rate: expected a rate"),
        (lambda: models.LeNet5(0), "num_outputs: expected an integer >= 1"),
        (lambda: models.LeNet5(10, conv2_padding="same"), "conv2_padding: expected 'VALID'"),
        (lambda: models.ResNet(depth=8.0), "depth: expected an integer"),
        (lambda: models.ResNet(depth=10), r"depth: expected 6n \+ 2"),
        (lambda: models.ResNet(width=0), "width: expected an integer >= 1"),
        (lambda: models.ResNet(num_outputs=-1), "num_outputs: expected an integer >= 1"),
        (lambda: models.BasicBlock(0), "features: expected an integer >= 1"),
        (lambda: models.ConcreteDropoutMLP((), 2), "widths: expected at least 1"),
        (lambda: models.ConcreteDropoutMLP((4,), 0), "num_outputs: expected an integer >= 1"),
        (lambda: models.ConcreteDropout("dense"), "layer: expected a flax module"),
    ],
)
def test_bad_attributes_are_refused_at_construction(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_checked_models_still_clone_and_nest():
    # flax rebuilds modules (clone, bind, nesting in compact parents): the checks must pass there
    model = models.ConcreteDropoutMLP((4, 4), 3)
    variables = models.init(model, jax.random.key(0), (5,))
    assert model.clone().apply(variables, jnp.ones((2, 5))).shape == (2, 3)
    assert models.MLP((), 2).apply(
        models.init(models.MLP((), 2), jax.random.key(0), (3,)), jnp.ones((1, 3))
    ).shape == (1, 2)
