import jax
import jax.numpy as jnp
import numpy as np

from bnn_jax import tree


def _example():
    return {"a": jnp.arange(6.0).reshape(2, 3), "b": {"c": jnp.ones(4)}}


def test_ravel_roundtrip_and_size():
    t = _example()
    flat, unravel = tree.ravel(t)
    assert flat.shape == (10,) == (tree.tree_size(t),)
    back = unravel(flat)
    np.testing.assert_array_equal(back["a"], t["a"])


def test_dot_matches_flat_dot():
    t = _example()
    u = tree.normal_like(jax.random.key(1), t)
    expected = jnp.dot(tree.ravel(t)[0], tree.ravel(u)[0])
    np.testing.assert_allclose(tree.tree_dot(t, u), expected, rtol=1e-6)


def test_normal_like_leaves_independent_and_deterministic():
    t = {"a": jnp.zeros(1000), "b": jnp.zeros(1000)}
    u1 = tree.normal_like(jax.random.key(0), t)
    u2 = tree.normal_like(jax.random.key(0), t)
    np.testing.assert_array_equal(u1["a"], u2["a"])
    assert abs(np.corrcoef(u1["a"], u1["b"])[0, 1]) < 0.1
    assert abs(float(jnp.std(u1["a"])) - 1.0) < 0.1


def test_arithmetic():
    t = _example()
    np.testing.assert_allclose(tree.tree_sub(tree.tree_add(t, t), t)["a"], t["a"])
    np.testing.assert_allclose(tree.tree_scale(2.0, t)["b"]["c"], 2 * t["b"]["c"])
    assert float(tree.tree_dot(tree.tree_zeros_like(t), t)) == 0.0
