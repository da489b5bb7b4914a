"""Figures of the post's section 1.3: curvature matrices and their approximations as heatmaps, and
the Kronecker product drawn block by block."""

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import SymLogNorm, to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from bnn_jax.plotting import _common

__all__ = ["curvature_structures", "kronecker_product", "relative_error"]

_MATRIX_CMAP = "RdBu_r"


def relative_error(approximation, reference) -> float:
    """The relative Frobenius error ``||M - G||_F / ||G||_F`` of ``M`` against ``G``."""
    approximation = _common.as_array("approximation", approximation, ndim=2)
    reference = _common.as_array("reference", reference, ndim=2)
    if approximation.shape != reference.shape:
        raise ValueError(
            f"approximation: expected the shape of reference {reference.shape}, "
            f"got {approximation.shape}"
        )
    norm = np.linalg.norm(reference)
    if norm == 0:
        raise ValueError("reference: expected a non-zero matrix")
    return float(np.linalg.norm(approximation - reference) / norm)


def curvature_structures(
    matrices: Mapping[str, object],
    *,
    boundaries: Sequence[int] = (),
    linear_fraction: float = 1e-2,
    title: str | None = None,
) -> Figure:
    """Curvature matrices side by side as heatmaps on one colour scale, the first the reference.

    Every panel after the first is titled with its relative Frobenius error to the first,
    ``||M - G||_F / ||G||_F``. The colour scale is symmetric about 0 (red positive, blue
    negative) and logarithmic beyond ``linear_fraction * max |G|`` (``SymLogNorm``), so the
    small off-diagonal entries a diagonal approximation drops stay visible next to the large
    diagonal ones; zeros are white. Thin lines at ``boundaries`` mark the layer blocks.

    Args:
      matrices: ``{panel title: [P, P] matrix}``, the reference (e.g. the exact GGN) first.
      boundaries: indices where a new layer's parameters start (lines between blocks).
      linear_fraction: the linear range of the colour scale as a fraction of ``max |G|``, in
        ``(0, 1]``.
      title: figure title.

    Returns:
      A Figure with one axes per matrix and one colour bar.

    Example:
      >>> fig = curvature_structures({"exact GGN": g, "diagonal": np.diag(np.diag(g))},
      ...                            boundaries=[25])
    """
    matrices = _common.check_mapping("matrices", matrices)
    arrays = {
        name: _common.as_array(f"matrices[{name!r}]", m, ndim=2) for name, m in matrices.items()
    }
    reference = next(iter(arrays.values()))
    size = reference.shape[0]
    for name, array in arrays.items():
        if array.shape != (size, size):
            raise ValueError(
                f"matrices[{name!r}]: expected shape {(size, size)}, got {array.shape}"
            )
    if not 0.0 < linear_fraction <= 1.0:
        raise ValueError(f"linear_fraction: expected a value in (0, 1], got {linear_fraction!r}")
    boundaries = [int(b) for b in boundaries]
    if any(not 0 < b < size for b in boundaries):
        raise ValueError(f"boundaries: expected indices in (0, {size}), got {boundaries}")
    top = float(max(np.abs(a).max() for a in arrays.values())) or 1.0
    norm = SymLogNorm(linthresh=linear_fraction * top, vmin=-top, vmax=top, base=10)

    fig, axes = _common.panel_grid(len(arrays), ncols=2, panel_size=(3.3, 3.5))
    for k, (ax, (name, array)) in enumerate(zip(axes, arrays.items(), strict=True)):
        image = ax.imshow(array, cmap=_MATRIX_CMAP, norm=norm, interpolation="nearest")
        for b in boundaries:
            ax.axhline(b - 0.5, color="k", linewidth=1.2)
            ax.axvline(b - 0.5, color="k", linewidth=1.2)
        if k == 0:
            ax.set_title(f"{name}\n({size} x {size})")
        else:
            ax.set_title(f"{name}\nrelative error {relative_error(array, reference):.2f}")
        ax.set_xlabel("parameter index")
        ax.set_ylabel("parameter index")
    decades = 10.0 ** np.arange(np.ceil(np.log10(norm.linthresh)), np.log10(top) + 1e-9)
    ticks = [*(-decades[::-1]), 0.0, *decades]
    fig.colorbar(
        image, ax=axes, label="curvature entry (symmetric log scale)", shrink=0.8, ticks=ticks
    )
    if title is not None:
        fig.suptitle(title)
    return fig


