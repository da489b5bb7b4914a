"""Binary GP classification with the Laplace approximation (Rasmussen & Williams 2006, ch. 3).

Labels ``y in {0, 1}`` enter the likelihood as signs ``s = 2 y - 1``, ``p(y | f) = sigma(s f)``.

- :func:`find_mode`: Newton's method for the posterior mode ``f_hat`` of
  ``Psi(f) = log p(y | f) - f^T K^-1 f / 2`` (R&W Algorithm 3.1) in the stable form with
  ``B = I + W^1/2 K W^1/2``, ``W = -grad^2 log p(y | f)``, inside ``lax.while_loop``. It stops
  when the residual ``max |grad log p(y | f) - K^-1 f|`` (the gradient of ``Psi``) is at most
  ``tol``, or after ``max_iterations``; the result records ``iterations``, ``residual`` and
  ``converged`` and never raises, so it can be jitted and vmapped.
- :func:`log_marginal_likelihood`: the approximate evidence
  ``log q(y | X) = -a^T f_hat / 2 + log p(y | f_hat) - sum_i log L_ii`` (``f_hat = K a``,
  ``B = L L^T``), differentiable in ``K`` with R&W Algorithm 5.1 as a custom VJP, which carries the
  implicit dependence of ``f_hat`` on ``K``. NaN when Newton did not converge.
- :func:`fit`: the validating public wrapper; raises ``ValueError`` when Newton did not converge.

Example:
  >>> kernel, lik = kernels.arcsine_kernel(), likelihoods.probit()
  >>> posterior = fit(kernel, kernel.init(), x, y, likelihood=lik)
  >>> posterior.mode.log_marginal_likelihood
"""

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import cho_solve, solve_triangular

from bnn_jax import checks
from bnn_jax.gp.kernels import Kernel
from bnn_jax.gp.likelihoods import Likelihood

__all__ = [
    "GPPosterior",
    "LaplaceMode",
    "check_newton_settings",
    "default_tol",
    "find_mode",
    "fit",
    "log_marginal_likelihood",
    "validate_inputs",
    "validate_training_data",
]


class LaplaceMode(NamedTuple):
    """The Laplace approximation ``q(f | X, y) = N(f_hat, (K^-1 + W)^-1)`` at the mode.

    Attributes:
      f: the mode ``f_hat`` ``[n]``.
      grad_log_lik: ``grad log p(y | f_hat)`` ``[n]``, equal to ``K^-1 f_hat`` at the mode.
      sqrt_w: ``W^1/2`` at ``f_hat`` ``[n]``.
      chol: lower Cholesky factor ``L`` of ``B = I + W^1/2 K W^1/2`` ``[n, n]``.
      log_marginal_likelihood: ``log q(y | X)``; NaN unless ``converged``.
      iterations: Newton steps taken.
      residual: ``max |grad log p(y | f) - K^-1 f|`` at the last iterate.
      converged: ``residual <= tol``.
    """

    f: jax.Array
    grad_log_lik: jax.Array
    sqrt_w: jax.Array
    chol: jax.Array
    log_marginal_likelihood: jax.Array
    iterations: jax.Array
    residual: jax.Array
    converged: jax.Array


class GPPosterior(NamedTuple):
    """A fitted classifier: the kernel params, the training inputs and the Laplace mode."""

    params: Any
    x_train: jax.Array
    mode: LaplaceMode


def default_tol(dtype: Any) -> float:
    """``sqrt(eps)`` of ``dtype``: Newton converges quadratically, so stopping at this residual
    leaves the mode accurate to about machine precision."""
    return float(np.sqrt(np.finfo(dtype).eps))


def _log_lik_derivatives(likelihood: Likelihood, signs: jax.Array, f: jax.Array, order: int):
    """The first ``order`` derivatives of ``log p(y_i | f_i)`` in ``f_i``, elementwise."""
    derivative = lambda f_i, s_i: likelihood.log_sigmoid(s_i * f_i)
    out = []
    for _ in range(order):
        derivative = jax.grad(derivative)
        out.append(jax.vmap(derivative)(f, signs))
    return out


