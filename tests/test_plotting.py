"""Every figure kind on tiny inputs: axes, titles, artists, the data drawn, a clean render."""

import io
import warnings

import matplotlib

matplotlib.use("Agg")

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import pytest
import scipy.special
import scipy.stats
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_hex
from matplotlib.contour import ContourSet
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse, FancyArrow, Rectangle
from matplotlib.quiver import Quiver

from bnn_jax import calibration, ood, plotting

pytestmark = pytest.mark.filterwarnings("error")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _render(fig) -> None:
    """Draw the whole figure to PNG; any warning (layout, masked data, ...) fails the test."""
    assert isinstance(fig, Figure)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig.savefig(io.BytesIO(), format="png", dpi=40)


def _titles(fig) -> list[str]:
    return [ax.get_title() for ax in fig.axes if ax.get_title()]


def _contour_sets(ax) -> list[ContourSet]:
    return [c for c in ax.collections if isinstance(c, ContourSet)]


# ----------------------------------------------------------------- toy 2-D maps

H, W = 7, 8  # a non-square grid catches transposed fields


@pytest.fixture
def toy():
    rng = np.random.default_rng(0)
    xx, yy = np.meshgrid(np.linspace(-2.0, 2.0, W), np.linspace(-1.0, 1.0, H))
    points = np.stack([xx.ravel(), yy.ravel()], axis=-1)
    x = rng.normal(size=(6, 2))
    y = np.array([0, 1, 0, 1, 1, 0])
    logits = np.stack([np.zeros(H * W), 3.0 * points[:, 0] + points[:, 1]], axis=-1)
    log_probs = np.asarray(jax.nn.log_softmax(jnp.asarray(logits)))
    entropy = -np.sum(np.exp(log_probs) * log_probs, axis=-1)
    bald = 0.1 * entropy
    bald[0] = -1e-7  # rounding makes BALD a hair negative in places
    grad = np.stack([np.sin(points[:, 1]), np.cos(points[:, 0])], axis=-1)
    return {
        "xx": xx,
        "yy": yy,
        "x": x,
        "y": y,
        "log_probs": log_probs,
        "entropy": entropy,
        "bald": bald,
        "grad": grad,
    }


def test_uncertainty_maps_full(toy):
    fig = plotting.uncertainty_maps(
        toy["xx"],
        toy["yy"],
        toy["x"],
        toy["y"],
        toy["log_probs"],
        entropy=toy["entropy"],
        bald=toy["bald"],
        expected_entropy=0.9 * toy["entropy"],
        input_grad=toy["grad"],
        title="MC dropout",
    )
    panels = [
        "Decision regions",
        "Predictive entropy",
        "Mean of entropy",
        "BALD",
        "p(class 1)",
        "Input gradient of the predicted-class loss",
    ]
    assert _titles(fig) == panels
    assert len(fig.axes) == 6 + 4  # four colour bars: entropy, mean of entropy, BALD, p
    assert fig.get_suptitle() == "MC dropout"
    axes = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    # decision regions: one band per class
    np.testing.assert_allclose(_contour_sets(axes["Decision regions"])[0].levels, [-0.5, 0.5, 1.5])
    # entropy on [0, log 2]; the BALD scale reaches down to its (negative) minimum
    entropy_levels = _contour_sets(axes["Predictive entropy"])[0].levels
    assert entropy_levels[0] == 0.0 and np.isclose(entropy_levels[-1], np.log(2.0))
    bald_levels = _contour_sets(axes["BALD"])[0].levels
    assert bald_levels[0] == pytest.approx(toy["bald"].min())
    # quiver: every third grid point in both directions, the gradient as given
    (quiver,) = [c for c in axes[panels[-1]].collections if isinstance(c, Quiver)]
    grad = toy["grad"].reshape(H, W, 2)[::3, ::3]
    np.testing.assert_allclose(quiver.U, grad[..., 0].ravel())
    np.testing.assert_allclose(quiver.V, grad[..., 1].ravel())
    # training points on every panel: one scatter per class
    for title in panels:
        scatters = [c for c in axes[title].collections if c.get_label().startswith("class")]
        assert sum(len(s.get_offsets()) for s in scatters) == 6
    _render(fig)


