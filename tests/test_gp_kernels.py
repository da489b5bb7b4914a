"""Kernels against direct numerical evaluations of the expectations that define them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

from bnn_jax import gp


def _points(seed, n=7, d=2):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * 1.5
    return np.concatenate([x, x[:1], np.zeros((1, d))])  # a duplicate row and the origin


KERNELS = {
    "arcsine": lambda: gp.arcsine_kernel(variance=2.0, weight_variance=3.0, bias_variance=0.5),
    "arcsine_ard": lambda: gp.arcsine_kernel(weight_variance=[0.5, 4.0]),
    "rbf": lambda: gp.rbf_kernel(variance=1.5, lengthscale=0.7),
    "rbf_ard": lambda: gp.rbf_kernel(lengthscale=[0.5, 2.0]),
    "arccosine": lambda: gp.arccosine_kernel(variance=0.7, weight_variance=2.0, bias_variance=0.3),
    "sum": lambda: gp.sum_kernel(gp.arcsine_kernel(), gp.rbf_kernel(), gp.arccosine_kernel()),
}


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_kernel_matrix_is_symmetric_psd_and_matches_diag(x64, name):
    kernel = KERNELS[name]()
    x, x2 = jnp.asarray(_points(0)), jnp.asarray(_points(1, n=3))

    @jax.jit
    def evaluate(params):
        joint = jnp.concatenate([x, x2])
        return (
            kernel.matrix(params, x, x),
            kernel.diag(params, x),
            kernel.matrix(params, x, x2),
            kernel.matrix(params, joint, joint),
        )

    gram, diag, cross, joint = (np.asarray(a) for a in evaluate(kernel.init()))
    np.testing.assert_allclose(gram, gram.T, rtol=0, atol=1e-12)
    eigenvalues = np.linalg.eigvalsh(gram)
    assert eigenvalues.min() >= -1e-10 * eigenvalues.max()
    np.testing.assert_allclose(diag, np.diag(gram), rtol=1e-12)
    np.testing.assert_allclose(cross, joint[: len(x), len(x) :], rtol=1e-12)


HERMITE_NODES, HERMITE_WEIGHTS = np.polynomial.hermite_e.hermegauss(200)


def _gauss_hermite_2d(cov, fn):
    """E[fn(u) fn(v)] for (u, v) ~ N(0, cov) by a product Gauss-Hermite rule."""
    nodes, weights = HERMITE_NODES, HERMITE_WEIGHTS / np.sqrt(2 * np.pi)
    a, c, b = cov[0, 0], cov[0, 1], cov[1, 1]
    u = np.sqrt(a) * nodes[:, None]
    v = c / np.sqrt(a) * nodes[:, None] + np.sqrt(max(b - c**2 / a, 0.0)) * nodes[None, :]
    return np.sum(weights[:, None] * weights[None, :] * fn(u) * fn(v))


@pytest.mark.parametrize("weight_variance", [2.0, np.array([0.3, 3.0])])
def test_arcsine_kernel_is_the_erf_network_covariance(x64, weight_variance):
    """GPy's MLP kernel = s2 E[erf(w.x + b) erf(w.y + b)], w ~ N(0, sw2/2), b ~ N(0, sb2/2)."""
    variance, bias_variance = 1.7, 0.6
    kernel = gp.arcsine_kernel(
        variance=variance, weight_variance=weight_variance, bias_variance=bias_variance
    )
    x = np.random.default_rng(2).uniform(-1.2, 1.2, size=(4, 2))  # keeps the rule accurate
    x = np.concatenate([x, x[:1]])
    gram = np.asarray(kernel.matrix(kernel.init(), jnp.asarray(x), jnp.asarray(x)))
    cov_w = np.diag(np.broadcast_to(weight_variance, (2,))) / 2
    for i in range(len(x)):
        for j in range(len(x)):
            pair = np.stack([x[i], x[j]])
            cov = pair @ cov_w @ pair.T + bias_variance / 2
            expected = variance * _gauss_hermite_2d(cov, erf)
            np.testing.assert_allclose(gram[i, j], expected, rtol=1e-8, atol=1e-12)


