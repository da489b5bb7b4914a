"""Loss-landscape slices, filter normalisation and Gaussian fits against naive references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import scipy.stats

from bnn_jax import landscape
from bnn_jax.tree import normal_like, ravel


def _params(seed, dtype=np.float64):
    """A params-like tree (NumPy draws: no PRNG compilation) with a Dense kernel, a Conv
    kernel, a bias and a scalar."""
    rng = np.random.default_rng(seed)
    draw = lambda *shape: jnp.asarray(rng.normal(size=shape).astype(dtype))
    return {
        "dense": {"kernel": draw(3, 4), "bias": draw(4)},
        "conv": {"kernel": draw(2, 2, 3, 4)},
        "log_temperature": draw(),
    }


def _quadratic(params, hessian):
    """``1/2 (w - w0)^T H (w - w0)`` in ``ravel`` order, with ``w0 = params``."""
    centre, _ = ravel(params)

    def loss(p):
        delta = ravel(p)[0] - centre
        return 0.5 * delta @ hessian @ delta

    return loss


def _spd(seed, n):
    m = np.random.default_rng(seed).normal(size=(n, n))
    return jnp.asarray(m @ m.T / n + 0.5 * np.eye(n))


# ----------------------------------------------------------------- random directions


def test_filter_normalisation_matches_param_filter_norms(x64):
    params = _params(0)
    key = jax.random.key(1, impl="rbg")  # any key implementation works; this one compiles fast
    direction = jax.jit(landscape.random_direction, static_argnames="filter_normalize")
    d = direction(key, params)
    raw = direction(key, params, filter_normalize=False)
    assert jax.tree.structure(d) == jax.tree.structure(params)
    np.testing.assert_array_equal(  # filter_normalize=False is the raw Gaussian draw
        ravel(raw)[0], ravel(jax.jit(normal_like)(key, params))[0]
    )
    for name in ("dense", "conv"):
        p, u, r = (tree[name]["kernel"] for tree in (params, d, raw))
        assert u.shape == p.shape and u.dtype == p.dtype
        p_filters, u_filters, r_filters = (
            np.asarray(t).reshape(-1, p.shape[-1]) for t in (p, u, r)
        )
        for k in range(p.shape[-1]):  # one filter per output feature, checked one by one
            norm = np.linalg.norm(p_filters[:, k])
            np.testing.assert_allclose(np.linalg.norm(u_filters[:, k]), norm, rtol=1e-12)
            # same direction as the raw draw: only the length of each filter changes
            expected = r_filters[:, k] * norm / np.linalg.norm(r_filters[:, k])
            np.testing.assert_allclose(u_filters[:, k], expected, rtol=1e-12)
    # 1-D and 0-D leaves (biases, scales, scalars) are not moved.
    for leaf, shape in ((d["dense"]["bias"], (4,)), (d["log_temperature"], ())):
        assert leaf.shape == shape
        np.testing.assert_array_equal(leaf, 0.0)


def test_random_directions_for_several_keys_by_vmap():
    params = {"kernel": jnp.asarray(np.random.default_rng(0).normal(size=(3, 4)), jnp.float32)}
    keys = jax.random.split(jax.random.key(1), 3)  # threefry: vmap gives the per-key draws
    stacked = jax.vmap(lambda k: landscape.random_direction(k, params))(keys)["kernel"]
    assert stacked.shape == (3, 3, 4) and stacked.dtype == jnp.float32
    one = landscape.random_direction(keys[1], params)["kernel"]
    np.testing.assert_allclose(stacked[1], one, rtol=1e-5)
    assert not np.allclose(stacked[0], stacked[1])


# ----------------------------------------------------------------- slices


def _naive_point(params, directions, coefficients):
    return jax.tree.map(
        lambda p, *ds: p + sum(c * d for c, d in zip(coefficients, ds, strict=True)),
        params,
        *directions,
    )


def _nonlinear_fn(p):
    h = jnp.tanh(jnp.ones(3) @ p["dense"]["kernel"] + p["dense"]["bias"])
    return jnp.sum(h**2) + jnp.sum(jnp.sin(p["conv"]["kernel"])) + p["log_temperature"] ** 2


@pytest.mark.parametrize(("chunk_size", "jit"), [(None, False), (4, True)])
def test_slices_equal_a_naive_loop(x64, chunk_size, jit):
    params, d1, d2 = _params(0), _params(1), _params(2)  # also moves the 1-D leaves
    alphas, betas = np.linspace(-1.0, 1.0, 5), np.linspace(-0.5, 2.0, 3)

    one_d = lambda p, d, a: landscape.slice_1d(_nonlinear_fn, p, d, a, chunk_size=chunk_size)
    two_d = lambda p, u, v, a, b: landscape.slice_2d(
        _nonlinear_fn, p, u, v, a, b, chunk_size=chunk_size
    )
    if jit:
        one_d, two_d = jax.jit(one_d), jax.jit(two_d)

    naive = jax.jit(lambda coefficients, *ds: _nonlinear_fn(_naive_point(params, ds, coefficients)))
    curve = one_d(params, d1, jnp.asarray(alphas))
    np.testing.assert_allclose(curve, [naive((a,), d1) for a in alphas], rtol=1e-12)

    surface = two_d(params, d1, d2, jnp.asarray(alphas), jnp.asarray(betas))
    assert surface.shape == (5, 3)
    for i, a in enumerate(alphas):
        for j, b in enumerate(betas):
            np.testing.assert_allclose(surface[i, j], naive((a, b), d1, d2), rtol=1e-12)


def test_slice_keeps_the_param_dtype(x64):
    params = {"w": jnp.ones((2, 2), jnp.float32)}
    dtypes = []

    def fn(p):
        dtypes.append(p["w"].dtype)
        return jnp.sum(p["w"])

    curve = landscape.slice_1d(fn, params, params, jnp.linspace(0.0, 1.0, 3))  # float64 steps
    assert {jnp.dtype(d) for d in dtypes} == {jnp.dtype(jnp.float32)}
    np.testing.assert_allclose(curve, [4.0, 6.0, 8.0])


# ----------------------------------------------------------------- Gaussians


def test_quadratic_loss_gives_gaussian_with_inverse_hessian_covariance(x64):
    """exp(-1/2 z^T A z) on a slice: fitted covariance A^-1, mean 0, amplitude 1, and A equals
    the plane precision D^T H D of the full Hessian."""
    params, d1, d2 = _params(0), _params(1), _params(2)
    loss = _quadratic(params, _spd(5, ravel(params)[0].shape[0]))
    hessian_mvp = jax.jit(lambda v: jax.grad(loss)(_shift(params, v)))  # H v: loss is quadratic
    plane = landscape.plane_precision(hessian_mvp, d1, d2)

    span = 4.0 / np.sqrt(np.min(np.linalg.eigvalsh(plane)))
    alphas, betas = jnp.linspace(-span, span, 15), jnp.linspace(-span, span, 11)
    surface = landscape.slice_2d(loss, params, d1, d2, alphas, betas)
    fit, fitted = landscape.fit_gaussian_2d(alphas, betas, jnp.exp(-surface))

    np.testing.assert_allclose(fit.covariance, np.linalg.inv(plane), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(fit.mean, 0.0, atol=1e-8)
    np.testing.assert_allclose(fit.amplitude, 1.0, rtol=1e-8)
    np.testing.assert_allclose(fitted, jnp.exp(-surface), atol=1e-10)


def _shift(params, v):
    return jax.tree.map(jnp.add, params, v)


def test_fit_recovers_an_off_centre_truncated_gaussian(x64):
    """The moment start is biased by the grid's edge; the least-squares refinement is not."""
    truth = landscape.Gaussian2D(
        jnp.asarray(0.7), jnp.array([0.8, -0.5]), jnp.array([[3.0, 1.2], [1.2, 2.0]])
    )
    alphas, betas = jnp.linspace(-3.0, 3.0, 15), jnp.linspace(-2.5, 2.0, 11)
    values = landscape.gaussian_on_grid(truth, alphas, betas)
    fit, _ = landscape.fit_gaussian_2d(alphas, betas, values)
    for got, want in zip(fit, truth, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9)