def test_uncertainty_maps_minimal_accepts_grid_shaped_fields(toy):
    fig = plotting.uncertainty_maps(
        toy["xx"],
        toy["yy"],
        toy["x"],
        toy["y"],
        toy["log_probs"].reshape(H, W, 2),
        entropy=toy["entropy"].reshape(H, W),
        bald=np.zeros((H, W)),  # a MAP model: BALD = 0
    )
    assert _titles(fig) == ["Decision regions", "Predictive entropy", "BALD", "p(class 1)"]
    assert len(fig.axes) == 4 + 3
    _render(fig)


def test_posterior_draws(toy):
    samples = np.stack([toy["log_probs"], toy["log_probs"][:, ::-1], toy["log_probs"]])
    fig = plotting.posterior_draws(toy["xx"], toy["yy"], toy["x"], toy["y"], samples)
    assert len(fig.axes) == 3 and _titles(fig) == ["Draw 1", "Draw 2", "Draw 3"]
    assert fig.get_suptitle() == "3 draws from the posterior"
    _render(fig)
    four = plotting.posterior_draws(
        toy["xx"],
        toy["yy"],
        toy["x"],
        toy["y"],
        np.concatenate([samples, samples[:1]]),
        title="Dropout",
    )
    assert len(four.axes) == 4 and four.axes[3].get_subplotspec().get_geometry()[:2] == (2, 2)
    assert four.get_suptitle() == "Dropout"


def test_adversarial_arrows(toy):
    x_adv = toy["x"] + np.array([0.5, -0.25])
    fig = plotting.adversarial_arrows(
        toy["xx"],
        toy["yy"],
        toy["x"],
        toy["y"],
        toy["log_probs"],
        x_adv,
        accuracy=0.75,
        num_arrows=4,
    )
    (ax,) = fig.axes
    assert ax.get_title() == "Adversarial examples: accuracy after attack 75.0%"
    arrows = [p for p in ax.patches if isinstance(p, FancyArrow)]
    assert len(arrows) == 4
    for arrow, start in zip(arrows, toy["x"][:4], strict=True):
        reach = np.max(np.linalg.norm(arrow.get_xy() - start, axis=1))  # the tip
        assert reach == pytest.approx(0.9 * np.hypot(0.5, 0.25))
    crosses = [c for c in ax.collections if c.get_label().startswith("adversarial")]
    np.testing.assert_allclose(
        np.concatenate([c.get_offsets() for c in crosses]),
        np.concatenate([x_adv[toy["y"] == c] for c in (0, 1)]),
    )
    _render(fig)
    many = plotting.adversarial_arrows(
        toy["xx"], toy["yy"], toy["x"], toy["y"], toy["log_probs"], x_adv, accuracy=1.0
    )
    assert len(many.axes[0].patches) == 6  # the default 20 arrows, capped at n


def test_sigmoid_entropy():
    fig = plotting.sigmoid_entropy(num_points=101)
    top, bottom = fig.axes
    assert len(fig.axes) == 2 and top.get_title() and bottom.get_title()
    z, p = top.lines[0].get_data()
    np.testing.assert_allclose(z, np.linspace(-10.0, 10.0, 101))
    np.testing.assert_allclose(p, scipy.special.expit(z), rtol=1e-12)
    entropy = bottom.lines[0].get_ydata()
    reference = [scipy.stats.entropy([q, 1.0 - q]) for q in scipy.special.expit(z)]
    np.testing.assert_allclose(entropy, reference, rtol=1e-6, atol=1e-12)
    assert entropy[50] == pytest.approx(np.log(2.0))
    _render(fig)


def test_method_sheet_shares_one_scale_per_column(toy):
    entropy = {"MAP": 0.5 * toy["entropy"], "KFAC": toy["entropy"], "GP": 0.8 * toy["entropy"]}
    bald = {"MAP": np.zeros(H * W), "KFAC": 0.2 * toy["entropy"], "GP": 0.1 * toy["entropy"]}
    fig = plotting.method_sheet(
        toy["xx"], toy["yy"], toy["x"], toy["y"], {"Predictive entropy": entropy, "BALD": bald}
    )
    assert len(fig.axes) == 3 * 2 + 2  # one colour bar per column
    axes = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    assert list(axes) == [f"{m}: {c}" for m in entropy for c in ("Predictive entropy", "BALD")]
    for column, fields in (("Predictive entropy", entropy), ("BALD", bald)):
        stacked = np.stack(list(fields.values()))
        for method in fields:
            levels = _contour_sets(axes[f"{method}: {column}"])[0].levels
            assert levels[0] == pytest.approx(stacked.min())
            assert levels[-1] == pytest.approx(stacked.max())
    _render(fig)


