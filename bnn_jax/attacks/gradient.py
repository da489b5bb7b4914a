"""Gradient attacks (FGM, BIM, PGD) and input gradients against any differentiable predictive.

The attacked model is a function ``log_prob_fn(x) -> log-probabilities [batch, classes]`` that
treats examples independently: a deterministic network, one posterior sample, or the
MC-averaged predictive of :func:`bnn_jax.attacks.mc_log_prob_fn` (expectation over
transformation, EOT). The attacks ascend the per-example loss

    L(x') = loss_fn(log_prob_fn(x'), y)           (default: cross-entropy -log p(y | x'))

with ``y`` the given ``labels`` (the blog's choice) or, with ``labels=None``, the class the
model predicts for the clean input (the notebook's choice; fixed over the iterations so the
attack does not chase its own prediction). A targeted attack (``targets=...``) descends the loss
of the target class instead. Iterations run in ``lax.fori_loop``, so a jitted attack is traced
once whatever the number of steps; ``eps`` and ``eps_iter`` may be traced (one compilation
serves a whole sweep over eps). Validation of values (eps >= 0, label ranges, NaNs) runs where
they are concrete and is skipped on tracers.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from bnn_jax import checks
from bnn_jax.attacks.norms import NormOps, norm_ops
from bnn_jax.types import Key
from bnn_jax.uncertainty import check_log_probs

LogProbFn = Callable[[jax.Array], jax.Array]
"""``log_prob_fn(x) -> log-probabilities [batch, classes]``, differentiable in ``x``."""

LossFn = Callable[[jax.Array, jax.Array], jax.Array]
"""``loss_fn(log_probs [batch, classes], labels [batch]) -> per-example losses [batch]``."""


def cross_entropy(log_probs: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example cross-entropy ``-log p(labels | x)`` in nats, shape ``[batch]``."""
    return -jnp.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]


def _concrete(value) -> np.ndarray | None:
    """``value`` as a NumPy array, or ``None`` if it is a tracer (checks are then skipped)."""
    try:
        return np.asarray(value)
    except jax.errors.TracerArrayConversionError:
        return None


def _check_scalar(name: str, value, *, at_most=None, at_most_name: str = "") -> None:
    if jnp.ndim(value) != 0:
        raise ValueError(f"{name}: expected a scalar, got shape {jnp.shape(value)}")
    concrete = _concrete(value)
    if concrete is None:
        return
    if not np.isfinite(concrete) or concrete < 0:
        raise ValueError(f"{name}: expected a finite number >= 0, got {concrete}")
    bound = None if at_most is None else _concrete(at_most)
    if bound is not None and concrete > bound:
        raise ValueError(f"{name}: expected a value <= {at_most_name} = {bound}, got {concrete}")


def _check_steps(steps) -> None:
    concrete = _concrete(steps)
    if jnp.ndim(steps) != 0 or not jnp.issubdtype(jnp.result_type(steps), jnp.integer):
        raise ValueError(f"steps: expected an integer >= 1, got {steps!r}")
    if concrete is not None and concrete < 1:
        raise ValueError(f"steps: expected an integer >= 1, got {concrete}")


def _check_labels(name: str, labels, batch: int, num_classes: int) -> jax.Array:
    labels = jnp.asarray(labels)
    if labels.shape != (batch,) or not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(
            f"{name}: expected integer class labels of shape ({batch},), "
            f"got {labels.dtype} of shape {labels.shape}"
        )
    concrete = _concrete(labels)
    if (
        concrete is not None
        and concrete.size
        and (concrete.min() < 0 or concrete.max() >= num_classes)
    ):
        raise ValueError(
            f"{name}: expected labels in [0, {num_classes}), got values in "
            f"[{concrete.min()}, {concrete.max()}]"
        )
    return labels