def _mode_quantities(kernel_matrix, signs, f, likelihood):
    grad, second = _log_lik_derivatives(likelihood, signs, f, 2)
    sqrt_w = jnp.sqrt(jnp.maximum(-second, 0.0))
    eye = jnp.eye(f.shape[0], dtype=kernel_matrix.dtype)
    chol = jnp.linalg.cholesky(eye + sqrt_w[:, None] * kernel_matrix * sqrt_w[None, :])
    return grad, -second, sqrt_w, chol


@functools.partial(jax.jit, static_argnums=(4,))  # one compiled loop for eager callers too
def _find_mode(kernel_matrix, signs, tol, max_iterations, likelihood) -> LaplaceMode:
    tol = default_tol(kernel_matrix.dtype) if tol is None else tol

    def newton_step(carry):
        f, _, _, iteration = carry
        grad, w, sqrt_w, chol = _mode_quantities(kernel_matrix, signs, f, likelihood)
        b = w * f + grad
        a = b - sqrt_w * cho_solve((chol, True), sqrt_w * (kernel_matrix @ b))
        f = kernel_matrix @ a
        (new_grad,) = _log_lik_derivatives(likelihood, signs, f, 1)
        return f, a, jnp.max(jnp.abs(new_grad - a)), iteration + 1

    def not_done(carry):
        _, _, residual, iteration = carry
        return (residual > tol) & (iteration < max_iterations)

    f0 = jnp.zeros(signs.shape, kernel_matrix.dtype)
    (grad0,) = _log_lik_derivatives(likelihood, signs, f0, 1)
    carry = (f0, f0, jnp.max(jnp.abs(grad0)), jnp.zeros((), jnp.int32))
    f, a, residual, iterations = jax.lax.while_loop(not_done, newton_step, carry)

    grad, _, sqrt_w, chol = _mode_quantities(kernel_matrix, signs, f, likelihood)
    converged = residual <= tol
    lml = (
        -0.5 * a @ f
        + jnp.sum(likelihood.log_sigmoid(signs * f))
        - jnp.sum(jnp.log(jnp.diagonal(chol)))
    )
    lml = jnp.where(converged, lml, jnp.nan)
    return LaplaceMode(f, grad, sqrt_w, chol, lml, iterations, residual, converged)


def check_newton_settings(tol: Any, max_iterations: Any) -> None:
    """Raise ``ValueError`` unless ``tol`` is ``None`` or finite and positive and
    ``max_iterations`` an integer ``>= 1`` (skipped for traced values)."""
    if not checks.is_traced(max_iterations):
        checks.positive_int("max_iterations", max_iterations)
    if tol is not None:
        checks.positive("tol", tol)


def _signs(y: jax.Array, dtype: Any) -> jax.Array:
    return 2.0 * jnp.asarray(y, dtype) - 1.0


def _check_kernel_and_labels(kernel_matrix: jax.Array, y: Any) -> None:
    shape = jnp.shape(y)
    if len(shape) != 1 or shape[0] < 1:
        raise ValueError(f"y: expected labels of shape [n] with n >= 1, got shape {shape}")
    n = shape[0]
    if jnp.shape(kernel_matrix) != (n, n):
        raise ValueError(
            f"kernel_matrix: expected shape ({n}, {n}), got {jnp.shape(kernel_matrix)}"
        )
    if not checks.is_traced(y):
        labels = np.asarray(y)
        if not np.all((labels == 0) | (labels == 1)):
            raise ValueError(f"y: expected binary labels in {{0, 1}}, got {np.unique(labels)}")


def find_mode(
    kernel_matrix: jax.Array,
    y: jax.Array,
    *,
    likelihood: Likelihood,
    tol: float | None = None,
    max_iterations: int = 100,
) -> LaplaceMode:
    """Posterior mode and Laplace approximation of binary GP classification (R&W Alg. 3.1).

    Newton steps ``f <- K a``, ``a = b - W^1/2 B^-1 W^1/2 K b``, ``b = W f + grad log p(y | f)``,
    from ``f = 0`` until ``max |grad log p(y | f) - a| <= tol``. Pure and jit-able; inspect
    ``converged`` (or use :func:`fit`, which raises).

    Args:
      kernel_matrix: ``K`` ``[n, n]`` of the training inputs.
      y: labels in ``{0, 1}`` ``[n]``.
      likelihood: :func:`~bnn_jax.gp.likelihoods.probit` or ``logistic()``.
      tol: residual tolerance; ``None`` means :func:`default_tol` of ``K``'s dtype.
      max_iterations: at most this many Newton steps.

    Returns:
      A :class:`LaplaceMode`.
    """
    _check_kernel_and_labels(kernel_matrix, y)
    check_newton_settings(tol, max_iterations)
    signs = _signs(y, kernel_matrix.dtype)
    return _find_mode(kernel_matrix, signs, tol, max_iterations, likelihood)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _log_marginal_likelihood(kernel_matrix, signs, tol, max_iterations, likelihood):
    return _find_mode(kernel_matrix, signs, tol, max_iterations, likelihood).log_marginal_likelihood