# ----------------------------------------------------------------- landscape

ALPHAS, BETAS = np.linspace(-1.0, 1.0, 9), np.linspace(-0.5, 1.5, 6)


def _bowl():
    a, b = np.meshgrid(ALPHAS, BETAS, indexing="ij")
    return 0.2 + a**2 + 0.5 * (b - 0.5) ** 2 + 0.3 * a * b


def test_loss_curves():
    losses = np.stack([ALPHAS**2, 2 * ALPHAS**2 + 0.1])
    fig = plotting.loss_curves(ALPHAS, losses)
    (ax,) = fig.axes
    assert ax.get_title() == "Loss along random directions"
    assert ax.get_xlabel() == "step along the direction" and ax.get_ylabel() == "loss"
    assert [line.get_label() for line in ax.lines[:2]] == ["direction 1", "direction 2"]
    np.testing.assert_allclose(ax.lines[1].get_ydata(), losses[1])
    assert ax.get_legend() is None  # the legend sits below the axes, off the curves
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["direction 1", "direction 2"]
    _render(fig)
    with_accuracy = plotting.loss_curves(
        ALPHAS, losses[0], accuracies=1.0 - 0.1 * ALPHAS**2, labels=["random"]
    )
    assert len(with_accuracy.axes) == 2 and len(with_accuracy.axes[1].lines) == 1
    assert with_accuracy.axes[1].get_ylabel() == "accuracy (dashed)"
    texts = [t.get_text() for t in with_accuracy.legends[0].get_texts()]
    assert texts == ["random", "accuracy"]
    _render(with_accuracy)


@pytest.mark.parametrize("three_d", [False, True])
def test_loss_surface(three_d):
    loss = _bowl()
    fig = plotting.loss_surface(ALPHAS, BETAS, loss, accuracy=1.0 - 0.2 * loss, three_d=three_d)
    assert len(fig.axes) == 2  # the plot and its colour bar
    ax = fig.axes[0]
    assert ax.get_title() == "Loss landscape" and (ax.name == "3d") == three_d
    assert ax.get_xlabel() == "step along direction 1"
    assert ax.get_ylabel() == "step along direction 2"
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "loss contours",
        "accuracy contours",
    ]
    lines = [c for c in _contour_sets(ax) if not c.filled]
    assert len(lines) == 2
    for contour_set, values, sign in zip(lines, (loss, 1.0 - 0.2 * loss), (1, -1), strict=True):
        levels = contour_set.levels
        assert np.all((levels > values.min()) & (levels < values.max()))
        # the lines start at the minimum loss (maximum accuracy) and crowd around it
        near = np.abs(levels - (values.min() if sign > 0 else values.max()))
        assert np.sum(near < 0.1 * np.ptp(values)) > len(levels) / 2
    _render(fig)


def test_loss_surface_linear_levels_are_even_and_labels_are_set():
    loss = _bowl()
    fig = plotting.loss_surface(ALPHAS, BETAS, loss, levels="linear", xlabel="v1", ylabel="v2")
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("v1", "v2")
    (line,) = [c for c in _contour_sets(ax) if not c.filled]
    np.testing.assert_allclose(np.diff(line.levels), np.diff(line.levels)[0])
    with pytest.raises(ValueError, match="levels: expected 'from_minimum' or 'linear'"):
        plotting.loss_surface(ALPHAS, BETAS, loss, levels="log")


def test_loss_surface_with_flat_accuracy_draws_no_accuracy_lines():
    fig = plotting.loss_surface(ALPHAS, BETAS, _bowl(), accuracy=np.ones((9, 6)))
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts == ["loss contours"]
    _render(fig)


