"""Calibration of a classifier's predictive distribution: accuracy, NLL, Brier score, ECE/MCE,
reliability-diagram and calibration-curve data, and temperature scaling.

Inputs are predictive log-probabilities ``log_probs [batch, C]`` (for a Bayesian predictive,
``uncertainty.mean_log_probs`` of the samples) and integer ``labels [batch]``. The confidence
of a prediction is its top-label probability ``max_c p_c`` and it is correct when
``argmax_c p_c`` (ties to the lower index) equals the label.

Binning. Bin ``b`` holds the confidences ``c`` with ``e_b <= c < e_{b+1}``, the last bin also
``c = 1``: a confidence exactly on an inner edge goes to the bin above it (numpy's and netcal's
rule).

- Equal width: the edges are netcal's ``np.linspace(0, 1, num_bins + 1)`` (float64) rounded to
  the confidences' dtype, and "on an edge" is judged in that dtype. In float64 the bins are
  exactly netcal's. In float32 they are those of ``scipy.stats.binned_statistic_dd``, which
  netcal uses for its per-bin means; netcal's per-bin counts (``np.histogramdd`` against the
  float64 edges) disagree with its own means for a float32 confidence equal to an edge that
  rounded down, so no implementation can match netcal exactly there.
- Equal mass: the inner edges are the empirical quantiles of the confidences at
  ``b / num_bins`` (numpy's default linear interpolation), the outer edges 0 and 1, as netcal's
  ``equal_intervals=False``. Each bin holds about ``batch / num_bins`` examples; tied
  confidences always share a bin, so with many ties a bin can hold more, or be empty.

Per-bin sums use ``jax.ops.segment_sum`` (fixed shapes, no Python loops over data).

Validation and jit: each public function validates its arguments in Python and then calls a
jitted core (``num_bins``, ``equal_mass`` and ``steps`` static). Shape, dtype and option checks
always run; the value checks (NaN, log-probabilities on the simplex, labels in range) need
concrete arrays, so they run when called eagerly and are skipped when the function is traced
inside the caller's ``jax.jit``/``vmap``, e.g.
``jax.jit(ece, static_argnames=("num_bins", "equal_mass"))``: the unchecked, staged path.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bnn_jax import checks
from bnn_jax.uncertainty import check_log_probs, is_concrete

__all__ = [
    "CalibrationCurve",
    "Reliability",
    "accuracy",
    "brier",
    "calibration_curve",
    "ece",
    "fit_temperature",
    "mce",
    "nll",
    "reliability",
    "reliability_from_confidences",
]


class Reliability(NamedTuple):
    """Per-bin reliability-diagram data, each field of shape ``[num_bins]``.

    ``accuracy``, ``confidence`` and ``gap`` are NaN in empty bins (``count == 0``).
    """

    lower: jax.Array
    """Lower bin edges."""
    upper: jax.Array
    """Upper bin edges."""
    accuracy: jax.Array
    """Fraction of correct predictions in the bin."""
    confidence: jax.Array
    """Mean confidence in the bin."""
    count: jax.Array
    """Number of examples in the bin (int32)."""
    gap: jax.Array
    """``confidence - accuracy`` (the post's average calibration error): > 0 overconfident."""


class CalibrationCurve(NamedTuple):
    """The post's calibration curve: plot ``gap`` against ``confidence`` on a logit x axis
    (``ax.set_xscale("logit")``); NaN marks empty bins."""

    confidence: jax.Array
    """Mean confidence per bin (the x position of the point)."""
    gap: jax.Array
    """``confidence - accuracy`` per bin: above 0 overconfident, below 0 underconfident."""
    count: jax.Array
    """Number of examples per bin."""


def _check_num_bins(num_bins) -> None:
    if isinstance(num_bins, bool) or not isinstance(num_bins, int | np.integer) or num_bins < 1:
        raise ValueError(f"num_bins: expected an integer >= 1, got {num_bins!r}")


def _check_labels(labels, *, batch: int, num_classes: int, against: str = "log_probs") -> None:
    shape = jnp.shape(labels)
    if shape != (batch,):
        raise ValueError(f"labels: expected shape ({batch},) to match {against}, got {shape}")
    dtype = jnp.result_type(labels)
    if not jnp.issubdtype(dtype, jnp.integer):
        raise ValueError(f"labels: expected an integer dtype, got {dtype}")
    if is_concrete(labels):
        values = np.asarray(labels)
        low, high = values.min(), values.max()
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"labels: expected values in [0, {num_classes - 1}], got values in [{low}, {high}]"
            )


