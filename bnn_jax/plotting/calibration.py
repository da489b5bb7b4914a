"""Calibration figures: reliability diagrams and calibration curves on a logit confidence axis.

Inputs are the NamedTuples of :mod:`bnn_jax.calibration`: :class:`Reliability` from
``calibration.reliability`` and :class:`CalibrationCurve` from ``calibration.calibration_curve``
(NaN marks empty bins; they are left out of the figures).
"""

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from bnn_jax.calibration import CalibrationCurve, Reliability
from bnn_jax.plotting import _common

__all__ = ["LOGIT_MARGIN", "calibration_curves", "reliability_diagram"]

LOGIT_MARGIN = 1e-6
"""Confidences are drawn at ``clip(c, LOGIT_MARGIN, 1 - LOGIT_MARGIN)`` on the logit axis, so a
saturated confidence of exactly 1 (common in float32) stays visible instead of being masked."""


def _fields(name: str, value, fields: Sequence[str]) -> dict[str, np.ndarray]:
    """The named fields of a NamedTuple as float arrays of one common 1-D shape."""
    arrays = {f: np.asarray(getattr(value, f), dtype=np.float64) for f in fields}
    shape = arrays[fields[0]].shape
    if len(shape) != 1 or shape[0] == 0:
        raise ValueError(f"{name}: expected non-empty 1-D fields, got {fields[0]} of shape {shape}")
    for f, array in arrays.items():
        if array.shape != shape:
            raise ValueError(
                f"{name}: expected every field of shape {shape}, got {f} {array.shape}"
            )
    occupied = arrays["count"] > 0
    for f, array in arrays.items():
        if not np.all(np.isfinite(array[occupied])):
            raise ValueError(f"{name}: expected finite {f} in every non-empty bin")
    confidence = arrays["confidence"][occupied]
    if np.any((confidence < 0.0) | (confidence > 1.0)):
        raise ValueError(f"{name}: expected confidences in [0, 1]")
    return arrays


def reliability_diagram(
    reliabilities: Reliability | Mapping[str, Reliability], *, title: str | None = None
) -> Figure:
    """Reliability diagram(s): accuracy per confidence bin with the calibration gap on top.

    Blue bars are the accuracy of each bin; red bars on top of them reach the bin's mean
    confidence (the gap ``confidence - accuracy``: upwards = overconfident, downwards =
    underconfident); the dashed diagonal is perfect calibration. The panel title holds the
    ECE ``sum_b (n_b / n) |gap_b|`` computed from the bins. Empty bins are not drawn.

    Args:
      reliabilities: one :class:`Reliability`, or ``{method name: Reliability}`` for one panel
        per method.
      title: figure title.

    Returns:
      A Figure with one axes per reliability diagram.

    Example:
      >>> rel = {name: calibration.reliability(lp, y) for name, lp in predictions.items()}
      >>> fig = reliability_diagram(rel)
    """
    if isinstance(reliabilities, Reliability):
        reliabilities = {"": reliabilities}
    reliabilities = _common.check_mapping("reliabilities", reliabilities)
    fields = ("lower", "upper", "accuracy", "confidence", "count", "gap")
    data = {
        name: _fields(f"reliabilities[{name!r}]", rel, fields)
        for name, rel in reliabilities.items()
    }
    fig, axes = _common.panel_grid(
        len(data), ncols=4, panel_size=(3.8, 3.8), sharex=True, sharey=True
    )
    for ax, (name, rel) in zip(axes, data.items(), strict=True):
        occupied = rel["count"] > 0
        lower, width = rel["lower"][occupied], (rel["upper"] - rel["lower"])[occupied]
        accuracy, gap = rel["accuracy"][occupied], rel["gap"][occupied]
        ax.bar(
            lower,
            accuracy,
            width=width,
            align="edge",
            color="tab:blue",
            edgecolor="k",
            linewidth=0.5,
            label="accuracy",
        )
        ax.bar(
            lower,
            gap,
            bottom=accuracy,
            width=width,
            align="edge",
            color="tab:red",
            alpha=0.6,
            edgecolor="darkred",
            linewidth=0.5,
            label="gap (confidence - accuracy)",
        )
        ax.plot(
            [0.0, 1.0],
            [0.0, 1.0],
            color="k",
            linestyle="--",
            linewidth=1,
            label="perfect calibration",
        )
        ece = np.sum(rel["count"][occupied] * np.abs(gap)) / np.sum(rel["count"])
        ax.set_title(f"{name}: ECE {ece:.2%}" if name else f"ECE {ece:.2%}")
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(0.0, 1.0)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
    axes[0].legend(loc="upper left", fontsize="small")
    if title is not None:
        fig.suptitle(title)
    return fig