def _check_inputs(log_prob_fn: LogProbFn, x, labels, targets, clip_min, clip_max):
    """Validate the arguments shared by every attack; returns ``(x, labels, targets)``."""
    x = jnp.asarray(x)
    if x.ndim < 1 or x.shape[0] < 1 or not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x: expected floating inputs [batch, ...], got {x.dtype} {x.shape}")
    concrete_x = _concrete(x)
    if concrete_x is not None and not np.all(np.isfinite(concrete_x)):
        raise ValueError("x: expected finite inputs, got NaN or inf")
    out = jax.eval_shape(log_prob_fn, x) if concrete_x is None else log_prob_fn(x)
    if len(out.shape) != 2 or out.shape[0] != x.shape[0]:
        raise ValueError(
            "log_prob_fn: expected log-probabilities of shape [batch, classes] with "
            f"batch = {x.shape[0]}, got {out.shape}"
        )
    if concrete_x is not None:  # probabilities or logits would be attacked with the wrong loss
        check_log_probs(out, name="log_prob_fn(x)")
    if labels is not None and targets is not None:
        raise ValueError("labels, targets: give labels (untargeted) or targets, not both")
    if labels is not None:
        labels = _check_labels("labels", labels, x.shape[0], out.shape[1])
    if targets is not None:
        targets = _check_labels("targets", targets, x.shape[0], out.shape[1])
    low, high = _concrete(clip_min), _concrete(clip_max)
    for name, given, value in (("clip_min", clip_min, low), ("clip_max", clip_max, high)):
        if (
            given is not None
            and value is not None
            and not (value.dtype.kind in "biuf" and not np.any(np.isnan(value)))
        ):
            raise ValueError(f"{name}: expected a number or array of numbers, got {given!r}")
    if clip_min is not None and clip_max is not None and low is not None and high is not None:
        if np.any(low > high):
            raise ValueError(f"clip_min: expected clip_min <= clip_max, got {low} > {high}")
    if concrete_x is not None and (
        (clip_min is not None and low is not None and np.any(concrete_x < low))
        or (clip_max is not None and high is not None and np.any(concrete_x > high))
    ):
        raise ValueError("x: expected inputs inside [clip_min, clip_max]")
    return x, labels, targets


def _check_attacked(x_adv: jax.Array) -> jax.Array:
    """``x_adv``, or a ``ValueError`` if it is concrete and not finite."""
    concrete = _concrete(x_adv)
    if concrete is not None and not np.all(np.isfinite(concrete)):
        raise ValueError(
            "eps: the attacked inputs are not finite (the step overflowed, or log_prob_fn or its "
            "gradient is NaN or inf inside the eps-ball); expected a smaller eps or a data "
            "range (clip_min, clip_max)"
        )
    return x_adv


def _clip(x: jax.Array, clip_min, clip_max) -> jax.Array:
    if clip_min is not None:
        x = jnp.maximum(x, clip_min)
    if clip_max is not None:
        x = jnp.minimum(x, clip_max)
    return x


def _loss_grad(log_prob_fn: LogProbFn, loss_fn: LossFn, sign: float):
    """``(x, labels) -> d/dx [sign * sum_i loss_fn(log_prob_fn(x), labels)_i]``; with
    ``labels=None`` the labels are the model's own (non-differentiated) predictions at ``x``."""

    def total(x, labels):
        log_probs = log_prob_fn(x)
        if labels is None:
            labels = jnp.argmax(jax.lax.stop_gradient(log_probs), axis=-1)
        losses = loss_fn(log_probs, labels)
        if losses.shape != (x.shape[0],):
            raise ValueError(
                f"loss_fn: expected per-example losses of shape ({x.shape[0]},), got {losses.shape}"
            )
        return sign * jnp.sum(losses)

    return jax.grad(total)


