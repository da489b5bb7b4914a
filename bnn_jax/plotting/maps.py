"""Figures of the 2-D toy study (the notebook): maps over an input grid with the data on top.

Every map takes the grid ``xx, yy`` (``np.meshgrid`` arrays ``[H, W]``), the training inputs
``x [n, 2]`` and labels ``y [n]``, and fields on the grid given either flattened in meshgrid
order (``[H * W, ...]``, as from ``np.stack([xx.ravel(), yy.ravel()], -1)``) or as
``[H, W, ...]``. Predictions are log-probabilities (``jax.nn.log_softmax`` of logits, or
``uncertainty.mean_log_probs`` of samples); uncertainties are in nats.
"""

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from bnn_jax.plotting import _common

__all__ = [
    "adversarial_arrows",
    "method_sheet",
    "posterior_draws",
    "sigmoid_entropy",
    "uncertainty_maps",
]


def uncertainty_maps(
    xx,
    yy,
    x,
    y,
    log_probs,
    *,
    entropy,
    bald,
    expected_entropy=None,
    input_grad=None,
    quiver_step: int = 3,
    title: str | None = None,
) -> Figure:
    """The notebook's panel grid for one method, with the training points on every panel.

    Panels: decision regions (``argmax_c p_c``); predictive entropy ``H[p_bar]`` and, if given,
    the mean of the entropies ``E_t H[p_t]`` (both on ``[0, log C]``); BALD; ``p(class 1)``;
    and, if given, the quiver of the input gradient of the predicted-class loss, drawn at
    every ``quiver_step``-th grid point along both axes.

    Args:
      xx, yy: the grid, ``[H, W]`` each.
      x: training inputs ``[n, 2]``.
      y: integer training labels ``[n]``.
      log_probs: predictive log-probabilities on the grid ``[H * W, C]`` or ``[H, W, C]``.
      entropy: predictive entropy on the grid ``[H * W]`` or ``[H, W]``.
      bald: BALD on the grid.
      expected_entropy: mean of the samples' entropies on the grid (optional panel).
      input_grad: ``d loss / d x`` on the grid ``[H * W, 2]`` or ``[H, W, 2]`` (optional panel).
      quiver_step: down-sampling of the quiver, >= 1.
      title: figure title (e.g. the method's name).

    Returns:
      A Figure with one axes per panel (4 to 6) plus one colour bar per uncertainty panel.

    Example:
      >>> lp = predictive.sample_log_probs(logits_fn, keys, grid_points)     # [T, H*W, C]
      >>> fig = uncertainty_maps(xx, yy, x, y, uncertainty.mean_log_probs(lp),
      ...                        entropy=uncertainty.predictive_entropy(lp),
      ...                        bald=uncertainty.bald(lp),
      ...                        expected_entropy=uncertainty.expected_entropy(lp))
    """
    xx, yy = _common.check_grid(xx, yy)
    x, y = _common.check_points(x, y)
    shape = xx.shape
    lp = _common.check_log_probs("log_probs", log_probs, shape)
    num_classes = lp.shape[-1]
    if num_classes < 2:
        raise ValueError(f"log_probs: expected at least 2 classes, got {num_classes}")
    quiver_step = _common.check_positive_int("quiver_step", quiver_step)
    max_entropy = float(np.log(num_classes))

    fields = {"Predictive entropy": _common.grid_field("entropy", entropy, shape)}
    if expected_entropy is not None:
        fields["Mean of entropy"] = _common.grid_field("expected_entropy", expected_entropy, shape)
    fields["BALD"] = _common.grid_field("bald", bald, shape)
    fields["p(class 1)"] = np.exp(lp[..., 1])
    top = {"Predictive entropy": max_entropy, "Mean of entropy": max_entropy, "p(class 1)": 1.0}
    titles = ["Decision regions", *fields]
    if input_grad is not None:
        grad = _common.grid_field("input_grad", input_grad, shape, trailing=(2,))
        titles.append("Input gradient of the predicted-class loss")

    fig, axes = _common.panel_grid(len(titles), ncols=3, panel_size=(4.2, 3.4))
    _common.decision_regions(axes[0], xx, yy, lp.argmax(-1), num_classes)
    for ax, (name, field) in zip(axes[1:], fields.items(), strict=False):
        # the scale also covers the data, so rounding (BALD ~ -1e-7) leaves no unfilled hole
        scale = _common.levels(min(0.0, field.min()), max(top.get(name, 0.0), field.max()))
        probability = name == "p(class 1)"
        cmap = _common.PROBABILITY_CMAP if probability else _common.UNCERTAINTY_CMAP
        contours = ax.contourf(xx, yy, field, levels=scale, cmap=cmap)
        _common.colorbar(fig, contours, ax, "probability" if probability else "nats")
    if input_grad is not None:
        every = (slice(None, None, quiver_step),) * 2
        axes[-1].quiver(xx[every], yy[every], grad[..., 0][every], grad[..., 1][every])
    for ax, name in zip(axes, titles, strict=True):
        _common.scatter_points(ax, x, y, num_classes, legend=ax is axes[0])
        _common.style_map(ax, xx, yy)
        ax.set_title(name)
    if title is not None:
        fig.suptitle(title)
    return fig


