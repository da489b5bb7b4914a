"""Adversarial-robustness figures: metrics against the attack's step size, one line per method."""

from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure

from bnn_jax.plotting import _common

__all__ = ["attack_sweeps"]


def attack_sweeps(
    eps,
    metrics: Mapping[str, Mapping[str, object]],
    *,
    xlabel: str = "step size ε",
    title: str | None = None,
) -> Figure:
    """Metrics of the attacked predictions against the step size, one panel per metric and one
    line per method (the same colour for a method in every panel), e.g. the source post's
    FGSM sweep of predictive entropy, with accuracy, NLL and ECE next to it.

    Args:
      eps: ``[E]`` step sizes of the sweep.
      metrics: ``{panel title: {method name: [E] values}}``, e.g.
        ``{"predictive entropy (nats)": {...}, "accuracy": {...}}``; every panel lists the
        same methods in the same order.
      xlabel: x-axis label.
      title: figure title.

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
    fig, axes = _common.panel_grid(len(panels), ncols=4, panel_size=(3.8, 3.2), sharex=True)
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
        ax.set_title(panel)
        ax.set_xlabel(xlabel)
    axes[0].legend(loc="best", fontsize="small")
    if title is not None:
        fig.suptitle(title)
    return fig