def _lml_fwd(kernel_matrix, signs, tol, max_iterations, likelihood):
    mode = _find_mode(kernel_matrix, signs, tol, max_iterations, likelihood)
    return mode.log_marginal_likelihood, (kernel_matrix, signs, mode)


def _lml_bwd(likelihood, residuals, cotangent):
    """R&W Algorithm 5.1 written as the gradient ``G`` with ``d log q = sum(G * dK)``:
    ``G = a a^T / 2 - R / 2 + (u g^T + g u^T) / 2``, ``R = W^1/2 B^-1 W^1/2``,
    ``u = (I - R K) s2``, ``g = a = grad log p``, and ``s2 = d log q / d f_hat
    = +diag((K^-1 + W)^-1) d^3 log p / 2`` (the sign follows from ``dW/df = -d^3 log p``; with
    ``d^3 log p`` the third derivative of the log-likelihood itself, as computed here)."""
    kernel_matrix, signs, mode = residuals
    g, sqrt_w, chol = mode.grad_log_lik, mode.sqrt_w, mode.chol
    third = _log_lik_derivatives(likelihood, signs, mode.f, 3)[2]
    chol_inv_sqrt_w = solve_triangular(chol, jnp.diag(sqrt_w), lower=True)
    r = chol_inv_sqrt_w.T @ chol_inv_sqrt_w
    c = solve_triangular(chol, sqrt_w[:, None] * kernel_matrix, lower=True)
    posterior_var = jnp.diagonal(kernel_matrix) - jnp.sum(c * c, axis=0)
    s2 = 0.5 * posterior_var * third
    u = s2 - r @ (kernel_matrix @ s2)
    grad_k = 0.5 * (jnp.outer(g, g) - r + jnp.outer(u, g) + jnp.outer(g, u))
    grad_k = jnp.where(mode.converged, grad_k, jnp.nan)
    return cotangent * grad_k, None, None, None


_log_marginal_likelihood.defvjp(_lml_fwd, _lml_bwd)


def log_marginal_likelihood(
    kernel_matrix: jax.Array,
    y: jax.Array,
    *,
    likelihood: Likelihood,
    tol: float | None = None,
    max_iterations: int = 100,
) -> jax.Array:
    """Laplace approximation ``log q(y | X)`` to the log evidence, differentiable in ``K``.

    ``log q = -a^T f_hat / 2 + log p(y | f_hat) - sum_i log L_ii`` (R&W eq. 3.32, Alg. 3.1). Its
    reverse-mode derivative is R&W Algorithm 5.1 (custom VJP), exact including the implicit
    dependence of the mode on ``K``; compose with ``kernel.matrix`` to differentiate in the
    kernel's log hyperparameters. NaN (and NaN gradients) when Newton did not converge.

    Args:
      kernel_matrix, y, likelihood, tol, max_iterations: as for :func:`find_mode`.

    Returns:
      The scalar ``log q(y | X)``.

    Example:
      >>> objective = lambda p: -log_marginal_likelihood(kernel.matrix(p, x, x), y, likelihood=lik)
      >>> value, grads = jax.value_and_grad(objective)(kernel.init())
    """
    _check_kernel_and_labels(kernel_matrix, y)
    check_newton_settings(tol, max_iterations)
    signs = _signs(y, kernel_matrix.dtype)
    return _log_marginal_likelihood(kernel_matrix, signs, tol, max_iterations, likelihood)


