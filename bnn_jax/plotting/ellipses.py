"""Two-dimensional Gaussians as ellipses: the one-standard-deviation ellipse of a covariance
and the post's N/tau figure (``posterior_ellipses``)."""

from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse

from bnn_jax.plotting import _common

__all__ = ["ellipse_axes", "posterior_ellipses"]


def ellipse_axes(covariance) -> tuple[float, float, float]:
    """``(major, minor, angle)`` of the one-standard-deviation ellipse of a ``2 x 2``
    covariance: the square roots of its eigenvalues and the major axis' angle in degrees."""
    covariance = _common.as_array("covariance", covariance, ndim=2)
    if covariance.shape != (2, 2) or not np.allclose(covariance, covariance.T):
        raise ValueError(f"covariance: expected a symmetric 2 x 2 matrix, got {covariance!r}")
    values, vectors = np.linalg.eigh(covariance)
    if values[0] <= 0:
        raise ValueError(f"covariance: expected a positive definite matrix, got {covariance!r}")
    angle = float(np.degrees(np.arctan2(vectors[1, 1], vectors[0, 1])))
    return float(np.sqrt(values[1])), float(np.sqrt(values[0])), angle


def posterior_ellipses(
    panels: Mapping[str, Mapping[str, object]],
    *,
    xlabel: str = "direction 1",
    ylabel: str = "direction 2",
    title: str | None = None,
) -> Figure:
    """Two-dimensional Gaussians as their one-standard-deviation ellipses, centred at 0, one
    panel per group on shared, equal axes (e.g. the post's N/tau figure: one panel varying
    ``N``, one varying ``tau``). Each ellipse's legend entry gives its axis ratio.

    Args:
      panels: ``{panel title: {label: [2, 2] covariance}}``.
      xlabel, ylabel: axis labels (the plane's coordinates).
      title: figure title.

    Returns:
      A Figure with one axes per panel.
    """
    panels = _common.check_mapping("panels", panels)
    shapes = {
        name: {
            label: ellipse_axes(_common.as_array(f"panels[{name!r}][{label!r}]", cov, ndim=2))
            for label, cov in _common.check_mapping(f"panels[{name!r}]", group).items()
        }
        for name, group in panels.items()
    }
    extent = 1.1 * max(major for group in shapes.values() for major, _, _ in group.values())
    fig, axes = _common.panel_grid(
        len(shapes), ncols=2, panel_size=(3.6, 3.9), sharex=True, sharey=True
    )
    for ax, (name, group) in zip(axes, shapes.items(), strict=True):
        colors = _common.method_colors(list(group))
        for label, (major, minor, angle) in group.items():
            ax.add_patch(
                Ellipse(
                    (0.0, 0.0),
                    2 * major,
                    2 * minor,
                    angle=angle,
                    fill=False,
                    lw=1.8,
                    color=colors[label],
                    label=f"{label}: axes {major / minor:.1f} : 1",
                )
            )
        ax.plot(0.0, 0.0, marker="+", color="k", linestyle="none")
        ax.set_xlim(-extent, extent)
        ax.set_ylim(-extent, extent)
        ax.set_aspect("equal")
        ax.set_title(name)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), fontsize="small")
    if title is not None:
        fig.suptitle(title)
    return fig
