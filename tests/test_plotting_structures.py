"""The curvature-structure heatmaps and the Kronecker-product drawing on tiny inputs."""

import io
import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from bnn_jax import plotting

pytestmark = pytest.mark.filterwarnings("error")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _render(fig) -> None:
    assert isinstance(fig, Figure)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig.savefig(io.BytesIO(), format="png", dpi=40)


def test_relative_error_is_the_frobenius_ratio():
    g = np.array([[2.0, 1.0], [1.0, 3.0]])
    d = np.diag(np.diag(g))
    assert plotting.relative_error(d, g) == pytest.approx(np.sqrt(2.0) / np.sqrt(4 + 1 + 1 + 9))
    assert plotting.relative_error(g, g) == 0.0
    with pytest.raises(ValueError, match="reference"):
        plotting.relative_error(g, np.zeros((2, 2)))
    with pytest.raises(ValueError, match="approximation"):
        plotting.relative_error(np.eye(3), g)


def test_curvature_structures_one_scale_and_errors_in_titles():
    rng = np.random.default_rng(0)
    root = rng.normal(size=(6, 6))
    g = root @ root.T
    block = np.zeros_like(g)
    block[:4, :4], block[4:, 4:] = g[:4, :4], g[4:, 4:]
    mats = {"exact": g, "block": block, "diag": np.diag(np.diag(g))}
    fig = plotting.curvature_structures(mats, boundaries=[4])
    axes = [ax for ax in fig.axes if ax.images]
    assert len(axes) == 3 and len(fig.axes) == 4  # three heatmaps and one colour bar
    images = [ax.images[0] for ax in axes]
    assert all(isinstance(im, AxesImage) for im in images)
    assert len({id(im.norm) for im in images}) == 1  # one colour scale
    assert images[0].norm.vmax == pytest.approx(np.abs(g).max())
    np.testing.assert_allclose(images[1].get_array(), block)
    titles = [ax.get_title() for ax in axes]
    assert titles[0].startswith("exact")
    for title, m in zip(titles[1:], (block, mats["diag"]), strict=True):
        assert f"relative error {plotting.relative_error(m, g):.2f}" in title
    for ax in axes:
        assert ax.get_xlabel() == "parameter index" and ax.get_ylabel() == "parameter index"
        assert len(ax.lines) == 2  # the layer boundary, horizontal and vertical
    _render(fig)
    with pytest.raises(ValueError, match="boundaries"):
        plotting.curvature_structures(mats, boundaries=[6])
    with pytest.raises(ValueError, match=r"matrices\['diag'\]"):
        plotting.curvature_structures(mats | {"diag": np.eye(5)})


def test_kronecker_product_draws_every_block_entry():
    a = np.array([[2.0, 1.0], [1.0, 3.0]])
    b = np.array([[1.0, 2.0], [3.0, 5.0]])
    fig = plotting.kronecker_product(a, b)
    (ax,) = fig.axes
    texts = [t.get_text() for t in ax.texts]
    for value in np.concatenate([a.ravel(), b.ravel(), np.kron(a, b).ravel()]):
        assert f"{value:g}" in texts
    assert "4 + 4 numbers store 16" in ax.get_title()
    # each block a_ij B shares the colour of a_ij: 4 distinct tints among the product's cells
    cells = [p for p in ax.patches if p.get_fill() and p.get_width() == 1]
    product_cells = cells[-16:]
    assert len({tuple(np.round(p.get_facecolor(), 3)) for p in product_cells}) == 4
    _render(fig)
    with pytest.raises(ValueError, match="a: expected at most 4 x 4"):
        plotting.kronecker_product(np.eye(5), b)


def test_ellipse_axes_and_posterior_ellipses():
    rotation = np.array([[np.cos(0.5), -np.sin(0.5)], [np.sin(0.5), np.cos(0.5)]])
    covariance = rotation @ np.diag([4.0, 0.25]) @ rotation.T
    major, minor, angle = plotting.ellipse_axes(covariance)
    assert (major, minor) == pytest.approx((2.0, 0.5))
    assert np.radians(angle) % np.pi == pytest.approx(0.5)
    with pytest.raises(ValueError, match="positive definite"):
        plotting.ellipse_axes(np.diag([1.0, -1.0]))

    panels = {"N varies": {"N = 1": covariance, "N = 4": covariance / 4}, "tau": {"t": np.eye(2)}}
    fig = plotting.posterior_ellipses(panels, xlabel="w1", ylabel="w2", title="N and tau")
    assert [ax.get_title() for ax in fig.axes] == list(panels)
    first = fig.axes[0]
    widths = sorted(p.get_width() for p in first.patches)
    assert widths == pytest.approx([2.0, 4.0])  # 2 x the major semi-axis 2 / sqrt(4) and 2
    texts = [t.get_text() for t in first.get_legend().get_texts()]
    assert texts == ["N = 1: axes 4.0 : 1", "N = 4: axes 4.0 : 1"]
    assert first.get_xlabel() == "w1" and first.get_ylabel() == "w2"
    assert first.get_xlim() == fig.axes[1].get_xlim()  # shared axes
    _render(fig)
