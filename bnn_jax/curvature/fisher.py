"""Fisher types: which output-space square-root factors enter the curvature.

Every curvature structure estimates ``C = sum_n sum_m g_nm g_nm^T`` with pseudo-gradients
``g_nm = J_n^T s_nm``, where ``J_n`` is the Jacobian of the outputs ``f_n`` with respect to the
(selected) parameters and the ``s_nm`` are output-space factors chosen by the Fisher type:

- ``exact_fisher()``: the GGN ``sum_n J_n^T H_n J_n``; ``s_n = columns of L_n`` with
  ``L_n L_n^T = H_n`` (for softmax, ``sqrt(p_c) (e_c - p)``, ``M = C`` factors).
- ``mc_fisher(num_samples=S)``: ``s_nm = grad_f nll(f_n, y_m) / sqrt(S)`` with
  ``y_m ~ p(y | f_n)`` drawn from the model (the source post's choice); unbiased for the
  exact Fisher, ``M = S`` factors.
- ``empirical_fisher()``: ``s_n = grad_f nll(f_n, y_n)`` at the true labels, ``M = 1``.

Example:
  >>> curv = curvature.kfac(apply_fn, losses.categorical(), fisher=curvature.mc_fisher())
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bnn_jax.losses import Likelihood
from bnn_jax.types import ApplyFn, Batch, Key, Params

__all__ = ["Fisher", "batch_factors", "empirical_fisher", "exact_fisher", "mc_fisher"]


class Fisher(NamedTuple):
    """A Fisher type.

    Attributes:
      output_factors: ``(likelihood, outputs [B, K], targets, key) -> [B, K, M]``; the
        curvature of one example in output space is ``S_n S_n^T``.
      name: for display only.
    """

    output_factors: Callable[[Likelihood, jax.Array, jax.Array, Key], jax.Array]
    name: str


def exact_fisher() -> Fisher:
    """The generalised Gauss-Newton matrix (= Fisher for these likelihoods), all classes."""

    def output_factors(likelihood, outputs, targets, key):
        del targets, key
        return likelihood.hessian_sqrt(outputs)

    return Fisher(output_factors, "exact")


def mc_fisher(*, num_samples: int = 1) -> Fisher:
    """The Monte Carlo Fisher with ``num_samples`` targets drawn from the model per example."""
    if (
        isinstance(num_samples, bool)
        or not isinstance(num_samples, int | np.integer)
        or num_samples < 1
    ):
        raise ValueError(f"num_samples: expected an integer >= 1, got {num_samples!r}")

    def output_factors(likelihood, outputs, targets, key):
        del targets
        samples = likelihood.sample(key, outputs, num_samples)
        grads = jax.vmap(likelihood.gradient, in_axes=(None, 0))(outputs, samples)
        return jnp.moveaxis(grads, 0, -1) / float(num_samples) ** 0.5

    return Fisher(output_factors, f"mc{num_samples}")


def empirical_fisher() -> Fisher:
    """The empirical Fisher: gradients at the true targets (a biased curvature estimate)."""

    def output_factors(likelihood, outputs, targets, key):
        del key
        return likelihood.gradient(outputs, targets)[..., None]

    return Fisher(output_factors, "empirical")


def batch_factors(
    apply_fn: ApplyFn,
    likelihood: Likelihood,
    fisher: Fisher,
    params: Params,
    batch: Batch,
    key: Key,
    outputs: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Outputs ``[B, K]`` and factors ``[B, K, M]`` of one batch, after checking the batch.

    The factors are constants for differentiation (``stop_gradient``). Pass ``outputs`` when
    they were computed already (e.g. by ``capture``).
    """
    if outputs is None:
        outputs = apply_fn(params, batch.x)
    if batch.x.shape[:1] != outputs.shape[:1]:
        raise ValueError(
            f"batch.x: expected a leading batch axis matching the outputs {outputs.shape[:1]}, "
            f"got shape {tuple(batch.x.shape)}"
        )
    likelihood.check_targets(outputs.shape, batch.y)
    factors = fisher.output_factors(likelihood, jax.lax.stop_gradient(outputs), batch.y, key)
    return outputs, jax.lax.stop_gradient(factors)