def test_gaussian_comparison():
    a, b = np.meshgrid(ALPHAS, BETAS, indexing="ij")
    target = np.exp(-_bowl())
    panels = {
        "exp(-loss)": target,
        "least squares": 0.8 * np.exp(-(a**2) - b**2),
        "KFAC": np.exp(-0.5 * a**2 - b**2),
        "DIAG": np.exp(-(a**2)),
    }
    fig = plotting.gaussian_comparison(ALPHAS, BETAS, panels)
    assert len(fig.axes) == 4 + 1 and _titles(fig) == list(panels)
    filled_levels = [_contour_sets(ax)[0].levels for ax in fig.axes[:4]]
    for levels in filled_levels:  # one colour scale for all panels
        np.testing.assert_allclose(levels, filled_levels[0])
    assert filled_levels[0][-1] == pytest.approx(max(v.max() for v in panels.values()))
    # the reference's contour lines on every panel but the first
    assert [len(_contour_sets(ax)) for ax in fig.axes[:4]] == [1, 2, 2, 2]
    assert not fig.legends  # no ellipses, nothing to explain
    _render(fig)


def test_gaussian_comparison_draws_one_sd_ellipses_and_notes_wide_ones():
    a, b = np.meshgrid(ALPHAS, BETAS, indexing="ij")
    panels = {"exp(-loss)": np.exp(-_bowl()), "fit": np.exp(-(a**2) - b**2), "wide": 0 * a + 1}
    covariances = {"fit": [[0.5, 0.1], [0.1, 0.4]], "wide": [[100.0, 0.0], [0.0, 100.0]]}
    fig = plotting.gaussian_comparison(
        ALPHAS, BETAS, panels, ncols=2, covariances=covariances, means={"fit": [0.1, 0.4]}
    )
    axes = fig.axes[:3]
    assert [ax.get_subplotspec().get_geometry()[:2] for ax in axes] == [(2, 2)] * 3
    ellipses = [[p for p in ax.patches if isinstance(p, Ellipse)] for ax in axes]
    assert [len(e) for e in ellipses] == [0, 1, 1]
    fit = ellipses[1][0]
    major, minor, _ = plotting.ellipse_axes(covariances["fit"])
    assert fit.center == pytest.approx((0.1, 0.4))
    assert (fit.width, fit.height) == pytest.approx((2 * major, 2 * minor))
    notes = [[t.get_text() for t in ax.texts] for ax in axes]
    assert notes[1] == ["sd 0.707, 0.632"] and notes[2] == ["sd 10, 10 (ellipse beyond the axes)"]
    assert axes[2].get_xlim() == pytest.approx((ALPHAS.min(), ALPHAS.max()))
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["1-sd ellipse"]
    _render(fig)
    with pytest.raises(ValueError, match=r"covariances: expected keys of panels.*'other'"):
        plotting.gaussian_comparison(ALPHAS, BETAS, panels, covariances={"other": np.eye(2)})


# ----------------------------------------------------------------- calibration


def _predictions(seed, n=200, classes=4, temperature=3.0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, classes)) * temperature
    labels = np.where(rng.uniform(size=n) < 0.7, logits.argmax(-1), rng.integers(0, classes, n))
    return jax.nn.log_softmax(jnp.asarray(logits, jnp.float32)), jnp.asarray(labels)