def input_gradient(
    log_prob_fn: LogProbFn,
    x: jax.Array,
    *,
    labels: jax.Array | None = None,
    loss_fn: LossFn = cross_entropy,
) -> jax.Array:
    """Gradient of each example's loss with respect to its input, ``d/dx_i loss(x_i, y_i)``.

    With ``labels=None`` this is the notebook's quiver field: the gradient of the cross-entropy
    of the currently predicted class, ``grad_x [-log p(argmax_c p(c | x) | x)]``, of the
    (MC-averaged) predictive. Per example (a sum over the batch, not the notebook's mean).

    Args:
      log_prob_fn: the predictive, ``x -> log-probabilities [batch, classes]``.
      x: inputs ``[batch, ...]``, e.g. the points of a plotting grid.
      labels: classes whose loss is differentiated; ``None`` for the predicted class.
      loss_fn: per-example loss ``(log_probs, labels) -> [batch]``.

    Returns:
      Gradients shaped like ``x``.

    Example:
      >>> grid = jnp.stack(jnp.meshgrid(xs, ys), -1).reshape(-1, 2)
      >>> arrows = input_gradient(mc_log_prob_fn(logits_fn, keys), grid)
    """
    x, labels, _ = _check_inputs(log_prob_fn, x, labels, None, None, None)
    return _loss_grad(log_prob_fn, loss_fn, 1.0)(x, labels)


def _setup(log_prob_fn, x, labels, targets, clip_min, clip_max, norm, loss_fn):
    """Shared validation; returns ``(x, ops, grad_fn, y)`` with ``grad_fn(x', y)`` the gradient
    of the objective the attack ascends and ``y`` its labels (``None``: predicted class)."""
    ops = norm_ops(norm)
    x, labels, targets = _check_inputs(log_prob_fn, x, labels, targets, clip_min, clip_max)
    if targets is not None:
        return x, ops, _loss_grad(log_prob_fn, loss_fn, -1.0), targets
    return x, ops, _loss_grad(log_prob_fn, loss_fn, 1.0), labels


def fgm(
    log_prob_fn: LogProbFn,
    x: jax.Array,
    *,
    eps: float | jax.Array,
    norm: str,
    labels: jax.Array | None = None,
    targets: jax.Array | None = None,
    loss_fn: LossFn = cross_entropy,
    clip_min: float | jax.Array | None = None,
    clip_max: float | jax.Array | None = None,
) -> jax.Array:
    """Fast gradient method: one step of length ``eps`` along the steepest-ascent direction.

        x_adv = clip(x + eps * d),   d = argmax_{||d|| <= 1} <grad_x L(x), d>

    so ``d = sign(g)`` for ``"linf"`` (FGSM), ``g / ||g||_2`` for ``"l2"`` and, for ``"l1"``,
    ``sign(g_j) e_j`` on the coordinate of largest ``|g_j|`` (mass split equally between exact
    ties). Before clipping, every example with a nonzero gradient moves by exactly ``eps`` in
    the chosen norm; examples with a zero gradient do not move. A targeted attack steps
    against the gradient of the target's loss.

    Args:
      log_prob_fn: the attacked predictive, ``x -> log-probabilities [batch, classes]``.
      x: clean inputs ``[batch, ...]``.
      eps: step length, ``>= 0``.
      norm: ``"linf"``, ``"l2"`` or ``"l1"``.
      labels: untargeted attack on these classes; ``None`` attacks the predicted class.
      targets: targeted attack towards these classes (exclusive with ``labels``).
      loss_fn: per-example loss ``(log_probs, labels) -> [batch]``.
      clip_min, clip_max: optional data range (scalars or broadcastable to ``x``).

    Returns:
      Adversarial inputs shaped and typed like ``x``.

    Example:
      >>> x_adv = fgm(log_prob_fn, x, eps=0.5, norm="l2")             # the notebook's attack
    """
    x, ops, grad_fn, y = _setup(log_prob_fn, x, labels, targets, clip_min, clip_max, norm, loss_fn)
    _check_scalar("eps", eps)
    eps = jnp.asarray(eps, x.dtype)
    x_adv = _clip(x + eps * ops.direction(grad_fn(x, y)), clip_min, clip_max).astype(x.dtype)
    return _check_attacked(x_adv)


def _iterate(
    log_prob_fn, x, delta, *, ops: NormOps, grad_fn, y, eps, eps_iter, steps, clip_min, clip_max
):
    """``steps`` projected steepest-ascent steps from ``x + delta`` inside the eps-ball."""
    if y is None:
        y = jnp.argmax(log_prob_fn(x), axis=-1)
    eps = jnp.asarray(eps, x.dtype)
    eps_iter = jnp.asarray(eps_iter, x.dtype)

    def step(_, delta):
        delta = delta + eps_iter * ops.direction(grad_fn(x + delta, y))
        delta = ops.project(delta, eps)
        return (_clip(x + delta, clip_min, clip_max) - x).astype(x.dtype)

    return x + jax.lax.fori_loop(0, steps, step, delta)


