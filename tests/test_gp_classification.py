"""Laplace GP classification against scikit-learn and finite differences; convergence and input
checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import expit, log_ndtr
from sklearn.gaussian_process import GaussianProcessClassifier
from sklearn.gaussian_process.kernels import RBF, ConstantKernel

from bnn_jax import data, gp, uncertainty


@pytest.fixture(scope="module")
def toy2d():
    ds = data.load("toy2d", seed=0)
    return (
        np.asarray(ds.x_train, np.float64),
        np.asarray(ds.y_train),
        np.asarray(ds.x_test[:40], np.float64),
    )


def test_logistic_rbf_matches_sklearn(x64, toy2d):
    """Same Laplace method as sklearn's GaussianProcessClassifier (logistic likelihood): mode,
    log marginal likelihood and its gradient in (log s2, log l), latent moments, probabilities."""
    x, y, x_test = toy2d
    variance, lengthscale = 2.5, 0.8
    sk_kernel = ConstantKernel(variance, (1e-5, 1e5)) * RBF(lengthscale, (1e-5, 1e5))
    sk = GaussianProcessClassifier(sk_kernel, optimizer=None).fit(x, y).base_estimator_
    kernel, lik = gp.rbf_kernel(variance=variance, lengthscale=lengthscale), gp.logistic()
    posterior = gp.fit(kernel, kernel.init(), x, y, likelihood=lik)

    np.testing.assert_allclose(posterior.mode.f, sk.f_cached, atol=1e-8)
    np.testing.assert_allclose(
        posterior.mode.log_marginal_likelihood, sk.log_marginal_likelihood_value_, rtol=1e-10
    )
    sk_lml, sk_grad = sk.log_marginal_likelihood(sk.kernel_.theta, eval_gradient=True)
    objective = lambda p: -gp.negative_log_marginal_likelihood(kernel, p, x, y, likelihood=lik)
    lml, grad = jax.jit(jax.value_and_grad(objective))(kernel.init())
    np.testing.assert_allclose(lml, sk_lml, rtol=1e-10)
    np.testing.assert_allclose([grad.log_variance, grad.log_lengthscale], sk_grad, rtol=1e-6)

    mean, var = gp.latent_predictive(kernel, posterior, x_test)
    sk_mean, sk_var = sk.latent_mean_and_variance(x_test)
    np.testing.assert_allclose(mean, sk_mean, atol=1e-8)
    np.testing.assert_allclose(var, sk_var, atol=1e-8)

    # sklearn's predict_proba is Williams & Barber's 5-erf approximation of E[sigmoid(f)]:
    # check it and ours against Gauss-Hermite quadrature of the same integral.
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    f = np.asarray(mean)[:, None] + np.sqrt(np.asarray(var))[:, None] * nodes
    exact = (weights / np.sqrt(2 * np.pi) / (1 + np.exp(-f))).sum(1)
    np.testing.assert_allclose(sk.predict_proba(x_test)[:, 1], exact, atol=5e-4)
    mackay = np.exp(gp.predictive_log_probs(lik, mean, var))
    np.testing.assert_allclose(mackay[:, 1], exact, atol=1e-2)  # probit approximation
    np.testing.assert_allclose(mackay.sum(1), 1.0, rtol=1e-12)
    samples = gp.latent_sample_log_probs(lik, mean, var, jax.random.key(0), num_samples=20_000)
    monte_carlo = np.exp(uncertainty.mean_log_probs(samples))[:, 1]
    np.testing.assert_allclose(monte_carlo, exact, atol=4 * 0.5 / np.sqrt(20_000))


def _dense_laplace(kernel_matrix, y, likelihood, num_steps=40):
    """Textbook Newton on Psi(f) in NumPy with dense inverses and hand-written derivatives of
    log p(y|f), and log q via slogdet (needs a well-conditioned K)."""
    s = 2.0 * y - 1.0
    if likelihood == "probit":
        log_lik = lambda f: log_ndtr(s * f)
        ratio = lambda f: np.exp(-0.5 * f**2 - 0.5 * np.log(2 * np.pi) - log_ndtr(s * f))
        grad = lambda f: s * ratio(f)
        w_fn = lambda f: ratio(f) ** 2 + s * f * ratio(f)
    else:
        log_lik = lambda f: -np.logaddexp(0.0, -s * f)
        grad = lambda f: (s + 1) / 2 - expit(f)
        w_fn = lambda f: expit(f) * (1 - expit(f))
    k_inv = np.linalg.inv(kernel_matrix)
    f = np.zeros(len(y))
    for _ in range(num_steps):
        w = w_fn(f)
        f = np.linalg.solve(k_inv + np.diag(w), w * f + grad(f))
    _, logdet = np.linalg.slogdet(np.eye(len(y)) + kernel_matrix * w_fn(f)[None, :])
    return f, -0.5 * f @ k_inv @ f + np.sum(log_lik(f)) - 0.5 * logdet


@pytest.mark.parametrize(("likelihood", "jit"), [("probit", True), ("logistic", False)])
def test_mode_and_evidence_match_dense_newton(x64, toy2d, likelihood, jit):
    x, y, _ = toy2d
    kernel, lik = gp.arcsine_kernel(variance=3.0), getattr(gp, likelihood)()
    kernel_matrix = np.asarray(kernel.matrix(kernel.init(), x, x)) + 0.1 * np.eye(len(y))
    find_mode = gp.find_mode
    if jit:
        find_mode = jax.jit(find_mode, static_argnames=("likelihood", "tol", "max_iterations"))
    mode = find_mode(jnp.asarray(kernel_matrix), y, likelihood=lik)
    f, lml = _dense_laplace(kernel_matrix, y, likelihood)
    assert bool(mode.converged) and 2 <= int(mode.iterations) < 20
    np.testing.assert_allclose(mode.f, f, atol=1e-8)
    np.testing.assert_allclose(mode.log_marginal_likelihood, lml, rtol=1e-8)
    np.testing.assert_allclose(mode.grad_log_lik, np.linalg.solve(kernel_matrix, f), atol=1e-7)


@pytest.mark.parametrize(
    ("kernel", "likelihood"),
    [
        (gp.arcsine_kernel(variance=3.0, weight_variance=[2.0, 0.5]), gp.probit()),
        (gp.sum_kernel(gp.arccosine_kernel(), gp.rbf_kernel(lengthscale=0.5)), gp.logistic()),
    ],
)
def test_evidence_gradient_matches_finite_differences(x64, toy2d, kernel, likelihood):
    """Algorithm 5.1's gradient, including the implicit dependence of the mode."""
    x, y, _ = toy2d
    flat, unravel = jax.flatten_util.ravel_pytree(kernel.init())
    objective = lambda v: gp.negative_log_marginal_likelihood(
        kernel, unravel(v), x, y, likelihood=likelihood
    )
    value_and_grad = jax.jit(jax.value_and_grad(objective))
    grad = value_and_grad(flat)[1]
    eps = 1e-5
    fd = [
        (value_and_grad(flat + eps * e)[0] - value_and_grad(flat - eps * e)[0]) / (2 * eps)
        for e in np.eye(len(flat))
    ]
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-6)


