"""Type-II maximum likelihood: fit the kernel's log hyperparameters to the Laplace evidence.

The objective is ``-log q(y | X, theta)`` (GPy's "Objective"; see
:func:`~bnn_jax.gp.classification.log_marginal_likelihood`), minimised over the log
hyperparameters ``theta`` with ``optax.lbfgs`` (zoom line search) in a ``lax.while_loop``.
Its gradient is R&W Algorithm 5.1 composed with autodiff of the kernel matrix. Where Newton
fails for a trial ``theta`` the objective is NaN, which the line search treats as a failed step.

Example:
  >>> result = optimize_hyperparameters(kernel, kernel.init(), x, y, likelihood=probit())
  >>> result.initial_objective, result.final_objective    # the notebook: 18.9 -> 8.06
  >>> posterior = fit(kernel, result.params, x, y, likelihood=probit())
"""

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
import optax.tree_utils as otu

from bnn_jax import checks
from bnn_jax.gp.classification import (
    check_newton_settings,
    log_marginal_likelihood,
    validate_training_data,
)
from bnn_jax.gp.kernels import Kernel
from bnn_jax.gp.likelihoods import Likelihood

__all__ = ["HyperparameterFit", "negative_log_marginal_likelihood", "optimize_hyperparameters"]


class HyperparameterFit(NamedTuple):
    """Result of :func:`optimize_hyperparameters`.

    Attributes:
      params: the optimised log hyperparameters.
      initial_objective: ``-log q(y | X)`` at the initial params.
      final_objective: ``-log q(y | X)`` at ``params``.
      num_steps: L-BFGS steps taken.
      grad_norm: L2 norm of the objective's gradient at ``params``.
    """

    params: Any
    initial_objective: jax.Array
    final_objective: jax.Array
    num_steps: jax.Array
    grad_norm: jax.Array


def negative_log_marginal_likelihood(
    kernel: Kernel,
    params: Any,
    x: jax.Array,
    y: jax.Array,
    *,
    likelihood: Likelihood,
    tol: float | None = None,
    max_iterations: int = 100,
) -> jax.Array:
    """``-log q(y | X, params)`` of the Laplace approximation; pure and differentiable in params.

    Args:
      kernel: a :class:`~bnn_jax.gp.kernels.Kernel`; ``params`` its log hyperparameters.
      x: training inputs ``[n, d]``; y: labels in ``{0, 1}`` ``[n]``.
      likelihood, tol, max_iterations: as for :func:`~bnn_jax.gp.classification.find_mode`.
    """
    kernel_matrix = kernel.matrix(params, x, x)
    return -log_marginal_likelihood(
        kernel_matrix, y, likelihood=likelihood, tol=tol, max_iterations=max_iterations
    )


def optimize_hyperparameters(
    kernel: Kernel,
    params: Any,
    x: jax.Array,
    y: jax.Array,
    *,
    likelihood: Likelihood,
    max_steps: int = 100,
    gtol: float = 1e-5,
    memory_size: int = 10,
    tol: float | None = None,
    max_iterations: int = 100,
) -> HyperparameterFit:
    """Minimise ``-log q(y | X, theta)`` over the log hyperparameters with L-BFGS.

    Stops when the gradient norm is below ``gtol`` or after ``max_steps`` steps.

    Args:
      kernel: a :class:`~bnn_jax.gp.kernels.Kernel`.
      params: initial log hyperparameters (e.g. ``kernel.init()``).
      x: training inputs ``[n, d]``.
      y: labels in ``{0, 1}`` ``[n]``.
      likelihood: the binary likelihood.
      max_steps: at most this many L-BFGS steps (>= 1).
      gtol: gradient-norm tolerance (> 0).
      memory_size: L-BFGS history length (>= 1).
      tol, max_iterations: Newton settings of the inner mode search.

    Returns:
      A :class:`HyperparameterFit`.

    Raises:
      ValueError: bad inputs or settings, or a non-finite objective at the initial or final
        params (Newton did not converge there: see :func:`~bnn_jax.gp.classification.fit`).
    """
    validate_training_data(kernel, params, x, y)
    check_newton_settings(tol, max_iterations)
    max_steps = checks.positive_int("max_steps", max_steps)
    memory_size = checks.positive_int("memory_size", memory_size)
    checks.positive("gtol", gtol)
    result = _run_lbfgs(
        kernel.matrix,
        likelihood,
        memory_size,
        params,
        jnp.asarray(x),
        jnp.asarray(y),
        tol,
        max_iterations,
        max_steps,
        gtol,
    )
    for name, value in (("initial", result.initial_objective), ("final", result.final_objective)):
        if not bool(jnp.isfinite(value)):
            raise ValueError(
                f"params: the {name} objective -log q(y|X) is {float(value)}: Newton's method for "
                "the Laplace mode did not converge there; expected hyperparameters where it does "
                "(raise max_iterations, or start from smaller variances)"
            )
    return result


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _run_lbfgs(
    matrix_fn, likelihood, memory_size, params, x, y, tol, max_iterations, max_steps, gtol
) -> HyperparameterFit:
    def objective(p):
        kernel_matrix = matrix_fn(p, x, x)
        lml = log_marginal_likelihood(
            kernel_matrix, y, likelihood=likelihood, tol=tol, max_iterations=max_iterations
        )
        return -lml

    optimizer = optax.lbfgs(memory_size=memory_size)
    value_and_grad = optax.value_and_grad_from_state(objective)

    def step(carry):
        params, state = carry
        value, grad = value_and_grad(params, state=state)
        updates, state = optimizer.update(
            grad, state, params, value=value, grad=grad, value_fn=objective
        )
        return optax.apply_updates(params, updates), state

    def not_done(carry):
        _, state = carry
        count = otu.tree_get(state, "count")
        grad_norm = otu.tree_norm(otu.tree_get(state, "grad"))
        return (count == 0) | ((count < max_steps) & (grad_norm >= gtol))

    initial_objective = objective(params)
    params, state = jax.lax.while_loop(not_done, step, (params, optimizer.init(params)))
    final_objective, grad = jax.value_and_grad(objective)(params)
    return HyperparameterFit(
        params,
        initial_objective,
        final_objective,
        otu.tree_get(state, "count"),
        otu.tree_norm(grad),
    )
