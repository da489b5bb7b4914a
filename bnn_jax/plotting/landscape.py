"""Figures of the loss-landscape study: 1-D curves, 2-D surfaces, exp(-loss) vs Gaussians.

Inputs come from :mod:`bnn_jax.landscape`: step sizes ``alphas [A]`` (and ``betas [B]``) and
values on the grid in ``"ij"`` indexing, ``values[i, j]`` at ``(alphas[i], betas[j])``; the
functions transpose for matplotlib themselves.
"""

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Ellipse
from matplotlib.ticker import MaxNLocator

from bnn_jax.plotting import _common
from bnn_jax.plotting.ellipses import ellipse_axes

__all__ = ["gaussian_comparison", "loss_curves", "loss_surface"]

_LOSS_CMAP = "viridis"


def _surface(name: str, values, alphas: np.ndarray, betas: np.ndarray) -> np.ndarray:
    array = _common.as_array(name, values, ndim=2)
    expected = (alphas.shape[0], betas.shape[0])
    if array.shape != expected:
        raise ValueError(f"{name}: expected shape {expected} (alphas x betas), got {array.shape}")
    return array


def _line_levels(values: np.ndarray, num: int) -> np.ndarray | None:
    """Round contour levels strictly inside the range of ``values`` (None if it is flat)."""
    low, high = float(values.min()), float(values.max())
    if not high > low:
        return None
    ticks = MaxNLocator(num).tick_values(low, high)
    inside = ticks[(ticks > low) & (ticks < high)]
    return inside if inside.size else None


def _geometric_levels(values: np.ndarray, sign: float, num: int) -> np.ndarray | None:
    """``num`` distinct levels spaced geometrically away from the minimum (``sign = 1``) or the
    maximum (``sign = -1``) of ``values``, strictly inside their range (None if flat)."""
    low, high = float(values.min()), float(values.max())
    if not high > low:
        return None
    steps = (high - low) * np.geomspace(3e-3, 0.9, num)
    found = low + steps if sign > 0 else high - steps[::-1]
    found = np.unique(np.asarray([float(f"{v:.3g}") for v in found]))
    inside = found[(found > low) & (found < high)]
    return inside if inside.size else None


def loss_curves(
    alphas,
    losses,
    *,
    accuracies=None,
    labels: Sequence[str] | None = None,
    title: str = "Loss along random directions",
) -> Figure:
    """The loss along one or several directions, ``loss(w + a d_k)`` against ``a``.

    Args:
      alphas: ``[A]`` step sizes (``landscape.slice_1d``'s grid).
      losses: ``[A]`` or ``[D, A]`` losses, one row per direction.
      accuracies: optional accuracies of the same shape, drawn dashed on a right-hand axis.
      labels: ``D`` legend labels; default ``"direction 1"``, ...
      title: axes title.

    Returns:
      A Figure with one axes (two with ``accuracies``).
    """
    alphas = _common.as_array("alphas", alphas, ndim=1)
    curves = _common.as_array("losses", losses)
    curves = curves[None] if curves.ndim == 1 else curves
    if curves.ndim != 2 or curves.shape[1] != alphas.shape[0]:
        raise ValueError(
            f"losses: expected shape ({alphas.shape[0]},) or (D, {alphas.shape[0]}), "
            f"got {np.shape(losses)}"
        )
    labels = [f"direction {k + 1}" for k in range(len(curves))] if labels is None else labels
    if len(labels) != len(curves):
        raise ValueError(f"labels: expected {len(curves)} labels, got {len(labels)}")
    if accuracies is not None:
        accuracies = _common.as_array("accuracies", accuracies).reshape(-1, alphas.shape[0])
        if accuracies.shape != curves.shape:
            raise ValueError(
                f"accuracies: expected the shape of losses {np.shape(losses)}, "
                f"got {np.shape(accuracies)}"
            )

    colors = list(_common.method_colors(list(labels)).values())
    fig, ax = plt.subplots(figsize=(6.0, 4.0), layout="constrained")
    for curve, label, color in zip(curves, labels, colors, strict=True):
        ax.plot(alphas, curve, color=color, label=label)
    ax.axvline(0.0, color="0.6", linestyle=":", linewidth=1)
    ax.set_xlabel("step along the direction")
    ax.set_ylabel("loss")
    ax.set_title(title)
    handles, names = ax.get_legend_handles_labels()
    if accuracies is not None:
        right = ax.twinx()
        for accuracy, color in zip(accuracies, colors, strict=True):
            right.plot(alphas, accuracy, color=color, linestyle="--")
        right.set_ylabel("accuracy (dashed)")
        handles.append(Line2D([], [], color="0.3", linestyle="--"))
        names.append("accuracy")
    fig.legend(
        handles, names, loc="outside lower center", ncols=min(len(names), 4), fontsize="small"
    )
    return fig


