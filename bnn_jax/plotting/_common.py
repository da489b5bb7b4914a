"""Private helpers shared by the plotting modules: input checks, colours, levels."""

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.ticker import MaxNLocator

CLASS_CMAP = "tab10"
UNCERTAINTY_CMAP = "magma"
PROBABILITY_CMAP = "RdBu_r"


def as_array(name: str, values, *, ndim: int | None = None, finite: bool = True) -> np.ndarray:
    """``values`` as a float64 NumPy array, checked for its number of axes and finiteness."""
    array = np.asarray(values, dtype=np.float64)
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{name}: expected an array with {ndim} axes, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name}: expected a non-empty array, got shape {array.shape}")
    if finite and not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: expected finite values (no NaN or inf)")
    return array


def check_mapping(name: str, mapping) -> dict:
    """A non-empty ``{label: value}`` dict with string keys, in the caller's order."""
    if not isinstance(mapping, Mapping) or not mapping:
        raise ValueError(f"{name}: expected a non-empty mapping from names to values")
    for key in mapping:
        if not isinstance(key, str):
            raise ValueError(f"{name}: expected string keys, got {key!r}")
    return dict(mapping)


def check_same_keys(name: str, mapping: dict, reference_name: str, reference: dict) -> None:
    if list(mapping) != list(reference):
        raise ValueError(
            f"{name}: expected the keys of {reference_name} {list(reference)}, got {list(mapping)}"
        )


def check_grid(xx, yy) -> tuple[np.ndarray, np.ndarray]:
    """A ``np.meshgrid`` pair of equal 2-D shapes."""
    xx, yy = as_array("xx", xx, ndim=2), as_array("yy", yy, ndim=2)
    if xx.shape != yy.shape:
        raise ValueError(f"yy: expected the shape of xx {xx.shape}, got {yy.shape}")
    return xx, yy


def grid_field(name: str, values, grid_shape: tuple[int, int], *, trailing: tuple = ()):
    """Values on the grid, given as ``[H * W, *trailing]`` (flattened meshgrid order) or
    ``[H, W, *trailing]``; returned as ``[H, W, *trailing]``."""
    array = as_array(name, values)
    height, width = grid_shape
    for shape in ((height * width, *trailing), (height, width, *trailing)):
        if array.shape == shape:
            return array.reshape(height, width, *trailing)
    expected = (
        f"({height * width}, ...) or ({height}, {width}, ...)"
        if trailing
        else (f"({height * width},) or ({height}, {width})")
    )
    raise ValueError(f"{name}: expected shape {expected} to match the grid, got {array.shape}")


def check_points(x, y) -> tuple[np.ndarray, np.ndarray]:
    """Training inputs ``[n, 2]`` and integer labels ``[n]`` (>= 0)."""
    x = as_array("x", x, ndim=2)
    if x.shape[1] != 2:
        raise ValueError(f"x: expected 2-D inputs of shape [n, 2], got {x.shape}")
    labels = np.asarray(y)
    if labels.shape != (x.shape[0],):
        raise ValueError(f"y: expected shape ({x.shape[0]},) to match x, got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) or (labels.size and labels.min() < 0):
        raise ValueError("y: expected integer class labels >= 0")
    return x, labels


def check_log_probs(name: str, values, grid_shape: tuple[int, int]) -> np.ndarray:
    """Log-probabilities on the grid as ``[H, W, C]``, rows summing to 1 (within 1e-3)."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim not in (2, 3):
        raise ValueError(f"{name}: expected shape [H * W, C] or [H, W, C], got {array.shape}")
    field = grid_field(name, array, grid_shape, trailing=(array.shape[-1],))
    if np.isnan(field).any() or np.any(field == np.inf):
        raise ValueError(f"{name}: expected log-probabilities without NaN or +inf")
    if not np.allclose(np.exp(field).sum(-1), 1.0, atol=1e-3):
        raise ValueError(f"{name}: expected log-probabilities (pass jax.nn.log_softmax(logits))")
    return field


def check_positive_int(name: str, value, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def class_colors(num_classes: int) -> list:
    """One colour per class (``tab10``, cycling beyond ten classes)."""
    palette = plt.get_cmap(CLASS_CMAP).colors
    return [palette[c % len(palette)] for c in range(num_classes)]


def method_colors(names: Sequence[str]) -> dict[str, tuple]:
    """One colour per method in the given order, so figures drawn with the same method order
    use the same colours: ``tab10``, then ``tab20``'s lighter shades (distinct up to 20
    methods; the eleventh no longer repeats the first)."""
    tab20 = plt.get_cmap("tab20").colors
    palette = tab20[0::2] + tab20[1::2]  # tab20's dark half is tab10
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def levels(low: float, high: float, num: int = 21) -> np.ndarray:
    """``num`` increasing contour levels on ``[low, high]`` (widened if the range is empty)."""
    if not high > low:
        pad = max(abs(low), 1.0) * 1e-6
        low, high = low - pad, high + pad
    return np.linspace(low, high, num)


def colorbar(fig, mappable, ax, label: str, **kwargs):
    """A colour bar with a handful of round ticks (not one per contour level)."""
    return fig.colorbar(mappable, ax=ax, label=label, ticks=MaxNLocator(5), **kwargs)


def decision_regions(ax, xx, yy, predicted: np.ndarray, num_classes: int):
    """Filled regions of the predicted class, in the class colours."""
    cmap = ListedColormap(class_colors(num_classes))
    bounds = np.arange(num_classes + 1) - 0.5
    return ax.contourf(xx, yy, predicted, levels=bounds, cmap=cmap, alpha=0.35)


def scatter_points(ax, x: np.ndarray, y: np.ndarray, num_classes: int, *, legend: bool = False):
    """The training points in their class colours, black-edged; optionally with a legend."""
    colors = class_colors(max(num_classes, int(y.max()) + 1))
    for c in np.unique(y):
        ax.scatter(
            x[y == c, 0],
            x[y == c, 1],
            s=14,
            color=colors[c],
            edgecolors="k",
            linewidths=0.5,
            label=f"class {c}",
        )
    if legend:
        ax.legend(loc="upper right", fontsize="small", framealpha=0.8)


def panel_grid(num_panels: int, *, ncols: int, panel_size: tuple[float, float], **kwargs):
    """``plt.subplots`` with ``num_panels`` axes in rows of ``ncols``; unused axes removed.

    Returns ``(fig, axes)`` with ``axes`` a flat list of the ``num_panels`` axes.
    """
    ncols = min(ncols, num_panels)
    nrows = math.ceil(num_panels / ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(panel_size[0] * ncols, panel_size[1] * nrows),
        layout="constrained",
        squeeze=False,
        **kwargs,
    )
    flat = list(axes.flat)
    for ax in flat[num_panels:]:
        fig.delaxes(ax)
    return fig, flat[:num_panels]


def style_map(ax, xx, yy) -> None:
    ax.set_xlim(xx.min(), xx.max())
    ax.set_ylim(yy.min(), yy.max())
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
