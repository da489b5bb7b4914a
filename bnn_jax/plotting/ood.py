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

__all__ = ["entropy_histograms", "inverse_ecdf_curves"]


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


def inverse_ecdf_curves(
    curves_in: Mapping[str, ECDFCurve],
    curves_out: Mapping[str, ECDFCurve],
    *,
    xlabel: str = "normalised entropy H / log C",
    title: str = "Fraction of inputs above an uncertainty threshold",
) -> Figure:
    """The source post's inverse-ECDF comparison: for each threshold, the fraction of inputs
    whose score exceeds it; solid lines = OOD inputs, dashed = in-domain, one colour per
    method. A good detector is high on OOD data (solid near 1) and low on in-domain data
    (dashed near 0) over a wide range of thresholds.

    Args:
      curves_in: ``{method name: ood.inverse_ecdf(in-domain scores, thresholds=...)}``.
      curves_out: ``{method name: ood.inverse_ecdf(OOD scores, thresholds=...)}``, same methods
        and order.
      xlabel: what the score is (default: the normalised entropy ``H / log C`` in ``[0, 1]``).
      title: axes title.

    Returns:
      A Figure with one axes.

    Example:
      >>> grid = jnp.linspace(0.0, 1.0, 101)
      >>> norm = lambda lp: uncertainty.entropy(lp) / jnp.log(lp.shape[-1])
      >>> fig = inverse_ecdf_curves(
      ...     {m: ood.inverse_ecdf(norm(lp), thresholds=grid) for m, lp in test_lp.items()},
      ...     {m: ood.inverse_ecdf(norm(lp), thresholds=grid) for m, lp in ood_lp.items()})
    """
    curves_in = _common.check_mapping("curves_in", curves_in)
    curves_out = _common.check_mapping("curves_out", curves_out)
    _common.check_same_keys("curves_out", curves_out, "curves_in", curves_in)
    drawn = {
        name: [
            _curve(f"curves_{which}[{name!r}]", curves[name])
            for which, curves in (("in", curves_in), ("out", curves_out))
        ]
        for name in curves_in
    }
    colors = _common.method_colors(list(drawn))
    fig, ax = plt.subplots(figsize=(6.5, 4.2), layout="constrained")
    for name, (inside, outside) in drawn.items():
        ax.step(*outside, where="post", color=colors[name], linestyle="-", label=name)
        ax.step(*inside, where="post", color=colors[name], linestyle="--")
    handles, labels = ax.get_legend_handles_labels()
    handles += [
        Line2D([], [], color="0.3", linestyle="-"),
        Line2D([], [], color="0.3", linestyle="--"),
    ]
    labels += ["OOD", "in-domain"]
    ax.legend(handles, labels, loc="best", fontsize="small")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction of inputs above the threshold")
    ax.set_title(title)
    return fig