def posterior_draws(xx, yy, x, y, sample_log_probs, *, title: str | None = None) -> Figure:
    """Decision regions of individual posterior draws (the notebook's four dropout draws).

    Args:
      xx, yy: the grid, ``[H, W]`` each.
      x: training inputs ``[n, 2]``.
      y: integer training labels ``[n]``.
      sample_log_probs: ``[T, H * W, C]`` or ``[T, H, W, C]`` log-probabilities of ``T`` draws
        (e.g. ``predictive.sample_log_probs`` with four keys).
      title: figure title; default ``"<T> draws from the posterior"``.

    Returns:
      A Figure with ``T`` axes (a 2 x 2 grid for four draws).
    """
    xx, yy = _common.check_grid(xx, yy)
    x, y = _common.check_points(x, y)
    samples = np.asarray(sample_log_probs, dtype=np.float64)
    if samples.ndim not in (3, 4) or samples.shape[0] < 1:
        raise ValueError(
            f"sample_log_probs: expected shape [T, H * W, C] or [T, H, W, C], got {samples.shape}"
        )
    draws = [_common.check_log_probs("sample_log_probs", s, xx.shape) for s in samples]
    num_classes = draws[0].shape[-1]
    ncols = int(np.ceil(np.sqrt(len(draws))))
    fig, axes = _common.panel_grid(len(draws), ncols=ncols, panel_size=(3.6, 3.2))
    for t, (ax, lp) in enumerate(zip(axes, draws, strict=True)):
        _common.decision_regions(ax, xx, yy, lp.argmax(-1), num_classes)
        _common.scatter_points(ax, x, y, num_classes, legend=t == 0)
        _common.style_map(ax, xx, yy)
        ax.set_title(f"Draw {t + 1}")
    fig.suptitle(title if title is not None else f"{len(draws)} draws from the posterior")
    return fig


def adversarial_arrows(
    xx,
    yy,
    x,
    y,
    log_probs,
    x_adv,
    *,
    accuracy: float,
    num_arrows: int = 20,
    arrow_length: float = 0.9,
    title: str = "Adversarial examples",
) -> Figure:
    """Clean points, their adversarial versions (``+``) and arrows from one to the other, over
    the decision regions; the accuracy on the adversarial points is in the title.

    As in the notebook, only the first ``num_arrows`` points get an arrow, drawn at
    ``arrow_length`` times the perturbation so that the head does not hide the ``+``.

    Args:
      xx, yy: the grid, ``[H, W]`` each.
      x: clean inputs ``[n, 2]``.
      y: integer labels ``[n]``.
      log_probs: predictive log-probabilities on the grid (for the decision regions).
      x_adv: adversarial inputs ``[n, 2]``.
      accuracy: accuracy on ``x_adv`` (in ``[0, 1]``), e.g. ``calibration.accuracy``.
      num_arrows: how many arrows to draw (at most ``n``), >= 0.
      arrow_length: fraction of the perturbation the arrow covers, in ``(0, 1]``.
      title: first part of the title.

    Returns:
      A Figure with one axes holding ``min(num_arrows, n)`` arrow patches.
    """
    xx, yy = _common.check_grid(xx, yy)
    x, y = _common.check_points(x, y)
    lp = _common.check_log_probs("log_probs", log_probs, xx.shape)
    x_adv = _common.as_array("x_adv", x_adv, ndim=2)
    if x_adv.shape != x.shape:
        raise ValueError(f"x_adv: expected the shape of x {x.shape}, got {x_adv.shape}")
    if not 0.0 <= float(accuracy) <= 1.0:
        raise ValueError(f"accuracy: expected a value in [0, 1], got {accuracy!r}")
    num_arrows = _common.check_positive_int("num_arrows", num_arrows, minimum=0)
    if not 0.0 < float(arrow_length) <= 1.0:
        raise ValueError(f"arrow_length: expected a value in (0, 1], got {arrow_length!r}")

    num_classes = lp.shape[-1]
    colors = _common.class_colors(max(num_classes, int(y.max()) + 1))
    fig, ax = plt.subplots(figsize=(5.5, 4.8), layout="constrained")
    _common.decision_regions(ax, xx, yy, lp.argmax(-1), num_classes)
    _common.scatter_points(ax, x, y, num_classes)
    head = 0.012 * max(np.ptp(xx), np.ptp(yy))
    for start, end in zip(x[:num_arrows], x_adv[:num_arrows], strict=True):
        dx, dy = arrow_length * (end - start)
        ax.arrow(
            *start, dx, dy, head_width=head, length_includes_head=True, color="k", linewidth=0.6
        )
    for c in np.unique(y):
        ax.scatter(
            x_adv[y == c, 0],
            x_adv[y == c, 1],
            marker="+",
            s=40,
            color=colors[c],
            label=f"adversarial, class {c}",
        )
    ax.legend(loc="upper right", fontsize="small", framealpha=0.8)
    _common.style_map(ax, xx, yy)
    ax.set_title(f"{title}: accuracy after attack {float(accuracy):.1%}")
    return fig