def bim(
    log_prob_fn: LogProbFn,
    x: jax.Array,
    *,
    eps: float | jax.Array,
    eps_iter: float | jax.Array,
    steps: int | jax.Array,
    norm: str,
    labels: jax.Array | None = None,
    targets: jax.Array | None = None,
    loss_fn: LossFn = cross_entropy,
    clip_min: float | jax.Array | None = None,
    clip_max: float | jax.Array | None = None,
) -> jax.Array:
    """Basic iterative method: ``steps`` FGM steps of length ``eps_iter`` from the clean input,
    each followed by the Euclidean projection onto the eps-ball around ``x`` and clipping:

        x_{k+1} = clip(x + P_eps(x_k + eps_iter * d(grad L(x_k)) - x)),   x_0 = x.

    Without ``labels``/``targets`` the predicted class of the clean input is attacked
    throughout. Arguments as :func:`fgm`, plus:

    Args:
      eps_iter: step length, ``0 <= eps_iter <= eps``.
      steps: number of iterations, ``>= 1`` (a Python int, or traced: then the loop is a
        ``while_loop``).

    Example:
      >>> x_adv = bim(mc_log_prob_fn(logits_fn, keys), x, eps=0.3, eps_iter=0.1, steps=10,
      ...             norm="l2")                                       # the notebook's attack
    """
    x, ops, grad_fn, y = _setup(log_prob_fn, x, labels, targets, clip_min, clip_max, norm, loss_fn)
    _check_scalar("eps", eps)
    _check_scalar("eps_iter", eps_iter, at_most=eps, at_most_name="eps")
    _check_steps(steps)
    delta = jnp.zeros_like(x)
    x_adv = _iterate(
        log_prob_fn,
        x,
        delta,
        ops=ops,
        grad_fn=grad_fn,
        y=y,
        eps=eps,
        eps_iter=eps_iter,
        steps=steps,
        clip_min=clip_min,
        clip_max=clip_max,
    )
    return _check_attacked(x_adv)


def pgd(
    log_prob_fn: LogProbFn,
    x: jax.Array,
    *,
    key: Key,
    eps: float | jax.Array,
    eps_iter: float | jax.Array,
    steps: int | jax.Array,
    norm: str,
    labels: jax.Array | None = None,
    targets: jax.Array | None = None,
    loss_fn: LossFn = cross_entropy,
    clip_min: float | jax.Array | None = None,
    clip_max: float | jax.Array | None = None,
) -> jax.Array:
    """Projected gradient descent (Madry et al.): :func:`bim` from a random start drawn
    uniformly from the eps-ball of ``norm`` with ``key`` (then clipped to the data range).

    Arguments as :func:`bim`, plus ``key``: the PRNG key of the random start.

    Example:
      >>> x_adv = pgd(log_prob_fn, x, key=jax.random.key(0), eps=8 / 255, eps_iter=2 / 255,
      ...             steps=40, norm="linf", labels=y, clip_min=0.0, clip_max=1.0)
    """
    checks.key("key", key)
    x, ops, grad_fn, y = _setup(log_prob_fn, x, labels, targets, clip_min, clip_max, norm, loss_fn)
    _check_scalar("eps", eps)
    _check_scalar("eps_iter", eps_iter, at_most=eps, at_most_name="eps")
    _check_steps(steps)
    start = ops.random(key, x.shape, jnp.asarray(eps, x.dtype), x.dtype)
    delta = (_clip(x + start, clip_min, clip_max) - x).astype(x.dtype)
    x_adv = _iterate(
        log_prob_fn,
        x,
        delta,
        ops=ops,
        grad_fn=grad_fn,
        y=y,
        eps=eps,
        eps_iter=eps_iter,
        steps=steps,
        clip_min=clip_min,
        clip_max=clip_max,
    )
    return _check_attacked(x_adv)