def test_reliability_diagram_single_and_per_method():
    log_probs, labels = _predictions(0)
    rel = calibration.reliability(log_probs, labels, num_bins=10)
    occupied = np.asarray(rel.count) > 0
    assert not occupied.all()  # confidences >= 1/4: the lowest bins are empty (NaN)
    fig = plotting.reliability_diagram(rel)
    (ax,) = fig.axes
    expected_ece = float(calibration.ece(log_probs, labels, num_bins=10))
    assert ax.get_title() == f"ECE {expected_ece:.2%}, n = {len(labels)}"
    assert ax.get_xlabel() == "confidence" and ax.get_ylabel() == "accuracy"
    bars = [p for p in ax.patches if isinstance(p, Rectangle)]
    accuracy_bars, gap_bars = bars[: occupied.sum()], bars[occupied.sum() :]
    assert len(gap_bars) == occupied.sum()  # every occupied bin here has a non-zero gap
    np.testing.assert_allclose(
        [r.get_height() for r in accuracy_bars], np.asarray(rel.accuracy)[occupied], rtol=1e-6
    )
    # gap bars span accuracy -> confidence, over- and underconfident bins in their own colour
    gap = np.asarray(rel.gap)[occupied]
    over, under = gap[gap > 0], gap[gap < 0]
    assert over.size and under.size
    np.testing.assert_allclose(
        sorted(r.get_height() for r in gap_bars), sorted(gap), rtol=1e-5, atol=1e-7
    )
    over_colors = {r.get_facecolor() for r in gap_bars if r.get_height() > 0}
    under_colors = {r.get_facecolor() for r in gap_bars if r.get_height() < 0}
    assert len(over_colors) == len(under_colors) == 1 and over_colors != under_colors
    # the bin counts are written on the bars
    counts = [t.get_text() for t in ax.texts]
    assert counts == [str(int(c)) for c in np.asarray(rel.count)[occupied]]
    # one legend entry per bar colour, each drawn in the colour of its bars
    (legend,) = fig.legends
    entries = dict(
        zip([t.get_text() for t in legend.get_texts()], legend.legend_handles, strict=True)
    )
    drawn = {to_hex(c) for c in over_colors | under_colors} | {
        to_hex(accuracy_bars[0].get_facecolor())
    }
    legend_colors = {
        to_hex(h.get_facecolor())
        for h in entries.values()
        if hasattr(h, "get_facecolor") and h.get_fill()
    }
    assert drawn <= legend_colors
    assert "perfect calibration" in entries
    _render(fig)

    per_method = {
        name: calibration.reliability(*_predictions(s), num_bins=8, equal_mass=True)
        for s, name in enumerate(("MAP", "DIAG", "KFAC"))
    }
    fig = plotting.reliability_diagram(per_method, title="Reliability")
    assert len(fig.axes) == 3 and [t.split(":")[0] for t in _titles(fig)] == list(per_method)
    _render(fig)


def test_calibration_curves_family_band_and_mean():
    def curve(confidence, gap, count):
        return calibration.CalibrationCurve(
            jnp.asarray(confidence), jnp.asarray(gap), jnp.asarray(count)
        )

    nan = np.nan
    family = [  # three members; the second has an empty middle bin
        curve([0.6, 0.9, 0.99], [0.05, 0.10, 0.02], [5, 5, 5]),
        curve([0.7, nan, 0.999], [-0.05, nan, 0.04], [5, 0, 5]),
        curve([0.5, 0.8, 1.0], [0.00, 0.20, 0.06], [5, 5, 5]),
    ]
    single = curve([0.5, 0.95, 1.0], [0.01, 0.03, 0.05], [3, 3, 3])
    fig = plotting.calibration_curves({"MAP": family, "KFAC": single})
    (ax,) = fig.axes
    assert ax.get_xscale() == "logit"
    assert ax.get_xlabel() == "confidence (logit scale)"
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["MAP", "KFAC"]
    map_line, kfac_line = (line for line in ax.lines if line.get_label() in ("MAP", "KFAC"))
    np.testing.assert_allclose(map_line.get_xdata(), [0.6, 0.85, (0.99 + 0.999 + 1.0) / 3])
    np.testing.assert_allclose(map_line.get_ydata(), [0.0, 0.15, 0.04])
    # confidences of exactly 1 sit just inside the logit axis; 0.5 (logit 0) is fine as is
    np.testing.assert_allclose(kfac_line.get_xdata(), [0.5, 0.95, 1.0 - plotting.LOGIT_MARGIN])
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 1  # a band for the family, none for a single curve
    low, high = (
        bands[0].get_paths()[0].vertices[:, 1].min(),
        bands[0].get_paths()[0].vertices[:, 1].max(),
    )
    assert (low, high) == pytest.approx((-0.05, 0.20))
    assert np.all(np.isfinite(ax.get_xlim())) and 0.0 < ax.get_xlim()[0] < ax.get_xlim()[1] < 1.0
    _render(fig)


def test_calibration_curves_from_real_predictions():
    curves = {
        "MAP": [calibration.calibration_curve(*_predictions(s, temperature=20.0)) for s in range(3)]
    }
    _render(plotting.calibration_curves(curves))  # float32 confidences of exactly 1


# ----------------------------------------------------------------- OOD