def _check_predictions(log_probs, labels) -> None:
    if jnp.ndim(log_probs) != 2:
        raise ValueError(f"log_probs: expected shape [batch, classes], got {jnp.shape(log_probs)}")
    check_log_probs(log_probs)
    batch, num_classes = jnp.shape(log_probs)
    _check_labels(labels, batch=batch, num_classes=num_classes)


def accuracy(log_probs: jax.Array, labels: jax.Array) -> jax.Array:
    """Top-1 accuracy ``mean_i [argmax_c p_ic == y_i]``.

    Args:
      log_probs: predictive log-probabilities ``[batch, C]``.
      labels: int labels ``[batch]`` in ``[0, C)``.

    Returns:
      Scalar in ``[0, 1]``.
    """
    _check_predictions(log_probs, labels)
    return _accuracy(log_probs, labels)


@jax.jit
def _accuracy(log_probs, labels):
    return jnp.mean(jnp.argmax(log_probs, axis=-1) == labels, dtype=log_probs.dtype)


def nll(log_probs: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean negative log-likelihood ``-(1/n) sum_i log p_{i, y_i}``.

    Args:
      log_probs: predictive log-probabilities ``[batch, C]``.
      labels: int labels ``[batch]`` in ``[0, C)``.

    Returns:
      Scalar in nats; ``inf`` if a label has probability exactly 0.
    """
    _check_predictions(log_probs, labels)
    return _nll(log_probs, labels)


@jax.jit
def _nll(log_probs, labels):
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=-1))


def brier(log_probs: jax.Array, labels: jax.Array) -> jax.Array:
    """Brier score ``(1/n) sum_i sum_c (p_ic - [c == y_i])^2`` (multi-class form).

    Args:
      log_probs: predictive log-probabilities ``[batch, C]``.
      labels: int labels ``[batch]`` in ``[0, C)``.

    Returns:
      Scalar in ``[0, 2]``; 0 for confident correct predictions.
    """
    _check_predictions(log_probs, labels)
    return _brier(log_probs, labels)


@jax.jit
def _brier(log_probs, labels):
    one_hot = jax.nn.one_hot(labels, log_probs.shape[-1], dtype=log_probs.dtype)
    return jnp.mean(jnp.sum((jnp.exp(log_probs) - one_hot) ** 2, axis=-1))


def _equal_mass_edges(confidences: jax.Array, num_bins: int) -> jax.Array:
    """Quantile edges as ``np.quantile(c, np.linspace(0, 1, B + 1))`` (linear), ends 0 and 1."""
    n = confidences.shape[0]
    position = np.linspace(0.0, 1.0, num_bins + 1)[1:-1] * (n - 1)
    below = np.floor(position).astype(np.int32)
    above = np.minimum(below + 1, n - 1)
    frac = (position - below).astype(confidences.dtype)
    ordered = jnp.sort(confidences)
    low, high = ordered[below], ordered[above]
    step = high - low
    # numpy's lerp: exact at both ends and monotone.
    inner = jnp.where(frac >= 0.5, high - step * (1 - frac), low + step * frac)
    return jnp.concatenate([jnp.zeros(1, confidences.dtype), inner, jnp.ones(1, confidences.dtype)])


def reliability_from_confidences(
    confidences: jax.Array,
    correct: jax.Array,
    *,
    num_bins: int = 10,
    equal_mass: bool = False,
) -> Reliability:
    """Reliability-diagram data from any confidences in ``[0, 1]`` and 0/1 outcomes.

    The core of :func:`reliability`, usable for other notions of confidence (e.g. a binary
    classifier's ``p(y=1)`` against ``y``). See the module docstring for the bin convention.

    Args:
      confidences: ``[n]`` values in ``[0, 1]``.
      correct: ``[n]`` booleans (or 0/1), the outcome the confidence predicts.
      num_bins: number of bins, >= 1 (static).
      equal_mass: quantile (equal-mass) bins instead of equal-width bins (static).

    Returns:
      A :class:`Reliability` with ``num_bins`` entries per field.
    """
    _check_num_bins(num_bins)
    shape = jnp.shape(confidences)
    if len(shape) != 1 or shape[0] == 0:
        raise ValueError(f"confidences: expected a non-empty 1-D array, got shape {shape}")
    if jnp.shape(correct) != shape:
        raise ValueError(
            f"correct: expected shape {shape} to match confidences, got {jnp.shape(correct)}"
        )
    if not jnp.issubdtype(jnp.result_type(confidences), jnp.floating):
        raise ValueError(
            f"confidences: expected a floating dtype, got {jnp.result_type(confidences)}"
        )
    if is_concrete(confidences):
        values = np.asarray(confidences)
        if not np.all((values >= 0) & (values <= 1)):
            raise ValueError("confidences: expected values in [0, 1] and no NaN")
    if is_concrete(correct) and not np.all(np.isin(np.asarray(correct), (0, 1))):
        raise ValueError("correct: expected booleans or 0/1 values")
    return _reliability(confidences, correct, num_bins, bool(equal_mass))


@functools.partial(jax.jit, static_argnums=(2, 3))
def _reliability(confidences, correct, num_bins, equal_mass):
    if equal_mass:
        edges = _equal_mass_edges(confidences, num_bins)
    else:
        edges = jnp.asarray(np.linspace(0.0, 1.0, num_bins + 1), confidences.dtype)
    index = jnp.searchsorted(edges[1:-1], confidences, side="right")
    count = jax.ops.segment_sum(jnp.ones_like(index), index, num_segments=num_bins)
    confidence_sum = jax.ops.segment_sum(confidences, index, num_segments=num_bins)
    correct_sum = jax.ops.segment_sum(
        jnp.asarray(correct, confidences.dtype), index, num_segments=num_bins
    )
    safe_count = jnp.maximum(count, 1)
    occupied = count > 0
    mean_confidence = jnp.where(occupied, confidence_sum / safe_count, jnp.nan)
    mean_accuracy = jnp.where(occupied, correct_sum / safe_count, jnp.nan)
    return Reliability(
        lower=edges[:-1],
        upper=edges[1:],
        accuracy=mean_accuracy,
        confidence=mean_confidence,
        count=count,
        gap=mean_confidence - mean_accuracy,
    )


@functools.partial(jax.jit, static_argnums=(2, 3))
def _top_label_reliability(log_probs, labels, num_bins, equal_mass):
    confidence = jnp.exp(jnp.max(log_probs, axis=-1))
    correct = jnp.argmax(log_probs, axis=-1) == labels
    return _reliability(confidence, correct, num_bins, equal_mass)


def reliability(
    log_probs: jax.Array, labels: jax.Array, *, num_bins: int = 10, equal_mass: bool = False
) -> Reliability:
    """Reliability-diagram data of the top-label confidence.

    Args:
      log_probs: predictive log-probabilities ``[batch, C]``.
      labels: int labels ``[batch]`` in ``[0, C)``.
      num_bins: number of bins, >= 1 (static).
      equal_mass: quantile (equal-mass) bins instead of equal-width bins (static).

    Returns:
      A :class:`Reliability`: per bin ``lower, upper, accuracy, confidence, count, gap``.

    Example:
      >>> rel = reliability(jax.nn.log_softmax(logits), y, num_bins=10)
      >>> ax.bar(rel.lower, rel.accuracy, width=rel.upper - rel.lower, align="edge")
    """
    _check_predictions(log_probs, labels)
    _check_num_bins(num_bins)
    return _top_label_reliability(log_probs, labels, num_bins, bool(equal_mass))


def ece(
    log_probs: jax.Array, labels: jax.Array, *, num_bins: int = 10, equal_mass: bool = False
) -> jax.Array:
    """Expected calibration error ``sum_b (n_b / n) |conf_b - acc_b|`` (Naeini et al. 2015).

    Args:
      log_probs: predictive log-probabilities ``[batch, C]``.
      labels: int labels ``[batch]`` in ``[0, C)``.
      num_bins: number of bins, >= 1 (static).
      equal_mass: quantile (equal-mass) bins instead of equal-width bins (static).

    Returns:
      Scalar ECE in ``[0, 1]``. Equals ``netcal.metrics.ECE(bins=num_bins,
      equal_intervals=not equal_mass)`` when the labels hold at least 3 distinct classes
      (netcal scores fewer as a binary problem on ``p(y=1)``, not on the top label).
    """
    _check_predictions(log_probs, labels)
    _check_num_bins(num_bins)
    return _ece(log_probs, labels, num_bins, bool(equal_mass))


@functools.partial(jax.jit, static_argnums=(2, 3))
def _ece(log_probs, labels, num_bins, equal_mass):
    rel = _top_label_reliability(log_probs, labels, num_bins, equal_mass)
    weighted = jnp.where(rel.count > 0, rel.count * jnp.abs(rel.gap), 0.0)
    return jnp.sum(weighted) / log_probs.shape[0]


def mce(
    log_probs: jax.Array, labels: jax.Array, *, num_bins: int = 10, equal_mass: bool = False
) -> jax.Array:
    """Maximum calibration error ``max_b |conf_b - acc_b|`` over non-empty bins.

    Args:
      log_probs: predictive log-probabilities ``[batch, C]``.
      labels: int labels ``[batch]`` in ``[0, C)``.
      num_bins: number of bins, >= 1 (static).
      equal_mass: quantile (equal-mass) bins instead of equal-width bins (static).

    Returns:
      Scalar MCE in ``[0, 1]``; equals netcal's ``MCE`` under the conditions given in
      :func:`ece`.
    """
    _check_predictions(log_probs, labels)
    _check_num_bins(num_bins)
    return _mce(log_probs, labels, num_bins, bool(equal_mass))


@functools.partial(jax.jit, static_argnums=(2, 3))
def _mce(log_probs, labels, num_bins, equal_mass):
    rel = _top_label_reliability(log_probs, labels, num_bins, equal_mass)
    return jnp.max(jnp.where(rel.count > 0, jnp.abs(rel.gap), 0.0))


def calibration_curve(
    log_probs: jax.Array, labels: jax.Array, *, num_bins: int = 20, equal_mass: bool = True
) -> CalibrationCurve:
    """The post's calibration curve: per bin, mean confidence and ``confidence - accuracy``.

    The defaults follow the source post: 20 equal-mass bins, which spread the points over the
    high-confidence range that a logit-scaled confidence axis magnifies. Curves of several
    models (e.g. SGD vs DIAG vs KFAC) share that axis, so they can be compared directly.

    Args:
      log_probs: predictive log-probabilities ``[batch, C]``.
      labels: int labels ``[batch]`` in ``[0, C)``.
      num_bins: number of bins, >= 1 (static).
      equal_mass: quantile (equal-mass) bins instead of equal-width bins (static).

    Returns:
      A :class:`CalibrationCurve` ``(confidence, gap, count)``, each ``[num_bins]``.

    Example:
      >>> curve = calibration_curve(log_probs, y)
      >>> ax.plot(curve.confidence, curve.gap, marker="o"); ax.set_xscale("logit")
    """
    rel = reliability(log_probs, labels, num_bins=num_bins, equal_mass=equal_mass)
    return CalibrationCurve(confidence=rel.confidence, gap=rel.gap, count=rel.count)


def fit_temperature(
    logits: jax.Array,
    labels: jax.Array,
    *,
    steps: int = 100,
    init_temperature: float = 1.0,
) -> jax.Array:
    """Temperature scaling (Guo et al. 2017): ``T* = argmin_T NLL(softmax(logits / T), labels)``.

    Fit on a validation split, then predict with ``jax.nn.log_softmax(test_logits / T*)``.
    The NLL is minimised over ``log T`` (so ``T > 0``) with L-BFGS (``optax.lbfgs`` with its
    zoom line search), stopping after ``steps`` iterations or when the gradient vanishes.

    Args:
      logits: validation logits ``[batch, C]``, finite.
      labels: int labels ``[batch]`` in ``[0, C)``.
      steps: maximum number of L-BFGS iterations, >= 1 (static).
      init_temperature: starting temperature, finite and > 0.

    Returns:
      The fitted temperature, a positive scalar.

    Raises:
      ValueError: besides bad arguments, when (concrete) logits admit no finite positive
        temperature: the NLL, convex in ``1/T``, is minimised at ``T = inf`` when
        ``mean_i(z_iy - mean_c z_ic) <= 0``, and at ``T -> 0`` when every label logit is its
        row's maximum (a validation set without errors).

    Example:
      >>> temperature = fit_temperature(val_logits, val_labels)
      >>> nll(jax.nn.log_softmax(test_logits / temperature), test_labels)
    """
    shape = jnp.shape(logits)
    if len(shape) != 2 or 0 in shape:
        raise ValueError(f"logits: expected a non-empty array [batch, classes], got shape {shape}")
    if not jnp.issubdtype(jnp.result_type(logits), jnp.floating):
        raise ValueError(f"logits: expected a floating dtype, got {jnp.result_type(logits)}")
    if is_concrete(logits) and not np.all(np.isfinite(np.asarray(logits))):
        raise ValueError("logits: expected finite values (no NaN or inf)")
    _check_labels(labels, batch=shape[0], num_classes=shape[1], against="logits")
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 1:
        raise ValueError(f"steps: expected an integer >= 1, got {steps!r}")
    checks.positive("init_temperature", init_temperature)

    if is_concrete(logits) and is_concrete(labels):
        _check_temperature_has_optimum(np.asarray(logits, np.float64), np.asarray(labels))
    temperature = _fit_temperature(logits, labels, init_temperature, int(steps))
    if is_concrete(temperature) and not 0 < float(temperature) < np.inf:
        raise ValueError(
            f"logits: L-BFGS reached the temperature {float(temperature)}; expected logits of "
            "a moderate scale"
        )
    return temperature


def _check_temperature_has_optimum(logits: np.ndarray, labels: np.ndarray) -> None:
    """The NLL is convex in ``b = 1/T`` with slope ``mean_i(mean_c z_ic - z_iy)`` at ``b = 0``;
    its minimiser is ``T = inf`` when that slope is ``>= 0`` and ``T = 0`` when every label
    logit is its row's maximum (the NLL then falls for ever as ``b`` grows)."""
    label_logits = np.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
    if np.mean(label_logits - logits.mean(axis=-1)) <= 0:
        raise ValueError(
            "logits: the NLL is minimised by T = inf (uniform predictions): on average the "
            "label's logit is not above the mean logit; temperature scaling cannot help"
        )
    if np.all(label_logits >= logits.max(axis=-1)):
        raise ValueError(
            "logits: the NLL is minimised by T -> 0: every label is a top prediction, so any "
            "confidence looks calibrated; fit on a larger validation set with some errors"
        )


@functools.partial(jax.jit, static_argnums=3)
def _fit_temperature(logits, labels, init_temperature, steps):
    label_logits = jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]

    def objective(log_temperature):
        scale = jnp.exp(-log_temperature)
        return jnp.mean(jax.nn.logsumexp(logits * scale, axis=-1) - label_logits * scale)

    solver = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(objective)

    def step(carry):
        log_temperature, state = carry
        value, grad = value_and_grad(log_temperature, state=state)
        updates, state = solver.update(
            grad, state, log_temperature, value=value, grad=grad, value_fn=objective
        )
        return optax.apply_updates(log_temperature, updates), state

    def keep_going(carry):
        _, state = carry
        count = optax.tree_utils.tree_get(state, "count")
        grad = optax.tree_utils.tree_get(state, "grad")
        return (count == 0) | ((count < steps) & (jnp.abs(grad) > 0))

    init = jnp.log(jnp.asarray(init_temperature, logits.dtype))
    log_temperature, _ = jax.lax.while_loop(keep_going, step, (init, solver.init(init)))
    return jnp.exp(log_temperature)