def sigmoid_entropy(*, num_points: int = 100) -> Figure:
    """The probability and the entropy of a two-class prediction against the logit difference
    ``z = l_1 - l_0`` on ``[-10, 10]``: ``p(class 1) = sigmoid(z)`` and
    ``H = -p log p - (1 - p) log(1 - p)`` (in nats, maximal ``log 2`` at ``z = 0``), computed
    from ``log sigmoid`` so the tails are exact.

    Args:
      num_points: number of points on ``[-10, 10]``, >= 2.

    Returns:
      A Figure with two axes (probability above, entropy below).
    """
    num_points = _common.check_positive_int("num_points", num_points, minimum=2)
    z = np.linspace(-10.0, 10.0, num_points)
    log_p1, log_p0 = -np.logaddexp(0.0, -z), -np.logaddexp(0.0, z)
    entropy = -(np.exp(log_p1) * log_p1 + np.exp(log_p0) * log_p0)

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5.5, 5.0), sharex=True, layout="constrained")
    top.plot(z, np.exp(log_p1))
    top.set_title("Probability of class 1")
    top.set_ylabel("sigmoid(z)")
    bottom.plot(z, entropy)
    bottom.axhline(np.log(2.0), color="0.5", linestyle=":", label="log 2")
    bottom.legend(loc="upper right")
    bottom.set_title("Entropy of the predictive distribution")
    bottom.set_ylabel("entropy (nats)")
    bottom.set_xlabel("logit difference z")
    fig.suptitle("Probability and entropy in a two-class problem")
    return fig


def method_sheet(xx, yy, x, y, columns: Mapping[str, Mapping[str, object]]) -> Figure:
    """All methods side by side: one row per method, one column per quantity, with one colour
    scale per column (the column's minimum to maximum over all methods) so that methods can
    be compared at a glance.

    Args:
      xx, yy: the grid, ``[H, W]`` each.
      x: training inputs ``[n, 2]``.
      y: integer training labels ``[n]``.
      columns: ``{column title: {method name: field on the grid}}``, e.g.
        ``{"Predictive entropy": {...}, "BALD": {...}}``; every column lists the same
        methods in the same order.

    Returns:
      A Figure with ``methods x columns`` axes and one colour bar per column.

    Example:
      >>> method_sheet(xx, yy, x, y, {"Predictive entropy": entropies, "BALD": balds})
    """
    xx, yy = _common.check_grid(xx, yy)
    x, y = _common.check_points(x, y)
    columns = _common.check_mapping("columns", columns)
    titles = list(columns)
    methods = _common.check_mapping(f"columns[{titles[0]!r}]", columns[titles[0]])
    fields = {}
    for title in titles:
        column = _common.check_mapping(f"columns[{title!r}]", columns[title])
        _common.check_same_keys(f"columns[{title!r}]", column, f"columns[{titles[0]!r}]", methods)
        fields[title] = {
            m: _common.grid_field(f"columns[{title!r}][{m!r}]", v, xx.shape)
            for m, v in column.items()
        }

    num_classes = int(y.max()) + 1
    fig, axes = plt.subplots(
        len(methods),
        len(titles),
        figsize=(3.6 * len(titles), 3.0 * len(methods) + 0.8),
        layout="constrained",
        squeeze=False,
        sharex=True,
        sharey=True,
    )
    for j, title in enumerate(titles):
        stacked = np.stack(list(fields[title].values()))
        column_levels = _common.levels(stacked.min(), stacked.max())
        for i, method in enumerate(methods):
            ax = axes[i, j]
            contours = ax.contourf(
                xx, yy, fields[title][method], levels=column_levels, cmap=_common.UNCERTAINTY_CMAP
            )
            _common.scatter_points(ax, x, y, num_classes)
            ax.set_xlim(xx.min(), xx.max())
            ax.set_ylim(yy.min(), yy.max())
            ax.set_title(f"{method}: {title}", fontsize="medium")
            if i == len(methods) - 1:
                ax.set_xlabel("$x_1$")
            if j == 0:
                ax.set_ylabel("$x_2$")
        _common.colorbar(fig, contours, axes[:, j], title, orientation="horizontal")
    return fig