def test_entropy_histograms():
    rng = np.random.default_rng(0)
    entropy_in = {"MAP": rng.uniform(0.0, 0.8, 50), "KFAC": rng.uniform(0.0, 1.0, 50)}
    entropy_out = {"MAP": rng.uniform(0.3, 1.2, 30), "KFAC": np.full(30, np.log(4.0) + 1e-7)}
    fig = plotting.entropy_histograms(entropy_in, entropy_out, num_classes=4, num_bins=12)
    assert len(fig.axes) == 2 and _titles(fig) == ["MAP", "KFAC"]
    for ax in fig.axes:
        bars = [p for p in ax.patches if isinstance(p, Rectangle)]
        assert len(bars) == 2 * 12
        for histogram in (bars[:12], bars[12:]):  # densities on shared bins over [0, log 4]
            assert sum(r.get_height() * r.get_width() for r in histogram) == pytest.approx(1.0)
            assert histogram[-1].get_x() + histogram[-1].get_width() == pytest.approx(np.log(4))
    _render(fig)


def _ecdf_scores(seed):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 0.5, 40), rng.uniform(0.2, 1.0, 40)


def test_inverse_ecdf_curves_entropy_vertical_fraction_horizontal():
    grid = jnp.linspace(0.0, 1.0, 21)
    scores = {"MAP": _ecdf_scores(0), "DIAG": _ecdf_scores(1)}
    curves_in = {m: ood.inverse_ecdf(jnp.asarray(s[0]), thresholds=grid) for m, s in scores.items()}
    curves_out = {
        m: ood.inverse_ecdf(jnp.asarray(s[1]), thresholds=grid) for m, s in scores.items()
    }
    fig = plotting.inverse_ecdf_curves(curves_in, curves_out, xlabel="predictive entropy")
    (ax,) = fig.axes
    assert ax.get_title()
    assert ax.get_ylabel() == "predictive entropy"  # the score is on the vertical axis
    assert ax.get_xlabel() == "fraction of inputs with entropy above the value"
    assert [line.get_linestyle() for line in ax.lines] == ["-", "--", "-", "--"]  # solid OOD
    assert ax.lines[0].get_color() == ax.lines[1].get_color() != ax.lines[2].get_color()
    # the dashed MAP line is the in-domain curve: each vertical step starts at a point
    # (fraction of in-domain scores above t, t) and rises at that fraction to the next t
    fraction, entropy = ax.lines[1].get_xdata(), ax.lines[1].get_ydata()
    assert len(fraction) == 2 * len(grid) - 1
    scores32 = np.float32(scores["MAP"][0])
    expected = [np.mean(scores32 > np.float32(t)) for t in entropy[::2]]
    np.testing.assert_allclose(fraction[::2], expected)
    np.testing.assert_allclose(entropy[::2], grid)
    np.testing.assert_allclose(fraction[1::2], fraction[:-1:2])  # vertical segments
    assert np.all(np.diff(entropy) >= 0) and np.all(np.diff(fraction) <= 0)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "MAP",
        "DIAG",
        "OOD (solid)",
        "in-domain (dashed)",
    ]
    _render(fig)


def test_family_inverse_ecdf_one_panel_per_method_one_colour_per_member():
    grid = jnp.linspace(0.0, 1.0, 11)
    curve = lambda x: ood.inverse_ecdf(jnp.asarray(x), thresholds=grid)
    members = ("mlp-1", "mlp-2", "mlp-3")
    curves_in = {
        m: {k: curve(_ecdf_scores(i)[0]) for i, k in enumerate(members)} for m in ("MAP", "KFAC")
    }
    curves_out = {
        m: {k: curve(_ecdf_scores(i)[1]) for i, k in enumerate(members)} for m in ("MAP", "KFAC")
    }
    fig = plotting.family_inverse_ecdf(curves_in, curves_out, out_label="noise", title="family")
    assert _titles(fig) == ["MAP", "KFAC"] and fig.get_suptitle() == "family"
    assert fig.get_supylabel() == "normalised entropy H / log C"
    assert fig.get_supxlabel() == "fraction of inputs with entropy above the value"
    for ax in fig.axes:
        assert len(ax.lines) == 6
        assert [line.get_linestyle() for line in ax.lines] == ["-", "--"] * 3
    colors = [[line.get_color() for line in ax.lines[::2]] for ax in fig.axes]
    assert colors[0] == colors[1] and len(set(colors[0])) == 3  # a member keeps its colour
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts == [*members, "noise (solid)", "in-domain (dashed)"]
    _render(fig)
    with pytest.raises(ValueError, match="curves_out"):
        plotting.family_inverse_ecdf(curves_in, {"MAP": curves_out["MAP"]})