def validate_inputs(name: str, x: Any, *, num_features: int | None = None) -> None:
    """Check inputs ``[n, d]`` (with ``num_features`` columns) and, when concrete, finite."""
    shape = jnp.shape(x)
    if len(shape) != 2 or shape[0] < 1:
        raise ValueError(f"{name}: expected inputs of shape [n, d] with n >= 1, got {shape}")
    if num_features is not None and shape[1] != num_features:
        raise ValueError(f"{name}: expected {num_features} features, got shape {shape}")
    if not checks.is_traced(x) and not np.all(np.isfinite(np.asarray(x))):
        raise ValueError(f"{name}: expected finite values, got NaN or inf")


def validate_training_data(
    kernel: Kernel, params: Any, x: Any, y: Any, *, num_classes: int = 2
) -> None:
    """Check ``params`` (structure of ``kernel.init()``, finite), ``x [n, d]`` finite and
    ``y [n]`` labels in ``{0, ..., num_classes - 1}``; raise ``ValueError`` naming the argument."""
    if not isinstance(kernel, Kernel):
        raise ValueError(f"kernel: expected a gp.Kernel (e.g. gp.rbf_kernel()), got {kernel!r}")
    expected = jax.tree.structure(kernel.init())
    if jax.tree.structure(params) != expected:
        raise ValueError(f"params: expected the structure of kernel.init(), {expected}")
    leaves = [np.asarray(leaf) for leaf in jax.tree.leaves(params)]
    if not all(np.all(np.isfinite(leaf)) for leaf in leaves):
        raise ValueError("params: expected finite log hyperparameters, got NaN or inf")
    validate_inputs("x", x)
    labels = np.asarray(y)
    if labels.shape != (np.shape(x)[0],):
        raise ValueError(f"y: expected labels of shape ({np.shape(x)[0]},), got {labels.shape}")
    if not np.all(np.isin(labels, np.arange(num_classes))):
        expected_labels = (
            "binary labels in {0, 1}"
            if num_classes == 2
            else (f"labels in {{0, ..., {num_classes - 1}}}")
        )
        raise ValueError(f"y: expected {expected_labels}, got {np.unique(labels)}")


@functools.partial(jax.jit, static_argnums=(0, 1))
def _fit_mode(matrix_fn, likelihood, params, x, y, tol, max_iterations):
    kernel_matrix = matrix_fn(params, x, x)
    mode = find_mode(
        kernel_matrix, y, likelihood=likelihood, tol=tol, max_iterations=max_iterations
    )
    return jnp.all(jnp.isfinite(kernel_matrix)), mode


def fit(
    kernel: Kernel,
    params: Any,
    x: jax.Array,
    y: jax.Array,
    *,
    likelihood: Likelihood,
    tol: float | None = None,
    max_iterations: int = 100,
) -> GPPosterior:
    """Fit the Laplace posterior at fixed hyperparameters; raise if Newton does not converge.

    Args:
      kernel: a :class:`~bnn_jax.gp.kernels.Kernel`.
      params: its log hyperparameters (``kernel.init()`` or optimised ones).
      x: training inputs ``[n, d]``.
      y: labels in ``{0, 1}`` ``[n]``.
      likelihood, tol, max_iterations: as for :func:`find_mode`.

    Returns:
      A :class:`GPPosterior` for :func:`bnn_jax.gp.predict.latent_predictive`.

    Raises:
      ValueError: bad inputs, a non-finite kernel matrix, or Newton not converged (the message
        gives the iterations and the residual).
    """
    validate_training_data(kernel, params, x, y)
    check_newton_settings(tol, max_iterations)
    x = jnp.asarray(x)
    finite, mode = _fit_mode(
        kernel.matrix, likelihood, params, x, jnp.asarray(y), tol, max_iterations
    )
    if not bool(finite):
        raise ValueError(
            "params: the kernel matrix is not finite; expected smaller hyperparameters"
        )
    if not bool(mode.converged):
        tol = default_tol(mode.f.dtype) if tol is None else tol
        raise ValueError(
            f"max_iterations: Newton's method for the Laplace mode did not converge in "
            f"{int(mode.iterations)} iterations (max_iterations={max_iterations}): residual "
            f"max|grad log p(y|f) - K^-1 f| = {float(mode.residual):.3g}, expected <= tol={tol:.3g}"
        )
    return GPPosterior(params, x, mode)
