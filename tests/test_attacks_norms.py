"""Threat-model geometry: steepest-ascent directions, eps-ball projections, random starts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnn_jax.attacks import NORMS, norm_ops

NUMPY_ORD = {"linf": np.inf, "l2": 2, "l1": 1}
DUAL_ORD = {"linf": 1, "l2": 2, "l1": np.inf}


def _norms(v, norm):
    return np.linalg.norm(np.asarray(v).reshape(len(v), -1), ord=NUMPY_ORD[norm], axis=1)


@pytest.mark.parametrize("norm", NORMS)
def test_direction_is_unit_and_attains_dual_norm(x64, norm):
    """<g, d> = ||g||_* (dual norm) with ||d|| = 1: the steepest-ascent direction."""
    g = np.random.default_rng(0).normal(size=(6, 3, 4))
    d = np.asarray(jax.jit(norm_ops(norm).direction)(g))
    np.testing.assert_allclose(_norms(d, norm), 1.0, rtol=1e-12)
    inner = np.sum((g * d).reshape(6, -1), axis=1)
    dual = np.linalg.norm(g.reshape(6, -1), ord=DUAL_ORD[norm], axis=1)
    np.testing.assert_allclose(inner, dual, rtol=1e-12)
    # No feasible direction does better (random points of the unit ball).
    z = np.random.default_rng(1).normal(size=(20 * 6, 3, 4))
    z = np.asarray(jax.jit(norm_ops(norm).project)(z, 1.0)).reshape(20, 6, -1)
    assert np.all(np.sum(g.reshape(6, -1) * z, axis=2) <= inner + 1e-12)


@pytest.mark.parametrize("norm", NORMS)
def test_direction_of_zero_and_of_tiny_gradients(norm):
    g = np.zeros((3, 5), np.float32)
    g[1, 2], g[2] = 2e-37, -3e-30
    d = jax.jit(norm_ops(norm).direction)(g)
    np.testing.assert_array_equal(d[0], 0.0)
    np.testing.assert_allclose(_norms(d[1:], norm), 1.0, rtol=1e-6)
    assert np.all(np.isfinite(d))


def test_l1_direction_splits_mass_between_ties(x64):
    g = jnp.array([[1.0, -3.0, 3.0, 0.5]])
    np.testing.assert_array_equal(norm_ops("l1").direction(g), [[0.0, -0.5, 0.5, 0.0]])


def _reference_projection(v, eps, norm):
    """Euclidean projection onto the eps-ball, one example, by slow obvious means."""
    v = np.asarray(v, np.float64).ravel()
    if norm == "linf":
        return np.clip(v, -eps, eps)
    if norm == "l2":
        n = np.linalg.norm(v)
        return v if n <= eps else v * eps / n
    if np.abs(v).sum() <= eps:
        return v
    lo, hi = 0.0, np.abs(v).max()  # bisection on the soft threshold: sum (|v| - t)_+ = eps
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.maximum(np.abs(v) - mid, 0).sum() > eps else (lo, mid)
    return np.sign(v) * np.maximum(np.abs(v) - lo, 0)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("eps", [0.0, 0.3, 2.0])
def test_projection_matches_reference(x64, norm, eps):
    v = jax.random.normal(jax.random.key(1), (5, 2, 3), jnp.float64)
    v = v.at[0].multiply(0.01)  # one example already inside the ball (for eps > 0)
    projected = np.asarray(jax.jit(norm_ops(norm).project)(v, eps)).reshape(5, -1)
    for i in range(5):
        np.testing.assert_allclose(projected[i], _reference_projection(v[i], eps, norm), atol=1e-12)


@pytest.mark.parametrize("norm", NORMS)
def test_random_start_is_uniform_in_the_ball(norm):
    """Inside the ball; in 2D, a quarter of a uniform sample lies in the half-radius ball."""
    eps = 0.7
    random = jax.jit(norm_ops(norm).random, static_argnums=(1, 3))
    delta = random(jax.random.key(2), (20000, 2), eps, jnp.float32)
    sizes = _norms(delta, norm)
    assert delta.shape == (20000, 2) and delta.dtype == jnp.float32
    assert np.all(sizes <= eps * (1 + 1e-6))
    assert abs(np.mean(sizes <= eps / 2) - 0.25) < 0.015
    assert abs(np.mean(np.asarray(delta[:, 0]) > 0) - 0.5) < 0.015
    other = random(jax.random.key(3), (20000, 2), eps, jnp.float32)
    assert not np.allclose(delta, other)


def test_unknown_norm():
    with pytest.raises(ValueError, match="norm: expected one of"):
        norm_ops("l3")