# ----------------------------------------------------------------- adversarial


def test_attack_sweeps():
    eps = np.array([0.0, 0.1, 0.05, 0.2])  # unsorted: drawn in order of eps
    metrics = {
        "entropy (nats)": {"MAP": eps, "KFAC": 2 * eps},
        "accuracy": {"MAP": 1 - eps, "KFAC": 1 - eps / 2},
        "NLL": {"MAP": 3 * eps, "KFAC": eps},
        "ECE": {"MAP": eps, "KFAC": eps / 3},
    }
    fig = plotting.attack_sweeps(eps, metrics, title="FGSM")
    assert len(fig.axes) == 4 and _titles(fig) == list(metrics)
    for ax in fig.axes:
        assert len(ax.lines) == 3  # two methods and the clean-input marker at eps = 0
        np.testing.assert_allclose(ax.lines[0].get_xdata(), np.sort(eps))
        assert ax.get_xlim()[0] < 0.0 < 0.2 < ax.get_xlim()[1]  # nothing trimmed here
        assert ax.get_xlabel() == "step size ε"
    colors = {ax.lines[1].get_color() for ax in fig.axes}
    assert len(colors) == 1  # a method keeps its colour in every panel
    np.testing.assert_allclose(fig.axes[1].lines[1].get_ydata(), 1 - np.sort(eps) / 2)
    assert fig.get_suptitle() == "FGSM"
    (legend,) = fig.legends  # outside the panels: no legend on any axes
    assert all(ax.get_legend() is None for ax in fig.axes)
    assert [t.get_text() for t in legend.get_texts()] == ["MAP", "KFAC", "clean inputs (ε = 0)"]
    _render(fig)


def test_attack_sweeps_trims_strengths_where_methods_agree():
    eps = np.array([0.0, 0.1, 0.2, 0.3, 0.5, 1.0])
    accuracy = {
        "MAP": np.array([0.9, 0.5, 0.0, 0.0, 0.0, 0.0]),
        "KFAC": np.array([0.9, 0.6, 0.1, 0.0, 0.0, 0.0]),
    }
    fig = plotting.attack_sweeps(eps, {"accuracy": accuracy})
    (ax,) = fig.axes
    assert 0.3 < ax.get_xlim()[1] < 0.5  # one step after the last difference (0.2)
    assert "ε > 0.3 not shown" in fig.get_suptitle()
    untrimmed = plotting.attack_sweeps(eps, {"accuracy": accuracy}, trim=False)
    assert untrimmed.axes[0].get_xlim()[1] > 1.0 and not untrimmed.get_suptitle()
    _render(fig)


# ----------------------------------------------------------------- bad inputs


