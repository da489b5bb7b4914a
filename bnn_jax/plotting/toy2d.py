"""Figures of the 2-D toy study beyond the notebook's maps: the data draws, attack sweeps with
intervals, far-field confidence maps and learned dropout rates over training.

Every function returns a ``matplotlib.figure.Figure`` (see :mod:`bnn_jax.plotting`).
"""

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from bnn_jax.plotting import _common

__all__ = ["confidence_maps", "data_draws", "rate_curves", "sweep_bands"]


def data_draws(draws: Sequence[tuple[object, object, str]]) -> Figure:
    """The training points of each data draw in their class colours, one panel per draw.

    Args:
      draws: ``(x [n, 2], y [n], title)`` per draw.

    Returns:
      A Figure with one axes per draw.
    """
    if not draws:
        raise ValueError("draws: expected at least one (x, y, title)")
    fig, axes = _common.panel_grid(len(draws), ncols=3, panel_size=(3.6, 3.4))
    for ax, (x, y, title) in zip(axes, draws, strict=True):
        x, y = _common.check_points(x, y)
        _common.scatter_points(ax, x, y, int(y.max()) + 1, legend=ax is axes[0])
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xlabel("$x_1$")
        ax.set_ylabel("$x_2$")
        ax.set_title(title, fontsize="medium")
    return fig


def sweep_bands(
    eps,
    panels: Mapping[str, Mapping[str, object]],
    *,
    marks: Mapping[str, float] | None = None,
    xlabel: str = "attack radius ε (L2)",
    ylabel: str = "accuracy",
) -> Figure:
    """A metric against the attack radius, one panel per attack, one line per method with its
    interval as a band, and a dashed vertical line at each panel's marked radius.

    Args:
      eps: ``[E]`` radii.
      panels: ``{panel title: {method: [3, E] (mean, low, high)}}``; every panel lists the same
        methods (a band with NaN bounds is not drawn).
      marks: ``{panel title: radius}`` to mark (e.g. the notebook's eps).
      xlabel, ylabel: axis labels.
    """
    eps = _common.as_array("eps", eps, ndim=1)
    panels = _common.check_mapping("panels", panels)
    first = next(iter(panels))
    methods = _common.check_mapping(f"panels[{first!r}]", panels[first])
    colors = _common.method_colors(list(methods))
    fig, axes = _common.panel_grid(len(panels), ncols=2, panel_size=(4.8, 3.6), sharey=True)
    for ax, (title, lines) in zip(axes, panels.items(), strict=True):
        lines = _common.check_mapping(f"panels[{title!r}]", lines)
        _common.check_same_keys(f"panels[{title!r}]", lines, f"panels[{first!r}]", methods)
        for method, values in lines.items():
            values = _common.as_array(f"panels[{title!r}][{method!r}]", values, finite=False)
            if values.shape != (3, eps.size) or not np.all(np.isfinite(values[0])):
                raise ValueError(
                    f"panels[{title!r}][{method!r}]: expected finite means and shape "
                    f"(3, {eps.size}), got {values.shape}"
                )
            ax.plot(eps, values[0], marker="o", markersize=3, color=colors[method], label=method)
            if np.all(np.isfinite(values[1:])):
                ax.fill_between(eps, values[1], values[2], color=colors[method], alpha=0.1)
        if marks and title in marks:
            ax.axvline(marks[title], color="k", linestyle="--", linewidth=0.8)
            ax.annotate(
                f"notebook ε = {marks[title]:g}",
                (marks[title], 0.02),
                xycoords=("data", "axes fraction"),
                xytext=(3, 0),
                textcoords="offset points",
                fontsize="small",
            )
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(ylabel)
    fig.legend(
        *axes[0].get_legend_handles_labels(),
        loc="outside right center",
        fontsize="small",
    )
    return fig


def confidence_maps(xx, yy, x, y, max_probs: Mapping[str, object], *, radius: float) -> Figure:
    """The maximum predicted probability of each method on a wide grid, one panel per method
    on one colour scale ``[1 / C, 1]``, with the training points and the circle of ``radius``
    on which the far-field confidence is averaged.

    Args:
      xx, yy: the grid, ``[H, W]`` each.
      x, y: training points ``[n, 2]`` and labels ``[n]``.
      max_probs: ``{method: [H * W] or [H, W]}`` maximum class probability.
      radius: the far circle's radius (> 0).
    """
    xx, yy = _common.check_grid(xx, yy)
    x, y = _common.check_points(x, y)
    max_probs = _common.check_mapping("max_probs", max_probs)
    if not radius > 0:
        raise ValueError(f"radius: expected a number > 0, got {radius!r}")
    num_classes = int(y.max()) + 1
    levels = _common.levels(1.0 / num_classes, 1.0, 11)
    fig, axes = _common.panel_grid(len(max_probs), ncols=4, panel_size=(3.2, 3.0))
    for ax, (method, field) in zip(axes, max_probs.items(), strict=True):
        field = _common.grid_field(f"max_probs[{method!r}]", field, xx.shape)
        filled = ax.contourf(xx, yy, np.clip(field, levels[0], 1.0), levels=levels, cmap="viridis")
        ax.scatter(x[:, 0], x[:, 1], s=2, c="w", linewidths=0)
        ax.add_patch(Circle((0.0, 0.0), radius, fill=False, color="r", linewidth=1.0))
        ax.set_aspect("equal")
        ax.set_title(method, fontsize="medium")
        ax.set_xticks([-radius, 0, radius])
        ax.set_yticks([-radius, 0, radius])
    _common.colorbar(fig, filled, axes, "max probability", shrink=0.8)
    return fig


def rate_curves(rates: Mapping[str, Mapping[str, object]]) -> Figure:
    """Learned dropout rates against the epoch: one panel per run, one line per layer.

    Args:
      rates: ``{run: {layer: [epochs] rates}}``.
    """
    rates = _common.check_mapping("rates", rates)
    fig, axes = _common.panel_grid(len(rates), ncols=2, panel_size=(4.2, 3.0), sharey=True)
    for ax, (run, layers) in zip(axes, rates.items(), strict=True):
        for layer, values in _common.check_mapping(f"rates[{run!r}]", layers).items():
            values = _common.as_array(f"rates[{run!r}][{layer!r}]", values, ndim=1)
            ax.plot(np.arange(1, values.size + 1), values, label=layer)
        ax.set_title(run, fontsize="medium")
        ax.set_xlabel("epoch")
        ax.set_ylim(0, 0.55)
        ax.axhline(0.5, color="k", linestyle=":", linewidth=0.8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="center right")
    axes[0].set_ylabel("dropout rate p")
    plt.setp(axes[1:], ylabel="")
    return fig