def _family(name: str, curves) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Members aligned bin by bin: mean confidence, mean / min / max gap over the members that
    have data in the bin; bins empty for every member are dropped."""
    members = [curves] if isinstance(curves, CalibrationCurve) else list(curves)
    if not members or not all(isinstance(m, CalibrationCurve) for m in members):
        raise ValueError(f"{name}: expected a CalibrationCurve or a non-empty list of them")
    arrays = [
        _fields(f"{name}[{k}]", m, ("confidence", "gap", "count")) for k, m in enumerate(members)
    ]
    sizes = {a["count"].shape[0] for a in arrays}
    if len(sizes) != 1:
        raise ValueError(
            f"{name}: expected curves with the same number of bins, got {sorted(sizes)}"
        )
    occupied = np.stack([a["count"] > 0 for a in arrays])
    confidence = np.stack(
        [np.where(o, a["confidence"], 0.0) for a, o in zip(arrays, occupied, strict=True)]
    )
    gap = np.stack([np.where(o, a["gap"], 0.0) for a, o in zip(arrays, occupied, strict=True)])
    members_in_bin = occupied.sum(0)
    keep = members_in_bin > 0
    mean_confidence = confidence.sum(0)[keep] / members_in_bin[keep]
    mean_gap = gap.sum(0)[keep] / members_in_bin[keep]
    low = np.where(occupied, gap, np.inf).min(0)[keep]
    high = np.where(occupied, gap, -np.inf).max(0)[keep]
    return mean_confidence, mean_gap, low, high


def calibration_curves(
    curves: Mapping[str, CalibrationCurve | Sequence[CalibrationCurve]],
    *,
    title: str = "Calibration curves",
) -> Figure:
    """The source post's calibration curves: ``confidence - accuracy`` per bin against the
    confidence on a logit-scaled axis (which magnifies the high-confidence regime); above 0
    is overconfident, below 0 underconfident.

    Each method is one line. For a model family (a list of curves, one per member, e.g.
    networks of growing depth) the members are aligned bin by bin (same ``num_bins``; with
    equal-mass bins, bin ``b`` is the same confidence quantile for every member): the line is
    the members' mean gap at their mean confidence, and the shaded band spans their minimum
    to maximum gap. Confidences of exactly 1 are drawn at ``1 - LOGIT_MARGIN``.

    Args:
      curves: ``{method name: CalibrationCurve or list of CalibrationCurve}``.
      title: axes title.

    Returns:
      A Figure with one axes (x axis logit-scaled).

    Example:
      >>> family = {m: [calibration.calibration_curve(lp, y) for lp in family_lp[m]]
      ...           for m in ("MAP", "DIAG", "KFAC")}
      >>> fig = calibration_curves(family)
    """
    curves = _common.check_mapping("curves", curves)
    lines = {name: _family(f"curves[{name!r}]", c) for name, c in curves.items()}
    colors = _common.method_colors(list(lines))
    fig, ax = plt.subplots(figsize=(6.5, 4.2), layout="constrained")
    for name, (confidence, gap, low, high) in lines.items():
        order = np.argsort(confidence)
        x = np.clip(confidence[order], LOGIT_MARGIN, 1.0 - LOGIT_MARGIN)
        ax.plot(x, gap[order], marker="o", markersize=3, color=colors[name], label=name)
        if np.any(high > low):
            ax.fill_between(x, low[order], high[order], color=colors[name], alpha=0.2, linewidth=0)
    ax.axhline(0.0, color="k", linestyle="--", linewidth=1)
    ax.set_xscale("logit")
    ax.set_xlabel("confidence (logit scale)")
    ax.set_ylabel("confidence - accuracy")
    ax.set_title(title)
    ax.legend(loc="best", fontsize="small")
    return fig
