"""Figures of a model family over seeds: the source post's inverse ECDFs (predictive entropy on
the vertical axis, the fraction of inputs with at least that entropy on the horizontal; solid
OOD, dashed in-domain) for every member, and sweeps of a metric with an interval band.
"""

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bnn_jax.plotting import _common

__all__ = ["interval_sweeps", "inverse_ecdf_family"]


def _inverse_ecdf(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(fraction, score)``: the fraction of inputs whose score is at least ``score``."""
    s = np.sort(np.asarray(scores, float))[::-1]
    return np.arange(1, s.size + 1) / s.size, s


def inverse_ecdf_family(
    entropy_in: Mapping[str, Sequence[object]],
    entropy_out: Mapping[str, Mapping[str, Sequence[object]]],
    *,
    members: Sequence[str],
    num_classes: int | None = None,
    title: str | None = None,
) -> Figure:
    """The post's OOD figure across a family: one panel per OOD set; per method one colour, one
    line per member (line style by member order is not used: members are thin lines of the
    method's colour), solid for the OOD set and dashed for the in-domain inputs. The vertical
    axis is the predictive entropy, the horizontal the fraction of inputs with at least that
    entropy: a good detector keeps the solid lines high and the dashed lines low.

    Args:
      entropy_in: ``{method: [per member: [n_in] entropies]}`` of the in-domain inputs.
      entropy_out: ``{OOD set: {method: [per member: [n_out] entropies]}}``.
      members: member names (the order of the per-member lists).
      num_classes: if given, ``log C`` (the largest entropy) is marked.
      title: figure title.
    """
    entropy_in = _common.check_mapping("entropy_in", entropy_in)
    entropy_out = _common.check_mapping("entropy_out", entropy_out)
    methods = list(entropy_in)
    colors = _common.method_colors(methods)
    fig, axes = plt.subplots(
        1, len(entropy_out), figsize=(4.6 * len(entropy_out), 3.8), squeeze=False, sharey=True
    )
    for ax, (ood_name, by_method) in zip(axes[0], entropy_out.items(), strict=True):
        _common.check_same_keys(f"entropy_out[{ood_name!r}]", by_method, "entropy_in", entropy_in)
        for m in methods:
            for values_in, values_out in zip(entropy_in[m], by_method[m], strict=True):
                ax.plot(*_inverse_ecdf(values_out), color=colors[m], lw=1.3, alpha=0.85)
                ax.plot(*_inverse_ecdf(values_in), color=colors[m], lw=1.0, ls="--", alpha=0.85)
        if num_classes:
            ax.axhline(np.log(num_classes), color="0.5", lw=0.8, ls=":")
        ax.set_xlim(0, 1)
        ax.set_xlabel("fraction of inputs with at least this entropy")
        ax.set_title(f"{ood_name} (solid) vs in-domain (dashed)", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("predictive entropy (nats)")
    handles = [Line2D([], [], color=colors[m], lw=2, label=m) for m in methods]
    handles += [
        Line2D([], [], color="k", lw=1.3, label="OOD"),
        Line2D([], [], color="k", lw=1.0, ls="--", label="in-domain"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), frameon=False,
               bbox_to_anchor=(0.5, -0.02 - 0.05 * (len(handles) // 6)))  # fmt: skip
    fig.suptitle(title or f"Inverse ECDF of the predictive entropy ({', '.join(members)})")
    fig.tight_layout(rect=(0, 0.08 + 0.05 * (len(handles) // 6), 1, 1))
    return fig


def interval_sweeps(
    eps,
    panels: Mapping[str, Mapping[str, Sequence[object]]],
    *,
    xlabel: str = "FGSM step size ε (L∞)",
    title: str | None = None,
) -> Figure:
    """Per panel (a metric) one line per method: the mean over seeds and a band from the
    smallest to the largest seed, against ``eps`` (which should include 0, the clean inputs).
    The y range of each panel is the range of its lines (the curves stay apart); the legend
    sits below the panels, never over the data.

    Args:
      eps: ``[E]`` step sizes.
      panels: ``{panel title: {method: [seeds, E] values}}``.
      xlabel, title: labels.
    """
    eps = _common.as_array("eps", eps, ndim=1)
    panels = _common.check_mapping("panels", panels)
    methods = list(next(iter(panels.values())))
    colors = _common.method_colors(methods)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.6), squeeze=False)
    for ax, (name, by_method) in zip(axes[0], panels.items(), strict=True):
        for m in methods:
            v = np.atleast_2d(np.asarray(by_method[m], float))
            ax.fill_between(eps, v.min(0), v.max(0), color=colors[m], alpha=0.18, lw=0)
            ax.plot(eps, v.mean(0), color=colors[m], marker="o", ms=3, lw=1.5, label=m)
        ax.set_xlabel(xlabel)
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(methods), 4), frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06 * (1 + (len(methods) - 1) // 4), 1, 1))
    return fig
