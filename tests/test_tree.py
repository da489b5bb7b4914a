import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnn_jax import landscape, tree


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
    np.testing.assert_allclose(tree.tree_add(t, t)["a"], 2 * t["a"])
    assert float(tree.tree_dot(tree.tree_zeros_like(t), t)) == 0.0


def test_standard_normals_shapes_moments_and_independence():
    shapes = [(400, 50), (7,), (3, 4, 5)]
    parts = tree.standard_normals(jax.random.key(0), shapes, jnp.float32)
    assert [p.shape for p in parts] == shapes and all(p.dtype == jnp.float32 for p in parts)
    again = jax.jit(lambda k: tree.standard_normals(k, shapes, jnp.float32))(jax.random.key(0))
    np.testing.assert_array_equal(parts[0], again[0])  # same draws under jit
    z = np.asarray(parts[0]).ravel()  # 20,000 draws: moments within ~5 standard errors
    assert abs(z.mean()) < 0.04 and abs(z.std() - 1.0) < 0.03
    assert abs(np.mean(z**4) - 3.0) < 0.2  # Gaussian tails, not e.g. uniform ones
    other = np.asarray(tree.standard_normals(jax.random.key(1), shapes, jnp.float32)[0])
    assert abs(np.corrcoef(z, other.ravel())[0, 1]) < 0.04  # keys give independent draws
    first, second = z[:10_000], z[10_000:]  # and the parts of one draw do not repeat
    assert abs(np.corrcoef(first, second)[0, 1]) < 0.04


@pytest.mark.parametrize("bad", [0, "abc", None])
@pytest.mark.parametrize(
    "draw",
    [
        lambda k: tree.normal_like(k, _example()),
        lambda k: tree.standard_normals(k, [(2,), (3, 1)], jnp.float32),
        lambda k: landscape.random_direction(k, _example()),
    ],
)
def test_bad_keys_are_named(draw, bad):
    with pytest.raises(ValueError, match="key: expected a PRNG key"):
        draw(bad)
    assert jax.tree.leaves(jax.jit(draw)(jax.random.key(0)))  # traced keys pass the check