def _cells(ax, values: np.ndarray, origin: tuple[float, float], colors, fmt: str) -> None:
    """Unit squares at ``origin`` (top-left, y growing downwards), filled and labelled."""
    rows, cols = values.shape
    for i in range(rows):
        for j in range(cols):
            x, y = origin[0] + j, origin[1] + i
            ax.add_patch(Rectangle((x, y), 1, 1, facecolor=colors[i][j], edgecolor="k", lw=0.8))
            ax.text(x + 0.5, y + 0.5, format(values[i, j], fmt), ha="center", va="center")


def kronecker_product(a, b, *, fmt: str = "g") -> Figure:
    """The Kronecker product ``A ⊗ B`` drawn as the post explains it: each entry ``a_ij`` of
    ``A`` gets its own colour, ``B``'s entries are grey, and block ``(i, j)`` of the result is
    ``a_ij B`` in ``a_ij``'s colour, placed where ``a_ij`` sits in ``A``. For a ``2 x 2`` A and
    B, a ``4 x 4`` matrix of 16 entries is stored as ``4 + 4 = 8`` numbers.

    Args:
      a: ``[m, n]`` matrix (at most 4 x 4 to stay readable).
      b: ``[p, q]`` matrix (at most 4 x 4).
      fmt: format of the printed entries.

    Returns:
      A Figure with one axes: ``A``, ``B`` and ``A ⊗ B`` from left to right.
    """
    a, b = _common.as_array("a", a, ndim=2), _common.as_array("b", b, ndim=2)
    for name, array in (("a", a), ("b", b)):
        if max(array.shape) > 4:
            raise ValueError(f"{name}: expected at most 4 x 4 entries, got shape {array.shape}")
    (m, n), (p, q) = a.shape, b.shape
    palette = _common.class_colors(m * n)
    tint = lambda c, alpha: to_rgba(c, alpha)
    a_colors = [[tint(palette[i * n + j], 0.75) for j in range(n)] for i in range(m)]
    grey = [["0.8"] * q for _ in range(p)]
    product = np.kron(a, b)
    block_colors = [
        [tint(palette[(i // p) * n + j // q], 0.45) for j in range(n * q)] for i in range(m * p)
    ]

    height = max(m, p, m * p)
    width = n + q + n * q + 4
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * width, 0.9 + 0.75 * height), layout="constrained")
    top = lambda rows: (height - rows) / 2
    x_b, x_out = n + 1.5, n + q + 3
    _cells(ax, a, (0, top(m)), a_colors, fmt)
    _cells(ax, b, (x_b, top(p)), grey, fmt)
    _cells(ax, product, (x_out, top(m * p)), block_colors, fmt)
    for i in range(m):  # thick outlines around the blocks a_ij B
        for j in range(n):
            corner = (x_out + j * q, top(m * p) + i * p)
            ax.add_patch(Rectangle(corner, q, p, fill=False, edgecolor="k", lw=2.2))
    ax.text(n + 0.75, height / 2, "⊗", ha="center", va="center", fontsize="xx-large")
    ax.text(x_b + q + 0.75, height / 2, "=", ha="center", va="center", fontsize="xx-large")
    for label, x, rows, cols in (
        ("A", 0, m, n),
        ("B", x_b, p, q),
        ("A ⊗ B: block (i, j) = a_ij B", x_out, m * p, n * q),
    ):
        ax.text(x + cols / 2, top(rows) - 0.25, label, ha="center", va="bottom")
    ax.set_xlim(-0.3, width - 0.7)
    ax.set_ylim(height + 0.3, -1.0)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(f"Kronecker product: {m * n} + {p * q} numbers store {m * n * p * q}")
    return fig
