"""Out-of-distribution figures: entropy histograms and inverse-ECDF curves (the source post's
section 2.2). Entropies are in nats (``uncertainty.predictive_entropy``); curves are the
:class:`bnn_jax.ood.ECDFCurve` of ``ood.inverse_ecdf``."""

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bnn_jax.ood import ECDFCurve
from bnn_jax.plotting import _common

__all__ = ["entropy_histograms", "family_inverse_ecdf", "inverse_ecdf_curves"]

_FRACTION_LABEL = "fraction of inputs with entropy above the value"


def entropy_histograms(
    entropy_in: Mapping[str, object],
    entropy_out: Mapping[str, object],
    *,
    num_classes: int | None = None,
    num_bins: int = 30,
    in_label: str = "in-domain",
    out_label: str = "OOD",
) -> Figure:
    """Overlaid histograms of the predictive entropy on in-domain and OOD inputs, one panel per
    method, on shared bins so the panels can be compared. A method that separates the two has
    little overlap.

    Args:
      entropy_in: ``{method name: [n_in] entropies of in-domain inputs}``.
      entropy_out: ``{method name: [n_out] entropies of OOD inputs}``, same methods and order.
      num_classes: if given, the x axis spans ``[0, log C]`` and ``log C`` is marked;
        otherwise it spans ``[0, largest entropy]``.
      num_bins: number of histogram bins, >= 1.
      in_label, out_label: legend labels.

    Returns:
      A Figure with one axes per method (densities, so data sets of different sizes compare).
    """
    entropy_in = _common.check_mapping("entropy_in", entropy_in)
    entropy_out = _common.check_mapping("entropy_out", entropy_out)
    _common.check_same_keys("entropy_out", entropy_out, "entropy_in", entropy_in)
    num_bins = _common.check_positive_int("num_bins", num_bins)
    values = {
        name: (
            _common.as_array(f"entropy_in[{name!r}]", entropy_in[name], ndim=1),
            _common.as_array(f"entropy_out[{name!r}]", entropy_out[name], ndim=1),
        )
        for name in entropy_in
    }
    if num_classes is not None:
        num_classes = _common.check_positive_int("num_classes", num_classes, minimum=2)
        top = float(np.log(num_classes))
    else:
        top = max(max(a.max(), b.max()) for a, b in values.values())
    edges = np.linspace(0.0, top if top > 0 else 1.0, num_bins + 1)

    fig, axes = _common.panel_grid(
        len(values), ncols=4, panel_size=(3.8, 3.0), sharex=True, sharey=True
    )
    for ax, (name, (inside, outside)) in zip(axes, values.items(), strict=True):
        # values a rounding error past the range land in the outer bins
        inside, outside = (np.clip(v, edges[0], edges[-1]) for v in (inside, outside))
        ax.hist(inside, bins=edges, density=True, alpha=0.55, color="tab:blue", label=in_label)
        ax.hist(outside, bins=edges, density=True, alpha=0.55, color="tab:orange", label=out_label)
        if num_classes is not None:
            ax.axvline(top, color="0.4", linestyle=":", linewidth=1, label="log C")
        ax.set_title(name)
        ax.set_xlabel("predictive entropy (nats)")
        ax.set_ylabel("density")
    axes[0].legend(loc="upper center", fontsize="small")
    return fig


def _curve(name: str, curve) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(curve, ECDFCurve):
        raise ValueError(f"{name}: expected an ood.ECDFCurve, got {type(curve).__name__}")
    threshold = _common.as_array(f"{name}.threshold", curve.threshold, ndim=1)
    fraction = _common.as_array(f"{name}.fraction", curve.fraction, ndim=1)
    if fraction.shape != threshold.shape:
        raise ValueError(
            f"{name}: expected fraction of the shape of threshold {threshold.shape}, "
            f"got {fraction.shape}"
        )
    return threshold, fraction


def _curves(curves_in, curves_out, name_in: str, name_out: str) -> dict:
    """``{name: (in-domain (threshold, fraction), OOD (threshold, fraction))}``."""
    curves_in = _common.check_mapping(name_in, curves_in)
    curves_out = _common.check_mapping(name_out, curves_out)
    _common.check_same_keys(name_out, curves_out, name_in, curves_in)
    return {
        name: (
            _curve(f"{name_in}[{name!r}]", curves_in[name]),
            _curve(f"{name_out}[{name!r}]", curves_out[name]),
        )
        for name in curves_in
    }


def _vertical_steps(threshold: np.ndarray, fraction: np.ndarray):
    """The step curve with the score on the vertical axis: ``fraction[i]`` holds for scores in
    ``[threshold[i], threshold[i + 1])``, so each step is a vertical segment at that fraction."""
    order = np.argsort(threshold, kind="stable")
    threshold, fraction = threshold[order], fraction[order]
    return np.repeat(fraction, 2)[:-1], np.repeat(threshold, 2)[1:]


def _draw(ax, drawn: dict, colors: dict, *, ylabel: str) -> None:
    """Solid OOD and dashed in-domain curves per entry, and the axis labels."""
    for name, (inside, outside) in drawn.items():
        ax.plot(*_vertical_steps(*outside), color=colors[name], linestyle="-", label=name)
        ax.plot(*_vertical_steps(*inside), color=colors[name], linestyle="--")
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel(_FRACTION_LABEL)
    ax.set_ylabel(ylabel)