def test_bad_inputs_raise(toy):
    grid, data = (toy["xx"], toy["yy"]), (toy["x"], toy["y"])
    maps = lambda **kw: plotting.uncertainty_maps(
        *grid,
        *data,
        kw.pop("log_probs", toy["log_probs"]),
        entropy=kw.pop("entropy", toy["entropy"]),
        bald=toy["bald"],
        **kw,
    )
    with pytest.raises(ValueError, match="yy: expected the shape of xx"):
        plotting.uncertainty_maps(
            toy["xx"],
            toy["yy"][:, :-1],
            *data,
            toy["log_probs"],
            entropy=toy["entropy"],
            bald=toy["bald"],
        )
    with pytest.raises(ValueError, match=r"entropy: expected shape \(56,\) or \(7, 8\)"):
        maps(entropy=toy["entropy"][:-1])
    with pytest.raises(ValueError, match="entropy: expected finite values"):
        maps(entropy=np.full(H * W, np.nan))
    with pytest.raises(ValueError, match="log_probs: expected log-probabilities"):
        maps(log_probs=np.exp(toy["log_probs"]))
    with pytest.raises(ValueError, match="input_grad: expected shape"):
        maps(input_grad=toy["grad"][:, :1])
    with pytest.raises(ValueError, match="quiver_step: expected an integer >= 1"):
        maps(quiver_step=0)
    with pytest.raises(ValueError, match=r"x: expected 2-D inputs of shape \[n, 2\]"):
        plotting.posterior_draws(*grid, np.zeros((6, 3)), toy["y"], toy["log_probs"][None])
    with pytest.raises(ValueError, match="y: expected integer class labels"):
        plotting.posterior_draws(*grid, toy["x"], toy["y"] * 0.5, toy["log_probs"][None])
    with pytest.raises(ValueError, match="accuracy: expected a value in"):
        plotting.adversarial_arrows(*grid, *data, toy["log_probs"], toy["x"], accuracy=1.5)
    with pytest.raises(ValueError, match="x_adv: expected the shape of x"):
        plotting.adversarial_arrows(*grid, *data, toy["log_probs"], toy["x"][:2], accuracy=0.5)
    with pytest.raises(ValueError, match=r"arrow_length: expected a value in \(0, 1\]"):
        plotting.adversarial_arrows(
            *grid, *data, toy["log_probs"], toy["x"], accuracy=0.5, arrow_length=0.0
        )
    with pytest.raises(ValueError, match="num_points: expected an integer >= 2"):
        plotting.sigmoid_entropy(num_points=1)
    with pytest.raises(ValueError, match=r"columns\['BALD'\]: expected the keys of"):
        plotting.method_sheet(
            *grid, *data, {"H": {"a": toy["entropy"]}, "BALD": {"b": toy["bald"]}}
        )
    with pytest.raises(ValueError, match="columns: expected a non-empty mapping"):
        plotting.method_sheet(*grid, *data, {})
    with pytest.raises(ValueError, match=r"loss: expected shape \(9, 6\)"):
        plotting.loss_surface(ALPHAS, BETAS, _bowl().T)
    with pytest.raises(ValueError, match="losses: expected shape"):
        plotting.loss_curves(ALPHAS, np.ones(3))
    with pytest.raises(ValueError, match="labels: expected 1 labels"):
        plotting.loss_curves(ALPHAS, ALPHAS, labels=["a", "b"])
    with pytest.raises(ValueError, match=r"panels\['fit'\]: expected finite"):
        plotting.gaussian_comparison(ALPHAS, BETAS, {"fit": np.full((9, 6), np.inf)})
    short = calibration.CalibrationCurve(jnp.ones(3), jnp.zeros(3), jnp.ones(3))
    long = calibration.CalibrationCurve(jnp.ones(4), jnp.zeros(4), jnp.ones(4))
    with pytest.raises(ValueError, match="expected curves with the same number of bins"):
        plotting.calibration_curves({"MAP": [short, long]})
    with pytest.raises(ValueError, match=r"curves\['MAP'\]: expected a CalibrationCurve"):
        plotting.calibration_curves({"MAP": [np.ones(3)]})
    broken = calibration.CalibrationCurve(jnp.array([1.5]), jnp.zeros(1), jnp.ones(1))
    with pytest.raises(ValueError, match=r"expected confidences in \[0, 1\]"):
        plotting.calibration_curves({"MAP": broken})
    with pytest.raises(ValueError, match="entropy_out: expected the keys of entropy_in"):
        plotting.entropy_histograms({"a": np.ones(3)}, {"b": np.ones(3)})
    with pytest.raises(ValueError, match="num_bins: expected an integer >= 1"):
        plotting.entropy_histograms({"a": np.ones(3)}, {"a": np.ones(3)}, num_bins=0)
    with pytest.raises(ValueError, match=r"curves_in\['a'\]: expected an ood.ECDFCurve"):
        plotting.inverse_ecdf_curves({"a": np.ones(3)}, {"a": np.ones(3)})
    with pytest.raises(ValueError, match=r"metrics\['acc'\]\['a'\]: expected shape \(3,\)"):
        plotting.attack_sweeps(np.ones(3), {"acc": {"a": np.ones(2)}})


def test_method_colors_stay_distinct_past_ten_methods():
    import matplotlib.pyplot as plt

    from bnn_jax.plotting import _common

    colors = _common.method_colors([f"m{i}" for i in range(20)])
    assert len(set(colors.values())) == 20
    assert list(colors.values())[:10] == list(plt.get_cmap("tab10").colors)
