"""Multi-class GP classification by one-vs-rest: one binary Laplace GP per class, vmapped.

Class ``c`` is fitted on the labels ``1[y == c]`` with shared kernel hyperparameters; the
predictive normalises the binary probabilities, ``p(y = c | x) = p_c / sum_k p_k`` with
``p_c = E[sigma(f_c(x))]`` (as scikit-learn's one-vs-rest ``GaussianProcessClassifier`` does).

Example:
  >>> posterior = fit_one_vs_rest(kernel, params, x, y, num_classes=3, likelihood=probit())
  >>> mean, var = latent_predictive(kernel, posterior, x_test)        # [3, m] each
  >>> log_probs = predictive_log_probs(probit(), mean, var)            # [m, 3]
"""

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bnn_jax import checks
from bnn_jax.gp import predict
from bnn_jax.gp.classification import (
    GPPosterior,
    LaplaceMode,
    check_newton_settings,
    default_tol,
    find_mode,
    validate_inputs,
    validate_training_data,
)
from bnn_jax.gp.kernels import Kernel
from bnn_jax.gp.likelihoods import Likelihood

__all__ = [
    "OneVsRestPosterior",
    "fit_one_vs_rest",
    "latent_predictive",
    "predictive_log_probs",
    "sample_log_probs",
]


class OneVsRestPosterior(NamedTuple):
    """Shared kernel params, training inputs and one :class:`LaplaceMode` per class (every leaf
    of ``modes`` has a leading class axis)."""

    params: Any
    x_train: jax.Array
    modes: LaplaceMode


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _fit_modes(matrix_fn, likelihood, num_classes, params, x, y, tol, max_iterations):
    kernel_matrix = matrix_fn(params, x, x)
    labels = (y[None, :] == jnp.arange(num_classes)[:, None]).astype(jnp.int32)
    fit_one = lambda y_c: find_mode(
        kernel_matrix, y_c, likelihood=likelihood, tol=tol, max_iterations=max_iterations
    )
    return jax.vmap(fit_one)(labels)


def fit_one_vs_rest(
    kernel: Kernel,
    params: Any,
    x: jax.Array,
    y: jax.Array,
    *,
    num_classes: int,
    likelihood: Likelihood,
    tol: float | None = None,
    max_iterations: int = 100,
) -> OneVsRestPosterior:
    """Fit ``num_classes`` binary Laplace GPs (class ``c`` vs the rest) at shared params.

    Args:
      kernel, params, x, likelihood, tol, max_iterations: as for
        :func:`~bnn_jax.gp.classification.fit`.
      y: integer labels in ``[0, num_classes)`` ``[n]``.
      num_classes: number of classes (>= 2).

    Raises:
      ValueError: bad inputs, or Newton not converged for some class (named in the message).
    """
    num_classes = checks.positive_int("num_classes", num_classes, minimum=2)
    validate_training_data(kernel, params, x, y, num_classes=num_classes)
    check_newton_settings(tol, max_iterations)
    x = jnp.asarray(x)
    modes = _fit_modes(
        kernel.matrix, likelihood, num_classes, params, x, jnp.asarray(y), tol, max_iterations
    )
    failed = np.flatnonzero(~np.asarray(modes.converged))
    if failed.size:
        tol = default_tol(modes.f.dtype) if tol is None else tol
        raise ValueError(
            f"max_iterations: Newton's method did not converge for classes {failed.tolist()} in "
            f"{max_iterations} iterations: residuals {np.asarray(modes.residual)[failed]}, "
            f"expected <= tol={tol:.3g}"
        )
    return OneVsRestPosterior(params, x, modes)


def latent_predictive(
    kernel: Kernel, posterior: OneVsRestPosterior, x: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Latent means and variances ``[num_classes, m]`` of every one-vs-rest classifier."""
    validate_inputs("x", x, num_features=posterior.x_train.shape[1])

    def one(mode):
        return predict.latent_predictive(
            kernel, GPPosterior(posterior.params, posterior.x_train, mode), x
        )

    return jax.lax.map(one, posterior.modes)


def predictive_log_probs(likelihood: Likelihood, mean: jax.Array, var: jax.Array) -> jax.Array:
    """``log p(y = c | x)`` ``[m, num_classes]``: normalised binary predictives.

    Args:
      likelihood: the binary likelihood of the fit.
      mean, var: ``[num_classes, m]`` from :func:`latent_predictive`.
    """
    predict.check_moments(mean, var)
    mean, var = jnp.asarray(mean), jnp.asarray(var)
    log_p = likelihood.log_predictive(mean, var).T
    return log_p - jax.nn.logsumexp(log_p, axis=-1, keepdims=True)


def sample_log_probs(
    likelihood: Likelihood, mean: jax.Array, var: jax.Array, key: jax.Array, *, num_samples: int
) -> jax.Array:
    """Normalised ``log sigma(f_c) - log sum_k sigma(f_k)`` ``[num_samples, m, num_classes]`` for
    independent latent draws ``f_c ~ N(mean_c, var_c)``; feed to ``uncertainty.bald`` etc."""
    samples = predict.latent_sample_log_probs(likelihood, mean, var, key, num_samples=num_samples)
    log_p = jnp.swapaxes(samples[..., 1], -1, -2)  # [num_samples, m, num_classes]
    return log_p - jax.nn.logsumexp(log_p, axis=-1, keepdims=True)
