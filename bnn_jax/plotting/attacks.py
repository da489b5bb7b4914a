"""Adversarial-robustness figures: metrics against the attack's step size, one line per method."""

from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bnn_jax.plotting import _common

__all__ = ["attack_sweeps"]


def attack_sweeps(
    eps,
    metrics: Mapping[str, Mapping[str, object]],
    *,
    xlabel: str = "step size ε",
    title: str | None = None,
    trim: bool = True,
) -> Figure:
    """Metrics of the attacked predictions against the step size, one panel per metric and one
    line per method (the same colour for a method in every panel), e.g. the source post's
    FGSM sweep of predictive entropy, with accuracy, NLL and ECE next to it.

    Include ``eps = 0`` (the clean inputs) in the sweep: the axis starts at 0 and a dotted line
    marks the clean point. With ``trim`` and two or more methods, the axis ends one step after
    the last ``eps`` at which the methods still differ (a spread of more than 1% of the panel's
    range in some panel), so strengths where every method has failed alike take no room; the
    title says where it was cut. The legend sits below the panels, outside the data.

    Args:
      eps: ``[E]`` step sizes of the sweep.
      metrics: ``{panel title: {method name: [E] values}}``, e.g.
        ``{"predictive entropy (nats)": {...}, "accuracy": {...}}``; every panel lists the
        same methods in the same order.
      xlabel: x-axis label.
      title: figure title.
      trim: end the axis where the methods stop differing (see above).

    Returns:
      A Figure with one axes per metric.

    Example:
      >>> fig = attack_sweeps(eps, {"entropy (nats)": entropies, "accuracy": accuracies})
    """
    eps = _common.as_array("eps", eps, ndim=1)
    metrics = _common.check_mapping("metrics", metrics)
    panels = list(metrics)
    methods = _common.check_mapping(f"metrics[{panels[0]!r}]", metrics[panels[0]])
    values = {}
    for panel in panels:
        lines = _common.check_mapping(f"metrics[{panel!r}]", metrics[panel])
        _common.check_same_keys(f"metrics[{panel!r}]", lines, f"metrics[{panels[0]!r}]", methods)
        values[panel] = {}
        for method, line in lines.items():
            array = _common.as_array(f"metrics[{panel!r}][{method!r}]", line, ndim=1)
            if array.shape != eps.shape:
                raise ValueError(
                    f"metrics[{panel!r}][{method!r}]: expected shape {eps.shape} to match eps, "
                    f"got {array.shape}"
                )
            values[panel][method] = array

    colors = _common.method_colors(list(methods))
    order = np.argsort(eps)
    end = (
        _last_differing(
            eps[order], [np.stack([v[order] for v in p.values()]) for p in values.values()]
        )
        if trim
        else len(eps) - 1
    )
    fig, axes = _common.panel_grid(len(panels), ncols=3, panel_size=(3.4, 3.0), sharex=True)
    for ax, panel in zip(axes, panels, strict=True):
        for method, line in values[panel].items():
            ax.plot(
                eps[order],
                line[order],
                marker="o",
                markersize=3,
                color=colors[method],
                label=method,
            )
        if np.any(eps == 0):
            ax.axvline(0.0, color="0.5", linestyle=":", linewidth=1)
        ax.set_title(panel)
        ax.set_xlabel(xlabel)
    sorted_eps = eps[order]
    low, high = min(0.0, float(sorted_eps[0])), float(sorted_eps[end])
    pad = 0.03 * ((high - low) or 1.0)
    axes[0].set_xlim(low - pad, high + pad)
    for ax in axes:  # y range of what is shown
        shown = [ln.get_ydata()[: end + 1] for ln in ax.lines if len(ln.get_ydata()) == len(eps)]
        ymin, ymax = float(np.min(shown)), float(np.max(shown))
        margin = 0.05 * ((ymax - ymin) or 1.0)
        ax.set_ylim(ymin - margin, ymax + margin)
    handles = [axes[0].lines[k] for k in range(len(methods))]
    handles.append(Line2D([], [], color="0.5", linestyle=":"))
    fig.legend(
        handles,
        [*methods, "clean inputs (ε = 0)"],
        loc="outside lower center",
        ncols=min(len(handles), 4),
        fontsize="small",
    )
    cut = f" (ε > {high:g} not shown: the methods no longer differ)" if end < len(eps) - 1 else ""
    if title is not None or cut:
        fig.suptitle((title or "") + ("\n" if title and cut else "") + cut.strip())
    return fig


def _last_differing(eps: np.ndarray, panels: list[np.ndarray]) -> int:
    """Index of the sorted ``eps`` to end the axis at: one after the last strength at which
    some panel's methods (rows of ``[M, E]``) spread by more than 1% of that panel's range."""
    if panels[0].shape[0] < 2:
        return len(eps) - 1
    last = 0
    for values in panels:
        spread = values.max(0) - values.min(0)
        scale = float(values.max() - values.min())
        differs = np.nonzero(spread > 0.01 * scale)[0] if scale > 0 else np.array([], int)
        if differs.size:
            last = max(last, int(differs[-1]))
    return min(last + 1, len(eps) - 1)