def test_arccosine_kernel_is_twice_the_relu_feature_covariance(x64):
    """k = 2 s2 E[relu(w.x + b) relu(w.y + b)], w ~ N(0, sw2 I), b ~ N(0, sb2), by Monte Carlo."""
    variance, weight_variance, bias_variance = 0.8, 1.5, 0.4
    kernel = gp.arccosine_kernel(
        variance=variance, weight_variance=weight_variance, bias_variance=bias_variance
    )
    x = _points(3, n=4)
    gram = np.asarray(kernel.matrix(kernel.init(), jnp.asarray(x), jnp.asarray(x)))
    rng = np.random.default_rng(0)
    num_features = 100_000
    w = rng.normal(size=(2, num_features)) * np.sqrt(weight_variance)
    b = rng.normal(size=num_features) * np.sqrt(bias_variance)
    features = np.maximum(x @ w + b, 0.0)
    products = 2 * variance * features[:, None, :] * features[None, :, :]
    estimate = products.mean(-1)
    std_error = products.std(-1) / np.sqrt(num_features)
    assert np.all(np.abs(gram - estimate) <= 5 * std_error + 1e-12)
    # and the closed form on the diagonal: k(x, x) = s2 (sw2 |x|^2 + sb2)
    np.testing.assert_allclose(
        np.diag(gram), variance * (weight_variance * np.sum(x**2, 1) + bias_variance)
    )


def test_kernel_gradients_are_finite_and_match_finite_differences(x64):
    """Every base kernel (ARD where it has it) through one sum, so each leaf is checked; includes
    the arc-cosine diagonal, where d arccos / d cos is infinite but k is smooth."""
    kernel = gp.sum_kernel(
        gp.arcsine_kernel(variance=2.0, weight_variance=[0.5, 3.0], bias_variance=0.5),
        gp.rbf_kernel(variance=1.5, lengthscale=[0.7, 1.3]),
        gp.arccosine_kernel(variance=0.7, weight_variance=2.0, bias_variance=0.3),
    )
    x = jnp.asarray(_points(4))
    flat, unravel = jax.flatten_util.ravel_pytree(kernel.init())
    weights = jnp.asarray(np.random.default_rng(0).normal(size=(len(x), len(x))))
    total = lambda v: jnp.sum(weights * kernel.matrix(unravel(v), x, x))
    value_and_grad = jax.jit(jax.value_and_grad(total))
    grad = value_and_grad(flat)[1]
    assert np.all(np.isfinite(grad))
    eps = 1e-6
    fd = [
        (value_and_grad(flat + eps * e)[0] - value_and_grad(flat - eps * e)[0]) / (2 * eps)
        for e in np.eye(flat.size)
    ]
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-7)


def test_init_returns_log_hyperparameters():
    params = gp.arcsine_kernel(variance=163.0, weight_variance=60.0, bias_variance=3.8).init()
    np.testing.assert_allclose(np.exp(np.asarray(params)), [163.0, 60.0, 3.8], rtol=1e-6)
    assert isinstance(params, gp.ArcSineParams)
    assert isinstance(gp.sum_kernel(gp.rbf_kernel(), gp.rbf_kernel()).init()[1], gp.RBFParams)


@pytest.mark.parametrize(
    ("factory", "kwargs", "match"),
    [
        (gp.arcsine_kernel, {"variance": -1.0}, "variance: expected a finite positive"),
        (gp.arcsine_kernel, {"weight_variance": [1.0, 0.0]}, "weight_variance: expected"),
        (gp.arccosine_kernel, {"bias_variance": np.nan}, "bias_variance: expected"),
        (gp.rbf_kernel, {"lengthscale": np.inf}, "lengthscale: expected"),
        (gp.rbf_kernel, {"lengthscale": np.ones((2, 2))}, "lengthscale: expected"),
    ],
)
def test_bad_hyperparameters_raise(factory, kwargs, match):
    with pytest.raises(ValueError, match=match):
        factory(**kwargs)


def test_sum_kernel_needs_two_kernels():
    with pytest.raises(ValueError, match="kernels: expected at least two Kernel"):
        gp.sum_kernel(gp.rbf_kernel())
    with pytest.raises(ValueError, match="kernels: expected at least two Kernel"):
        gp.sum_kernel(gp.rbf_kernel(), "rbf")
