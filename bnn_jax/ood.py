"""Out-of-distribution detection metrics for any score where higher means more likely OOD
(predictive entropy, BALD, ``1 - max probability``, ...), and empirical CDF curves.

``scores_in`` are the scores of in-distribution inputs, ``scores_out`` those of OOD inputs;
the OOD inputs are the positives unless stated otherwise. Ties are handled exactly as
scikit-learn's ``roc_auc_score``, ``average_precision_score`` and ``roc_curve`` handle them: an
input is flagged at threshold ``t`` when its score is ``>= t``, and every distinct score is a
threshold. The computations are sorts and ``searchsorted`` with fixed shapes.

Validation and jit: each public function validates its arguments in Python and then calls a
jitted core. Shape and option checks always run; the value checks (no NaN, ``tpr`` in
``(0, 1]``) need concrete values, so they run when called eagerly and are skipped when the
function is traced inside the caller's ``jax.jit``/``vmap`` (the unchecked, staged path).
"""

import functools
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bnn_jax.uncertainty import is_concrete

__all__ = ["ECDFCurve", "aupr", "auroc", "ecdf", "fpr_at_tpr", "inverse_ecdf"]


class ECDFCurve(NamedTuple):
    """A step curve: ``fraction[i]`` holds on ``[threshold[i], threshold[i + 1])``; plot with
    ``ax.step(curve.threshold, curve.fraction, where="post")``."""

    threshold: jax.Array
    """Score thresholds, ascending when they default to the sorted scores."""
    fraction: jax.Array
    """Fraction of the scores at or below (ECDF) or above (inverse ECDF) each threshold."""


def _scores(**named: jax.Array) -> list[jax.Array]:
    """Validate 1-D, non-empty, NaN-free score arrays; return them in one common float dtype."""
    for name, scores in named.items():
        shape = jnp.shape(scores)
        if len(shape) != 1 or shape[0] == 0:
            raise ValueError(f"{name}: expected a non-empty 1-D array of scores, got shape {shape}")
        dtype = jnp.result_type(scores)
        if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
            raise ValueError(f"{name}: expected real-valued scores, got dtype {dtype}")
        if is_concrete(scores) and np.isnan(np.asarray(scores, dtype=np.float64)).any():
            raise ValueError(f"{name}: expected no NaN values")
    dtype = jnp.result_type(*named.values(), jnp.float32)
    return [jnp.asarray(scores, dtype) for scores in named.values()]


def auroc(scores_in: jax.Array, scores_out: jax.Array) -> jax.Array:
    """Area under the ROC curve with the OOD inputs as positives.

    ``AUROC = P(s_out > s_in) + P(s_out == s_in) / 2`` over all in/out pairs (the
    Mann-Whitney statistic), equal to scikit-learn's trapezoidal ``roc_auc_score``.

    Args:
      scores_in: ``[n_in]`` scores of in-distribution inputs.
      scores_out: ``[n_out]`` scores of OOD inputs.

    Returns:
      Scalar in ``[0, 1]``: 1 = perfect separation, 0.5 = chance.

    Example:
      >>> auroc(uncertainty.entropy(lp_test), uncertainty.entropy(lp_ood))
    """
    scores_in, scores_out = _scores(scores_in=scores_in, scores_out=scores_out)
    return _auroc(scores_in, scores_out)


@jax.jit
def _auroc(scores_in, scores_out):
    ordered_in = jnp.sort(scores_in)
    below = jnp.searchsorted(ordered_in, scores_out, side="left")
    at_or_below = jnp.searchsorted(ordered_in, scores_out, side="right")
    pairs_won = (below + at_or_below).astype(scores_in.dtype) / (2 * ordered_in.shape[0])
    return jnp.mean(pairs_won)


def aupr(
    scores_in: jax.Array, scores_out: jax.Array, *, positive: Literal["out", "in"] = "out"
) -> jax.Array:
    """Area under the precision-recall curve as average precision (scikit-learn's
    ``average_precision_score``): ``AP = sum_k (R_k - R_{k-1}) P_k`` over thresholds, no
    interpolation.

    Args:
      scores_in: ``[n_in]`` scores of in-distribution inputs.
      scores_out: ``[n_out]`` scores of OOD inputs.
      positive: ``"out"`` (AUPR-Out: OOD inputs are positives, ranked by the score) or ``"in"``
        (AUPR-In: in-distribution inputs are positives, ranked by the negated score).

    Returns:
      Scalar in ``[0, 1]``; a random detector scores the positives' share of all inputs.
    """
    if positive not in ("out", "in"):
        raise ValueError(f"positive: expected 'out' or 'in', got {positive!r}")
    scores_in, scores_out = _scores(scores_in=scores_in, scores_out=scores_out)
    return _aupr(scores_in, scores_out, positive == "in")


