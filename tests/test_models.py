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