def _legend(fig, ax, *, out_label: str, in_label: str) -> None:
    handles, labels = ax.get_legend_handles_labels()
    handles += [
        Line2D([], [], color="0.3", linestyle="-"),
        Line2D([], [], color="0.3", linestyle="--"),
    ]
    labels += [f"{out_label} (solid)", f"{in_label} (dashed)"]
    fig.legend(handles, labels, loc="outside right upper", fontsize="small")


def inverse_ecdf_curves(
    curves_in: Mapping[str, ECDFCurve],
    curves_out: Mapping[str, ECDFCurve],
    *,
    xlabel: str = "normalised entropy H / log C",
    title: str = "Fraction of inputs above an uncertainty threshold",
    in_label: str = "in-domain",
    out_label: str = "OOD",
) -> Figure:
    """The source post's inverse-ECDF comparison, in its orientation: the score (predictive
    entropy) on the vertical axis and, on the horizontal axis, the fraction of inputs whose
    score exceeds it (``ood.inverse_ecdf``); solid lines = OOD inputs, dashed = in-domain, one
    colour per method. A good detector keeps high entropy for most OOD inputs (solid curves
    far to the upper right) and low entropy for most in-domain inputs (dashed curves low).

    Args:
      curves_in: ``{method name: ood.inverse_ecdf(in-domain scores, thresholds=...)}``.
      curves_out: ``{method name: ood.inverse_ecdf(OOD scores, thresholds=...)}``, same methods
        and order.
      xlabel: what the score is, drawn on the VERTICAL axis (the name is kept from an earlier
        orientation; default the normalised entropy ``H / log C`` in ``[0, 1]``).
      title: axes title.
      in_label, out_label: legend names of the in-domain (dashed) and OOD (solid) inputs.

    Returns:
      A Figure with one axes and a legend to its right.

    Example:
      >>> grid = jnp.linspace(0.0, 1.0, 101)
      >>> norm = lambda lp: uncertainty.entropy(lp) / jnp.log(lp.shape[-1])
      >>> fig = inverse_ecdf_curves(
      ...     {m: ood.inverse_ecdf(norm(lp), thresholds=grid) for m, lp in test_lp.items()},
      ...     {m: ood.inverse_ecdf(norm(lp), thresholds=grid) for m, lp in ood_lp.items()})
    """
    drawn = _curves(curves_in, curves_out, "curves_in", "curves_out")
    colors = _common.method_colors(list(drawn))
    fig, ax = plt.subplots(figsize=(6.5, 4.2), layout="constrained")
    _draw(ax, drawn, colors, ylabel=xlabel)
    ax.set_title(title)
    _legend(fig, ax, out_label=out_label, in_label=in_label)
    return fig


def family_inverse_ecdf(
    curves_in: Mapping[str, Mapping[str, ECDFCurve]],
    curves_out: Mapping[str, Mapping[str, ECDFCurve]],
    *,
    score_label: str = "normalised entropy H / log C",
    in_label: str = "in-domain",
    out_label: str = "OOD",
    title: str | None = None,
) -> Figure:
    """The post's family view of OOD detection: one panel per method (e.g. MAP and a Laplace
    posterior side by side), one colour per family member (the same member keeps its colour in
    every panel), inverse ECDFs in :func:`inverse_ecdf_curves`' orientation (score vertical,
    fraction of inputs above it horizontal; solid OOD, dashed in-domain), on shared axes.

    Args:
      curves_in: ``{method: {member: ood.inverse_ecdf(in-domain scores)}}``.
      curves_out: ``{method: {member: ood.inverse_ecdf(OOD scores)}}``, same keys and order.
      score_label: what the score is (vertical axis).
      in_label, out_label: legend names of the in-domain and OOD inputs.
      title: figure title.

    Returns:
      A Figure with one axes per method and one legend for all.
    """
    methods_in = _common.check_mapping("curves_in", curves_in)
    methods_out = _common.check_mapping("curves_out", curves_out)
    _common.check_same_keys("curves_out", methods_out, "curves_in", methods_in)
    panels = {
        method: _curves(
            methods_in[method],
            methods_out[method],
            f"curves_in[{method!r}]",
            f"curves_out[{method!r}]",
        )
        for method in methods_in
    }
    members = list(dict.fromkeys(m for drawn in panels.values() for m in drawn))
    colors = _common.method_colors(members)
    fig, axes = _common.panel_grid(
        len(panels), ncols=3, panel_size=(3.6, 3.4), sharex=True, sharey=True
    )
    for ax, (method, drawn) in zip(axes, panels.items(), strict=True):
        _draw(ax, drawn, colors, ylabel=score_label)
        ax.set_title(method)
    for ax in axes:  # one shared label per direction, so long labels cannot collide
        ax.set_xlabel("")
        ax.set_ylabel("")
    fig.supxlabel(_FRACTION_LABEL, fontsize="medium")
    fig.supylabel(score_label, fontsize="medium")
    handles = [Line2D([], [], color=colors[m]) for m in members]
    handles += [Line2D([], [], color="0.3", linestyle=s) for s in ("-", "--")]
    labels = [*members, f"{out_label} (solid)", f"{in_label} (dashed)"]
    fig.legend(handles, labels, loc="outside right center", fontsize="small")
    if title is not None:
        fig.suptitle(title)
    return fig