@functools.partial(jax.jit, static_argnums=2)
def _aupr(scores_in, scores_out, in_positive):
    """``AP = (1/n_pos) sum_{positives i} precision(threshold = s_i)``, scikit-learn's step sum:
    a positive adds ``1/n_pos`` recall at the threshold equal to its score."""
    positives, negatives = (-scores_in, -scores_out) if in_positive else (scores_out, scores_in)
    ordered_pos, ordered_neg = jnp.sort(positives), jnp.sort(negatives)
    true_pos = ordered_pos.shape[0] - jnp.searchsorted(ordered_pos, positives, side="left")
    false_pos = ordered_neg.shape[0] - jnp.searchsorted(ordered_neg, positives, side="left")
    return jnp.mean(true_pos.astype(positives.dtype) / (true_pos + false_pos))


def fpr_at_tpr(scores_in: jax.Array, scores_out: jax.Array, tpr: float = 0.95) -> jax.Array:
    """False-positive rate on in-distribution inputs when ``tpr`` of the OOD inputs are detected.

    The threshold is the highest ``t`` whose true-positive rate ``#{s_out >= t} / n_out`` is at
    least ``tpr``; the result is ``#{s_in >= t} / n_in`` (scikit-learn:
    ``fpr[searchsorted(tpr_curve, tpr)]`` of ``roc_curve(..., drop_intermediate=False)``).

    Args:
      scores_in: ``[n_in]`` scores of in-distribution inputs.
      scores_out: ``[n_out]`` scores of OOD inputs.
      tpr: target true-positive rate in ``(0, 1]``.

    Returns:
      Scalar FPR in ``[0, 1]``: lower is better.
    """
    scores_in, scores_out = _scores(scores_in=scores_in, scores_out=scores_out)
    if is_concrete(tpr) and not 0 < float(tpr) <= 1:
        raise ValueError(f"tpr: expected a value in (0, 1], got {tpr!r}")
    return _fpr_at_tpr(scores_in, scores_out, tpr)


@jax.jit
def _fpr_at_tpr(scores_in, scores_out, tpr):
    descending = -jnp.sort(-scores_out)
    n_out = descending.shape[0]
    detected = jnp.arange(1, n_out + 1, dtype=descending.dtype) / n_out
    threshold = descending[jnp.argmax(detected >= tpr)]
    return jnp.mean(scores_in >= threshold, dtype=scores_in.dtype)


def _step_curve(scores, thresholds, *, inverse: bool) -> ECDFCurve:
    if thresholds is None:
        (scores,) = _scores(scores=scores)
    else:
        scores, thresholds = _scores(scores=scores, thresholds=thresholds)
    return _ecdf(scores, thresholds, inverse)


@functools.partial(jax.jit, static_argnums=2)
def _ecdf(scores, thresholds, inverse):
    ordered = jnp.sort(scores)
    grid = ordered if thresholds is None else thresholds
    count = jnp.searchsorted(ordered, grid, side="right")  # #{s_i <= t}
    if inverse:
        count = ordered.shape[0] - count
    return ECDFCurve(grid, count.astype(grid.dtype) / ordered.shape[0])


def ecdf(scores: jax.Array, *, thresholds: jax.Array | None = None) -> ECDFCurve:
    """Empirical CDF ``F(t) = #{s_i <= t} / n``.

    Args:
      scores: ``[n]`` scores.
      thresholds: ``[m]`` points at which to evaluate ``F``; default the sorted scores (the
        curve's steps).

    Returns:
      :class:`ECDFCurve` ``(threshold, fraction)``.
    """
    return _step_curve(scores, thresholds, inverse=False)


def inverse_ecdf(scores: jax.Array, *, thresholds: jax.Array | None = None) -> ECDFCurve:
    """The post's inverse ECDF ``1 - F(t) = #{s_i > t} / n``: the fraction of inputs whose score
    exceeds ``t``.

    For the post's figure, use the normalised predictive entropy ``H / log C`` on a grid in
    ``[0, 1]``; a good model is near 1 on OOD data and near 0 on in-distribution data.

    Args:
      scores: ``[n]`` scores.
      thresholds: ``[m]`` points at which to evaluate; default the sorted scores.

    Returns:
      :class:`ECDFCurve` ``(threshold, fraction)``.

    Example:
      >>> normalised = uncertainty.entropy(lp_ood) / jnp.log(lp_ood.shape[-1])
      >>> curve = inverse_ecdf(normalised, thresholds=jnp.linspace(0.0, 1.0, 101))
      >>> ax.plot(curve.threshold, curve.fraction)
    """
    return _step_curve(scores, thresholds, inverse=True)
