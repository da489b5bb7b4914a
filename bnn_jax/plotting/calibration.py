"""Calibration figures: reliability diagrams and calibration curves on a logit confidence axis.

Inputs are the NamedTuples of :mod:`bnn_jax.calibration`: :class:`Reliability` from
``calibration.reliability`` and :class:`CalibrationCurve` from ``calibration.calibration_curve``
(NaN marks empty bins; they are left out of the figures).
"""

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

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


_OVER, _UNDER = "#e8827a", "#b9a3dc"  # opaque, so the legend shows the drawn colours


def reliability_diagram(
    reliabilities: Reliability | Mapping[str, Reliability], *, title: str | None = None
) -> Figure:
    """Reliability diagram(s): accuracy per confidence bin with the calibration gap on top.

    Blue bars are the accuracy of each bin; the gap bars span from the accuracy to the bin's
    mean confidence: red above the accuracy where ``confidence > accuracy`` (overconfident),
    purple below it where ``confidence < accuracy`` (underconfident, covering the top of the
    blue bar, whose height is still the accuracy); the dashed diagonal is perfect calibration.
    Each bar is labelled with its bin's number of inputs, and the panel title holds the ECE
    ``sum_b (n_b / n) |gap_b|`` computed from the bins and ``n``. Empty bins are not drawn. One
    legend below the panels names every bar colour drawn.

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
        len(data), ncols=3, panel_size=(3.6, 3.6), sharex=True, sharey=True
    )
    legend = {}
    for ax, (name, rel) in zip(axes, data.items(), strict=True):
        occupied = rel["count"] > 0
        lower, width = rel["lower"][occupied], (rel["upper"] - rel["lower"])[occupied]
        accuracy, gap = rel["accuracy"][occupied], rel["gap"][occupied]
        counts = rel["count"][occupied]
        legend["accuracy"] = ax.bar(
            lower, accuracy, width=width, align="edge", color="tab:blue", edgecolor="k", lw=0.5
        )
        for mask, color, label in (
            (gap > 0, _OVER, "gap, overconfident (confidence > accuracy)"),
            (gap < 0, _UNDER, "gap, underconfident (confidence < accuracy)"),
        ):
            if np.any(mask):
                legend[label] = ax.bar(
                    lower[mask],
                    gap[mask],
                    bottom=accuracy[mask],
                    width=width[mask],
                    align="edge",
                    color=color,
                    edgecolor="k",
                    lw=0.5,
                )
        (legend["perfect calibration"],) = ax.plot(
            [0.0, 1.0], [0.0, 1.0], color="k", linestyle="--", linewidth=1
        )
        for x, w, c in zip(lower, width, counts, strict=True):
            ax.text(
                x + w / 2,
                0.02,
                f"{int(c)}",
                rotation=90,
                ha="center",
                va="bottom",
                fontsize="x-small",
                bbox={"facecolor": "w", "alpha": 0.75, "linewidth": 0, "pad": 1},
            )
        total = np.sum(rel["count"])
        ece = np.sum(counts * np.abs(gap)) / total
        head = f"{name}: " if name else ""
        ax.set_title(f"{head}ECE {ece:.2%}, n = {int(total)}")
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(0.0, 1.0)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
    legend["inputs per bin (number at the foot of each bar)"] = Rectangle(
        (0, 0), 1, 1, fill=False, lw=0
    )
    fig.legend(
        list(legend.values()),
        list(legend),
        loc="outside lower center",
        ncols=2,
        fontsize="small",
    )
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


_TICKS = (0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999, 0.9999, 0.99999)


def _confidence_ticks(ax, confidence: np.ndarray) -> None:
    """Plain decimal ticks on the logit axis, padded a little beyond the data."""
    low, high = float(confidence.min()), float(confidence.max())
    logit = lambda p: np.log(p / (1 - p))
    expit = lambda z: 1 / (1 + np.exp(-z))
    pad = 0.05 * max(logit(high) - logit(low), 1.0)
    low, high = expit(logit(low) - pad), expit(logit(high) + pad)
    ax.set_xlim(low, high)
    ticks = [t for t in _TICKS if low <= t <= high] or [low, high]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


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
    to maximum gap (thin lines at its edges, so overlapping bands stay readable: pass a few
    methods per figure). Confidences of exactly 1 are drawn at ``1 - LOGIT_MARGIN``. The legend
    sits right of the axes, outside the data.

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
    drawn = []
    for name, (confidence, gap, low, high) in lines.items():
        order = np.argsort(confidence)
        x = np.clip(confidence[order], LOGIT_MARGIN, 1.0 - LOGIT_MARGIN)
        drawn.append(x)
        ax.plot(x, gap[order], marker="o", markersize=3.5, lw=1.8, color=colors[name], label=name)
        if np.any(high > low):
            ax.fill_between(x, low[order], high[order], color=colors[name], alpha=0.15, lw=0)
            ax.plot(x, low[order], color=colors[name], lw=0.6, alpha=0.7)
            ax.plot(x, high[order], color=colors[name], lw=0.6, alpha=0.7)
    ax.axhline(0.0, color="k", linestyle="--", linewidth=1)
    ax.set_xscale("logit")
    _confidence_ticks(ax, np.concatenate(drawn))
    ax.set_xlabel("confidence (logit scale)")
    ax.set_ylabel("confidence - accuracy\n(> 0 overconfident)")
    ax.set_title(title)
    fig.legend(loc="outside right upper", fontsize="small")
    return fig