def test_non_convergence_is_reported_not_returned(x64, toy2d):
    x, y, _ = toy2d
    kernel, lik = gp.arcsine_kernel(variance=50.0), gp.probit()
    with pytest.raises(ValueError, match=r"max_iterations: .* did not converge in 2 iterations"):
        gp.fit(kernel, kernel.init(), x, y, likelihood=lik, max_iterations=2)

    @jax.jit
    def two_steps(kernel_matrix):
        mode = gp.find_mode(kernel_matrix, y, likelihood=lik, max_iterations=2)
        lml_fn = lambda k: gp.log_marginal_likelihood(k, y, likelihood=lik, max_iterations=2)
        return mode, jax.grad(lml_fn)(kernel_matrix)

    mode, grad = two_steps(kernel.matrix(kernel.init(), x, x))
    assert not bool(mode.converged) and int(mode.iterations) == 2 and float(mode.residual) > 1e-6
    assert np.isnan(mode.log_marginal_likelihood) and np.all(np.isnan(grad))


def test_fit_float32_converges_with_default_tolerance(toy2d):
    x, y, _ = toy2d
    kernel = gp.arcsine_kernel(variance=163.0, weight_variance=60.0, bias_variance=3.8)
    posterior = gp.fit(kernel, kernel.init(), x.astype(np.float32), y, likelihood=gp.probit())
    assert posterior.mode.f.dtype == jnp.float32 and bool(posterior.mode.converged)


def _bad_fit_inputs(toy2d):
    x, y, _ = toy2d
    kernel = gp.rbf_kernel()
    params = kernel.init()
    y3 = y.copy()
    y3[0] = 2
    nan_x = x.copy()
    nan_x[3, 1] = np.nan
    return [
        ((kernel, params, x, y3), "y: expected binary labels"),
        ((kernel, params, x, y[:-1]), r"y: expected labels of shape \(100,\)"),
        ((kernel, params, x[:, 0], y), r"x: expected inputs of shape \[n, d\]"),
        ((kernel, params, nan_x, y), "x: expected finite values"),
        (
            (kernel, params._replace(log_variance=jnp.array(np.inf)), x, y),
            "params: expected finite",
        ),
        ((kernel, gp.arcsine_kernel().init(), x, y), "params: expected the structure"),
        (
            (kernel, params._replace(log_variance=jnp.array(800.0)), x, y),
            "params: the kernel matrix",
        ),
    ]


def test_fit_rejects_bad_inputs(toy2d):
    for args, match in _bad_fit_inputs(toy2d):
        with pytest.raises(ValueError, match=match):
            gp.fit(*args, likelihood=gp.probit())


def test_mode_functions_reject_bad_shapes_and_settings():
    kernel_matrix = jnp.eye(3)
    with pytest.raises(ValueError, match=r"kernel_matrix: expected shape \(4, 4\)"):
        gp.find_mode(kernel_matrix, jnp.ones(4), likelihood=gp.probit())
    with pytest.raises(ValueError, match=r"y: expected labels of shape \[n\]"):
        gp.log_marginal_likelihood(kernel_matrix, jnp.ones((3, 1)), likelihood=gp.probit())
    with pytest.raises(ValueError, match="y: expected binary labels in"):
        gp.find_mode(kernel_matrix, jnp.array([0, 2, 1]), likelihood=gp.probit())
    with pytest.raises(ValueError, match=r"tol: expected a finite value > 0, got -1\.0"):
        gp.find_mode(kernel_matrix, jnp.ones(3), likelihood=gp.probit(), tol=-1.0)
    with pytest.raises(ValueError, match=r"max_iterations: expected an integer >= 1, got 2\.5"):
        gp.log_marginal_likelihood(
            kernel_matrix, jnp.ones(3), likelihood=gp.probit(), max_iterations=2.5
        )