def test_fit_matches_scipy_least_squares_on_a_non_gaussian_surface(x64):
    alphas, betas = jnp.linspace(-2.0, 2.0, 15), jnp.linspace(-1.5, 2.5, 11)
    a, b = np.meshgrid(np.asarray(alphas), np.asarray(betas), indexing="ij")
    loss = 0.1 + 0.8 * a**2 + 0.3 * a * b + 0.5 * b**2 + 0.2 * a**4 + 0.3 * np.sin(2 * b)
    values = np.exp(-loss)

    def model(theta):
        c, m1, m2, s11, s12, s22 = theta
        inv = np.linalg.inv(np.array([[s11, s12], [s12, s22]]))
        za, zb = a - m1, b - m2
        return c * np.exp(-0.5 * (inv[0, 0] * za**2 + 2 * inv[0, 1] * za * zb + inv[1, 1] * zb**2))

    reference = scipy.optimize.least_squares(
        lambda t: (model(t) - values).ravel(),
        x0=[1.0, 0.0, 0.0, 1.0, 0.0, 1.0],
        xtol=1e-14,
        ftol=1e-14,
        gtol=1e-14,
    ).x
    fit, fitted = landscape.fit_gaussian_2d(alphas, betas, jnp.asarray(values))
    np.testing.assert_allclose(fit.amplitude, reference[0], rtol=1e-6)
    np.testing.assert_allclose(fit.mean, reference[1:3], atol=1e-6)
    covariance = np.array([[reference[3], reference[4]], [reference[4], reference[5]]])
    np.testing.assert_allclose(fit.covariance, covariance, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(fitted, model(reference), atol=1e-8)


def test_fit_is_jittable_and_float32_close():
    truth = landscape.Gaussian2D(
        jnp.asarray(1.0), jnp.array([0.2, 0.1]), jnp.array([[0.5, 0.1], [0.1, 0.3]])
    )
    grid = jnp.linspace(-2.0, 2.0, 13)
    values = landscape.gaussian_on_grid(truth, grid, grid)
    fit, fitted = jax.jit(landscape.fit_gaussian_2d)(grid, grid, values)
    assert fitted.dtype == jnp.float32
    np.testing.assert_allclose(fit.covariance, truth.covariance, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(fit.mean, truth.mean, atol=1e-4)


def test_gaussian_on_grid_equals_scipy_density(x64):
    gaussian = landscape.Gaussian2D(
        jnp.asarray(2.5), jnp.array([0.3, -0.2]), jnp.array([[1.5, -0.4], [-0.4, 0.7]])
    )
    alphas, betas = jnp.linspace(-2.0, 2.0, 4), jnp.linspace(-1.0, 1.0, 3)
    values = landscape.gaussian_on_grid(gaussian, alphas, betas)
    rv = scipy.stats.multivariate_normal(np.asarray(gaussian.mean), np.asarray(gaussian.covariance))
    peak = rv.pdf(np.asarray(gaussian.mean))
    for i, a in enumerate(alphas):
        for j, b in enumerate(betas):
            np.testing.assert_allclose(values[i, j], 2.5 * rv.pdf([a, b]) / peak, rtol=1e-12)


def test_plane_precision_of_a_known_dense_precision(x64):
    params, d1, d2 = _params(0), _params(1), _params(2)
    flat, unravel = ravel(params)
    precision = _spd(7, flat.shape[0])
    mvp = lambda v: unravel(precision @ ravel(v)[0])
    matrix = np.stack([ravel(d1)[0], ravel(d2)[0]], axis=1)
    expected = matrix.T @ np.asarray(precision) @ matrix
    np.testing.assert_allclose(landscape.plane_precision(mvp, d1, d2), expected, rtol=1e-12)
    np.testing.assert_allclose(
        jax.jit(landscape.plane_precision, static_argnums=0)(mvp, d1, d2), expected, rtol=1e-12
    )
    gaussian = landscape.plane_gaussian(mvp, d1, d2, amplitude=0.4)
    np.testing.assert_allclose(gaussian.covariance, np.linalg.inv(expected), rtol=1e-10)
    np.testing.assert_allclose(gaussian.mean, 0.0)
    np.testing.assert_allclose(gaussian.amplitude, 0.4)


# ----------------------------------------------------------------- bad inputs


def test_bad_inputs_raise():
    params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
    fn = lambda p: jnp.sum(p["w"])
    grid = jnp.linspace(-1.0, 1.0, 3)
    with pytest.raises(ValueError, match="params: expected a pytree with at least one"):
        landscape.random_direction(jax.random.key(0), {})
    with pytest.raises(ValueError, match="params: expected floating-point leaves"):
        landscape.random_direction(jax.random.key(0), {"w": jnp.ones(2, jnp.int32)})
    with pytest.raises(ValueError, match="direction: expected the tree structure"):
        landscape.slice_1d(fn, params, {"w": jnp.ones((2, 3))}, grid)
    with pytest.raises(ValueError, match="d2: expected leaf shapes"):
        landscape.slice_2d(
            fn, params, params, {"w": jnp.ones((3, 2)), "b": jnp.ones(3)}, grid, grid
        )
    with pytest.raises(ValueError, match="alphas: expected a non-empty 1-D"):
        landscape.slice_1d(fn, params, params, jnp.zeros((0,)))
    with pytest.raises(ValueError, match="betas: expected finite"):
        landscape.slice_2d(fn, params, params, params, grid, jnp.array([0.0, jnp.nan]))
    with pytest.raises(ValueError, match="chunk_size: expected an integer >= 1"):
        landscape.slice_1d(fn, params, params, grid, chunk_size=0)
    with pytest.raises(ValueError, match="fn: expected a scalar output"):
        landscape.slice_1d(lambda p: p["w"], params, params, grid)
    with pytest.raises(ValueError, match=r"values: expected shape \(3, 3\)"):
        landscape.fit_gaussian_2d(grid, grid, jnp.ones((3, 2)))
    with pytest.raises(ValueError, match="values: expected finite values >= 0, not all zero"):
        landscape.fit_gaussian_2d(grid, grid, jnp.zeros((3, 3)))
    with pytest.raises(ValueError, match="values: expected finite values >= 0"):
        landscape.fit_gaussian_2d(grid, grid, -jnp.ones((3, 3)))
    with pytest.raises(ValueError, match="num_steps: expected an integer >= 1"):
        landscape.fit_gaussian_2d(grid, grid, jnp.ones((3, 3)), num_steps=0)
    with pytest.raises(
        ValueError, match="precision_mvp: expected outputs with the tree structure of d1"
    ):
        landscape.plane_precision(lambda v: v["w"], params, params)
    with pytest.raises(ValueError, match="gaussian: expected mean of shape"):
        landscape.gaussian_on_grid(landscape.Gaussian2D(1.0, jnp.zeros(3), jnp.eye(3)), grid, grid)