def loss_surface(
    alphas,
    betas,
    loss,
    *,
    accuracy=None,
    three_d: bool = False,
    num_levels: int = 20,
    title: str = "Loss landscape",
    levels: str = "from_minimum",
    xlabel: str = "step along direction 1",
    ylabel: str = "step along direction 2",
) -> Figure:
    """The loss on a plane through the trained weights, with loss and accuracy contour lines.

    As filled contours (default) with white loss contour lines and, if given, orange dashed
    accuracy contour lines, labelled with their values (the legend below the axes); or, with
    ``three_d=True``, as a 3-D surface with the contour lines projected onto the floor, as in
    the source post.

    With ``levels="from_minimum"`` (default) the levels start at the minimum and are spaced
    geometrically away from it (colours at ``min + (max - min) q`` for ``q`` log-spaced in
    ``[1e-3, 1]``, six lines for ``q`` in ``[3e-3, 0.9]``; accuracy lines likewise down from
    the maximum accuracy), so the low-loss, high-accuracy region around the trained weights,
    where the post compares loss and accuracy contours, gets most of the lines instead of the
    steep walls; ``levels="linear"`` spaces them evenly.

    Args:
      alphas: ``[A]`` steps along the first direction.
      betas: ``[B]`` steps along the second direction.
      loss: ``[A, B]`` losses (``landscape.slice_2d``).
      accuracy: optional ``[A, B]`` accuracies on the same grid.
      three_d: draw a 3-D surface instead of filled contours.
      num_levels: number of colour levels, >= 2.
      title: axes title.
      levels: ``"from_minimum"`` or ``"linear"`` spacing of the levels (see above).
      xlabel, ylabel: axis labels.

    Returns:
      A Figure with the plot axes and its colour bar.
    """
    alphas = _common.as_array("alphas", alphas, ndim=1)
    betas = _common.as_array("betas", betas, ndim=1)
    loss = _surface("loss", loss, alphas, betas)
    accuracy = None if accuracy is None else _surface("accuracy", accuracy, alphas, betas)
    num_levels = _common.check_positive_int("num_levels", num_levels, minimum=2)
    if levels not in ("from_minimum", "linear"):
        raise ValueError(f"levels: expected 'from_minimum' or 'linear', got {levels!r}")
    grid_a, grid_b = np.meshgrid(alphas, betas)  # [B, A]: plot the transposed values
    geometric = levels == "from_minimum"
    if geometric and np.ptp(loss) > 0:
        fill_levels = loss.min() + np.ptp(loss) * np.geomspace(1e-3, 1.0, num_levels)
        fill_levels = np.concatenate([[loss.min()], fill_levels])
    else:
        fill_levels = _common.levels(loss.min(), loss.max(), num_levels)
    lines = [(loss, "w" if not three_d else "k", "solid", "loss contours", 1.0)]
    if accuracy is not None:
        color = "tab:orange" if not three_d else "tab:red"
        lines.append((accuracy, color, "dashed", "accuracy contours", -1.0))

    if three_d:
        fig, ax = plt.subplots(
            figsize=(6.5, 5.0), subplot_kw={"projection": "3d"}, layout="constrained"
        )
        mappable = ax.plot_surface(
            grid_a, grid_b, loss.T, cmap=_LOSS_CMAP, linewidth=0, antialiased=True, alpha=0.9
        )
        floor = loss.min() - 0.3 * (np.ptp(loss) or 1.0)
        ax.set_zlim(floor, loss.max())
        ax.set_zlabel("loss")
        draw = dict(zdir="z", offset=floor)
    else:
        fig, ax = plt.subplots(figsize=(6.0, 5.0), layout="constrained")
        mappable = ax.contourf(grid_a, grid_b, loss.T, levels=fill_levels, cmap=_LOSS_CMAP)
        ax.plot(0.0, 0.0, marker="x", color="r", linestyle="none")
        draw = {}
    handles = []
    for values, color, style, label, sign in lines:
        line_levels = _geometric_levels(values, sign, 6) if geometric else _line_levels(values, 8)
        if line_levels is None:
            continue
        contours = ax.contour(
            grid_a,
            grid_b,
            values.T,
            levels=line_levels,
            colors=color,
            linestyles=style,
            linewidths=0.8,
            **draw,
        )
        if not three_d:  # every other level labelled: the innermost ones lie close together
            ax.clabel(contours, contours.levels[::-2], fontsize="x-small", fmt="%.3g")
        handles.append(Line2D([], [], color=color, linestyle=style, label=label))
    if handles:
        fig.legend(
            handles=handles,
            loc="outside lower center",
            ncols=2,
            fontsize="small",
            facecolor="0.55" if not three_d else "w",
        )
    if geometric and not three_d:
        # levels crowd near the minimum: uniform colour-bar spacing, a tick every few levels
        bar = fig.colorbar(mappable, ax=ax, label="loss", spacing="uniform")
        ticks = fill_levels[:: max(1, len(fill_levels) // 6)]
        bar.set_ticks(ticks, labels=[f"{t:.3g}" for t in ticks])
    else:
        _common.colorbar(fig, mappable, ax, "loss", shrink=0.8 if three_d else 1.0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return fig


def gaussian_comparison(
    alphas,
    betas,
    panels: Mapping[str, object],
    *,
    title: str = "exp(-loss) and Gaussians on the same plane",
    ncols: int | None = None,
    xlabel: str = "step along direction 1",
    ylabel: str = "step along direction 2",
    covariances: Mapping[str, object] | None = None,
    means: Mapping[str, object] | None = None,
) -> Figure:
    """``exp(-loss)`` next to Gaussians on the same plane, on one shared colour scale.

    The first panel is the reference (``exp(-loss)``); its contour lines are drawn in white on
    every other panel, so each Gaussian (the least-squares fit, the DIAG and KFAC posteriors'
    slices from ``landscape.plane_gaussian``) can be compared with it directly.

    Args:
      alphas: ``[A]`` steps along the first direction.
      betas: ``[B]`` steps along the second direction.
      panels: ``{panel title: [A, B] values}``, reference first, e.g.
        ``{"exp(-loss)": ..., "least-squares Gaussian": ..., "KFAC": ..., "DIAG": ...}``.
      title: figure title.
      ncols: panels per row (default: all in one row); e.g. 3 keeps five panels legible at
        page width.
      xlabel, ylabel: axis labels.
      covariances: optional ``{panel title: 2 x 2 covariance}`` of the Gaussians: each such
        panel gets its one-standard-deviation ellipse (red, dashed) and its standard
        deviations written in a corner, so a Gaussian far wider or narrower than the plotted
        range is still told apart from the others.
      means: optional ``{panel title: [2] mean}`` of those Gaussians (default: the origin).

    Returns:
      A Figure with one axes per panel and one colour bar.
    """
    alphas = _common.as_array("alphas", alphas, ndim=1)
    betas = _common.as_array("betas", betas, ndim=1)
    panels = _common.check_mapping("panels", panels)
    covariances = {} if covariances is None else _common.check_mapping("covariances", covariances)
    means = {} if means is None else _common.check_mapping("means", means)
    for arg, given in (("covariances", covariances), ("means", means)):
        unknown = sorted(set(given) - set(panels))
        if unknown:
            raise ValueError(f"{arg}: expected keys of panels, got unknown {unknown}")
    values = {name: _surface(f"panels[{name!r}]", v, alphas, betas) for name, v in panels.items()}
    stacked = np.stack(list(values.values()))
    fill_levels = _common.levels(min(0.0, stacked.min()), stacked.max())
    reference = next(iter(values.values()))
    reference_levels = _line_levels(reference, 6)
    grid_a, grid_b = np.meshgrid(alphas, betas)

    ncols = len(values) if ncols is None else _common.check_positive_int("ncols", ncols)
    fig, axes = _common.panel_grid(
        len(values), ncols=ncols, panel_size=(3.3, 3.1), sharex=True, sharey=True
    )
    for k, (ax, (name, field)) in enumerate(zip(axes, values.items(), strict=True)):
        filled = ax.contourf(grid_a, grid_b, field.T, levels=fill_levels, cmap=_LOSS_CMAP)
        if k > 0 and reference_levels is not None:
            ax.contour(
                grid_a,
                grid_b,
                reference.T,
                levels=reference_levels,
                colors="w",
                linewidths=0.7,
            )
        if name in covariances:
            _sd_ellipse(ax, covariances[name], means.get(name, np.zeros(2)), alphas, betas)
        ax.set_title(name, fontsize="medium")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    _common.colorbar(fig, filled, axes, "value")
    if covariances:
        handle = Line2D([], [], color="tab:red", linestyle="--", label="1-sd ellipse")
        fig.legend(handles=[handle], loc="outside lower center", fontsize="small")
    fig.suptitle(title)
    return fig


def _sd_ellipse(ax, covariance, mean, alphas: np.ndarray, betas: np.ndarray) -> None:
    """The one-standard-deviation ellipse of a Gaussian and its standard deviations (noting
    when the ellipse reaches past the plotted range)."""
    covariance = _common.as_array("covariances", covariance, ndim=2)
    mean = _common.as_array("means", mean, ndim=1)
    if mean.shape != (2,):
        raise ValueError(f"means: expected 2 coordinates, got shape {mean.shape}")
    major, minor, angle = ellipse_axes(covariance)
    ax.add_patch(
        Ellipse(
            tuple(mean),
            2 * major,
            2 * minor,
            angle=angle,
            fill=False,
            edgecolor="tab:red",
            linestyle="--",
            linewidth=1.2,
        )
    )
    sd = np.sqrt(np.diag(covariance))  # half-widths of the ellipse's bounding box
    beyond = (
        mean[0] - sd[0] < alphas.min()
        or mean[0] + sd[0] > alphas.max()
        or mean[1] - sd[1] < betas.min()
        or mean[1] + sd[1] > betas.max()
    )
    note = f"sd {sd[0]:.3g}, {sd[1]:.3g}" + (" (ellipse beyond the axes)" if beyond else "")
    ax.text(
        0.03,
        0.03,
        note,
        transform=ax.transAxes,
        fontsize="x-small",
        bbox={"facecolor": "w", "alpha": 0.8, "linewidth": 0},
    )
    ax.set_xlim(alphas.min(), alphas.max())
    ax.set_ylim(betas.min(), betas.max())
