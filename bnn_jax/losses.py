"""Likelihoods as NamedTuples of pure functions of the model outputs.

Curvature estimation needs, per example ``n`` with outputs ``f_n`` (logits or regression
means), the negative log-likelihood, its gradient and Hessian with respect to ``f_n`` and a
square root of that Hessian. The generalised Gauss-Newton (GGN) matrix is then
``sum_n J_n^T H_n J_n = sum_n (J_n^T L_n)(J_n^T L_n)^T`` with ``L_n L_n^T = H_n`` and ``J_n``
the Jacobian of ``f_n`` with respect to the parameters. For these two likelihoods (canonical
links) the GGN equals the Fisher information matrix.

- ``categorical()``: ``-log softmax(f)_y``; gradient ``p - e_y``; Hessian
  ``diag(p) - p p^T``; square root ``L[:, c] = sqrt(p_c) (e_c - p)``.
- ``gaussian(sigma=s)``: ``||y - f||^2 / (2 s^2) + K/2 log(2 pi s^2)``; gradient
  ``(f - y) / s^2``; Hessian ``I / s^2``; square root ``I / s``. The GGN (and the exact and MC
  Fisher) therefore scale as ``1 / s^2``; the empirical Fisher as ``1 / s^4``.

``task`` says what a likelihood is for (``"classification"`` or ``"regression"``); predictives
check it with :func:`check_task`, so a classification predictive on a regression posterior (or
the reverse) is an error rather than a silent zero.

Example:
  >>> lik = losses.categorical()
  >>> nll = lik.nll(logits, labels).mean()          # per-example NLL, [batch]
  >>> y = lik.sample(key, logits, 8)                  # labels drawn from the model, [8, batch]
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bnn_jax import checks
from bnn_jax.types import Key

__all__ = ["Likelihood", "categorical", "check_task", "gaussian"]

TASKS = ("classification", "regression")


class Likelihood(NamedTuple):
    """Per-example likelihood ``p(y | f)`` of outputs ``f`` of shape ``[batch, K]``.

    Attributes:
      nll: ``(outputs, targets) -> [batch]`` negative log-likelihood per example.
      gradient: ``(outputs, targets) -> [batch, K]`` gradient of the NLL in ``outputs``.
      hessian: ``outputs -> [batch, K, K]`` Hessian of the NLL in ``outputs`` (it does not
        depend on the targets for these likelihoods).
      hessian_sqrt: ``outputs -> [batch, K, K]`` factor ``L`` with ``L @ L^T = hessian``;
        column ``c`` is one output-space direction of the exact GGN.
      sample: ``(key, outputs, num_samples) -> [num_samples, batch, ...]`` targets drawn
        from ``p(y | f)``.
      check_targets: ``(outputs_shape, targets) -> None``; raises ``ValueError`` for targets
        of the wrong shape or dtype and, when the values are concrete (not traced), for
        labels out of range or non-finite values.
      task: ``"classification"`` or ``"regression"``.
      sigma: the observation noise scale of a Gaussian likelihood (``None`` otherwise).
      num_outputs: the number ``K`` of outputs per example if the likelihood fixes it (the
        Gaussian evidence counts ``N K`` targets), else ``None``.
    """

    nll: Callable[[jax.Array, jax.Array], jax.Array]
    gradient: Callable[[jax.Array, jax.Array], jax.Array]
    hessian: Callable[[jax.Array], jax.Array]
    hessian_sqrt: Callable[[jax.Array], jax.Array]
    sample: Callable[[Key, jax.Array, int], jax.Array]
    check_targets: Callable[[tuple[int, ...], jax.Array], None]
    task: str
    sigma: Any = None
    num_outputs: int | None = None


def check_task(likelihood: Likelihood, task: str, caller: str) -> None:
    """``ValueError`` unless ``likelihood`` is for ``task``; ``caller`` names the function that
    needs it (e.g. ``"glm_probit_log_probs"``)."""
    if likelihood.task != task:
        raise ValueError(
            f"posterior: {caller} is for {task}, but the posterior's likelihood is for "
            f"{likelihood.task}"
        )


def _check_outputs_shape(outputs_shape: tuple[int, ...]) -> None:
    if len(outputs_shape) != 2:
        raise ValueError(f"outputs: expected shape [batch, outputs], got {tuple(outputs_shape)}")


def categorical() -> Likelihood:
    """Cross-entropy from logits ``f [batch, C]`` with integer labels ``y [batch]`` in ``[0, C)``.

    Formulas (``p = softmax(f)``, computed from ``log_softmax``):
    ``nll = -log p_y``, ``gradient = p - e_y``, ``hessian = diag(p) - p p^T`` and
    ``hessian_sqrt[:, c] = sqrt(p_c) (e_c - p)``, so that ``sum_c L_c L_c^T = diag(p) - p p^T``.
    """

    def nll(logits, labels):
        log_p = jax.nn.log_softmax(logits, axis=-1)
        return -jnp.take_along_axis(log_p, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]

    def gradient(logits, labels):
        p = jax.nn.softmax(logits, axis=-1)
        return p - jax.nn.one_hot(labels, logits.shape[-1], dtype=p.dtype)

    def hessian(logits):
        p = jax.nn.softmax(logits, axis=-1)
        return jax.vmap(jnp.diag)(p) - p[:, :, None] * p[:, None, :]

    def hessian_sqrt(logits):
        log_p = jax.nn.log_softmax(logits, axis=-1)
        p, sqrt_p = jnp.exp(log_p), jnp.exp(0.5 * log_p)
        eye = jnp.eye(logits.shape[-1], dtype=p.dtype)
        # L[b, k, c] = (delta_kc - p_k) sqrt(p_c)
        return (eye[None] - p[:, :, None]) * sqrt_p[:, None, :]

    def sample(key, logits, num_samples):
        return jax.random.categorical(key, logits, axis=-1, shape=(num_samples, *logits.shape[:-1]))

    def check_targets(outputs_shape, labels):
        _check_outputs_shape(outputs_shape)
        batch, num_classes = outputs_shape
        if labels.shape != (batch,):
            raise ValueError(
                f"y: expected integer labels of shape ({batch},), got shape {tuple(labels.shape)}"
            )
        if not jnp.issubdtype(labels.dtype, jnp.integer):
            raise ValueError(f"y: expected an integer dtype for class labels, got {labels.dtype}")
        values = checks.concrete(labels)
        if values is not None and values.size:
            if values.min() < 0 or values.max() >= num_classes:
                raise ValueError(
                    f"y: expected labels in [0, {num_classes}), got values in "
                    f"[{values.min()}, {values.max()}]"
                )

    return Likelihood(
        nll, gradient, hessian, hessian_sqrt, sample, check_targets, task="classification"
    )


def gaussian(*, sigma, num_outputs: int | None = None) -> Likelihood:
    """Gaussian regression ``y ~ N(f, sigma^2 I_K)`` with means ``f [batch, K]``, targets
    ``y [batch, K]`` and a noise scale ``sigma > 0``.

    Formulas: ``nll = ||y - f||^2 / (2 sigma^2) + K/2 log(2 pi sigma^2)``,
    ``gradient = (f - y) / sigma^2``, ``hessian = I / sigma^2``, ``hessian_sqrt = I / sigma``.

    Args:
      sigma: the noise scale; a number, or a traced scalar (e.g. to differentiate the NLL in
        ``sigma`` inside ``jax.grad``; only concrete values are checked).
      num_outputs: ``K``, if given: targets of any other width are refused. The marginal
        likelihood of a Gaussian posterior away from ``scale = 1`` (e.g. when tuning the noise)
        needs it, because it counts the ``N K`` target values.

    Example:
      >>> lik = losses.gaussian(sigma=0.1, num_outputs=1)
      >>> nll = lik.nll(means, y)                                   # [batch]
    """
    checks.positive("sigma", sigma)
    if jnp.ndim(sigma) != 0:
        raise ValueError(f"sigma: expected a scalar noise scale, got shape {jnp.shape(sigma)}")
    if num_outputs is not None:
        num_outputs = checks.positive_int("num_outputs", num_outputs)
    # a concrete sigma is kept as a Python float, so the likelihood stays hashable (posteriors
    # hold it as a static field)
    sigma = sigma if checks.is_traced(sigma) else float(sigma)

    def nll(means, targets):
        k = means.shape[-1]
        squared = jnp.sum((targets - means) ** 2, axis=-1)
        return 0.5 * squared / sigma**2 + 0.5 * k * jnp.log(2 * jnp.pi * sigma**2)

    def gradient(means, targets):
        return (means - targets) / sigma**2

    def hessian(means):
        eye = jnp.eye(means.shape[-1], dtype=means.dtype) / sigma**2
        return jnp.broadcast_to(eye, (*means.shape, means.shape[-1]))

    def hessian_sqrt(means):
        eye = jnp.eye(means.shape[-1], dtype=means.dtype) / sigma
        return jnp.broadcast_to(eye, (*means.shape, means.shape[-1]))

    def sample(key, means, num_samples):
        noise = jax.random.normal(key, (num_samples, *means.shape), means.dtype)
        return means + sigma * noise

    def check_targets(outputs_shape, targets):
        _check_outputs_shape(outputs_shape)
        if num_outputs is not None and outputs_shape[-1] != num_outputs:
            raise ValueError(
                f"apply_fn: the likelihood is gaussian(num_outputs={num_outputs}), but the model "
                f"has {outputs_shape[-1]} outputs"
            )
        if targets.shape != tuple(outputs_shape):
            raise ValueError(
                f"y: expected regression targets of shape {tuple(outputs_shape)}, "
                f"got {tuple(targets.shape)}"
            )
        if not jnp.issubdtype(targets.dtype, jnp.floating):
            raise ValueError(
                f"y: expected a floating dtype for regression targets, got {targets.dtype}"
            )
        values = checks.concrete(targets)
        if values is not None and not np.all(np.isfinite(values)):
            raise ValueError("y: expected finite regression targets, got NaN or inf")

    return Likelihood(
        nll,
        gradient,
        hessian,
        hessian_sqrt,
        sample,
        check_targets,
        task="regression",
        sigma=sigma,
        num_outputs=num_outputs,
    )
